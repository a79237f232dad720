"""The plan shown before "Proceed with Sync": how many of a selection will sync,
through which connection, and why the others will be skipped."""
from __future__ import annotations

from dataclasses import dataclass, field

from peewee import fn

from ..models import APPROVED, Organization, Registration, School, SyncConnection
from .mappings import ConnectionCheck, check_connections
from .selection import Selection

NOT_APPROVED = "Not Approved: only Approved registrations can be synced."
NO_CONNECTION = "The school has no sync connection."
NO_MODULE = "Exporting is only available to organizations that use the Registration module."


@dataclass
class SyncPlan:
    """What "Proceed with Sync" would do with a selection."""

    selected: int = 0
    will_sync: int = 0
    by_connection: list[tuple[SyncConnection, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    ok_connection_ids: list[int] = field(default_factory=list)

    @property
    def skipped_total(self) -> int:
        return sum(n for _, n in self.skipped)


def plan_sync(app, org_id: int, selection: Selection, checks: dict[int, ConnectionCheck] | None = None) -> SyncPlan:
    """Count, in the database, how many selected registrations will sync and why the
    others will be skipped. Cheap for 100,000 (one grouped query)."""
    checks = check_connections(org_id, app) if checks is None else checks
    plan = SyncPlan(ok_connection_ids=[cid for cid, c in checks.items() if c.problem is None])
    org = Organization.get_by_id(org_id)
    rows = (selection.query(org_id, Registration.status, School.sync_connection, fn.COUNT(Registration.id))
            .group_by(Registration.status, School.sync_connection).tuples())
    skipped: dict[str, int] = {}
    syncing: dict[int, int] = {}
    for status, conn_id, n in rows:
        plan.selected += n
        if not org.uses_registration_module:
            reason = NO_MODULE
        elif status != APPROVED:
            reason = NOT_APPROVED
        elif conn_id is None:
            reason = NO_CONNECTION
        elif conn_id not in checks:
            reason = NO_CONNECTION
        elif checks[conn_id].problem:
            reason = checks[conn_id].problem
        else:
            syncing[conn_id] = syncing.get(conn_id, 0) + n
            continue
        skipped[reason] = skipped.get(reason, 0) + n
    plan.will_sync = sum(syncing.values())
    plan.by_connection = sorted(((checks[c].connection, n) for c, n in syncing.items()), key=lambda t: t[0].name)
    plan.skipped = sorted(skipped.items(), key=lambda t: -t[1])
    return plan
