"""Dry run of Bulk Actions > Sync to SIS: what "Proceed with Sync" would do, with
nothing written and nothing sent.

For the registrations the plan would sync (``plan_sync``: Approved, and the school's
connection has a usable mapping) it runs the connection's compiled mapping exactly
as ``JobRunner.process`` does — the same ``check_connections`` / ``ConnectionCheck``
and the same ``export_rule.map_for_export`` (insert or update by the known SIS id) —
and counts:

- **would create**: the student has no SIS link on the connection the record goes to
  (an adapter that matches existing students before inserting may turn some of these
  into updates),
- **would update**: the student is linked on that connection,
- **would fail**: the mapping has an error (the record would be Failed, never sent),
  with the first ``SHOWN_FAILURES`` listed,
- **warnings**: records that would be sent with mapping warnings,

plus the plan's skipped counts and reasons. No SyncJob, no SyncItem, no Sync Status
change, no adapter call: it only reads.

The selection is streamed ``CHUNK`` registrations at a time (keyset over the
registration id, rows loaded like a job's batch), so memory stays flat. A selection
bigger than ``DRY_RUN_MAX`` (or one whose mapping is slow enough to exceed
``DRY_RUN_SECONDS``) is checked only up to that bound; the result says how many were
checked of how many (``checked`` / ``eligible``) and never implies the rest were.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..config import dry_run_limits
from ..models import APPROVED, Organization, Registration, School
from .export_rule import ExportContexts, map_for_export
from .links import link_scope, sis_ids_for
from .mappings import ConnectionCheck, check_connections
from .plan import SyncPlan, plan_sync
from .runner import load_registrations, mapping_crash_reason, mapping_failure_reason
from .selection import Selection

log = logging.getLogger("enroll_sync.sync")

#: registrations loaded and mapped per round trip
CHUNK = 1000
#: the most failures listed (the counts cover all of them)
SHOWN_FAILURES = 20
#: the most kinds of warnings listed
SHOWN_WARNING_KINDS = 5
#: default bound on the registrations checked by one dry run (``DRY_RUN_MAX``)
DEFAULT_MAX = 20000


@dataclass
class DryRunFailure:
    registration_id: int
    form_id: int
    reason: str
    student_name: str = ""


@dataclass
class WarningKind:
    field: str | None
    code: str
    example: str
    count: int = 0


@dataclass
class DryRun:
    """What "Proceed with Sync" would do with a selection (nothing written)."""

    plan: SyncPlan
    limit: int = DEFAULT_MAX
    checked: int = 0
    would_create: int = 0
    would_update: int = 0
    would_fail: int = 0
    with_warnings: int = 0     # records that would be sent with warnings
    warnings: int = 0          # the warnings themselves
    failures: list[DryRunFailure] = field(default_factory=list)
    warning_kinds: list[WarningKind] = field(default_factory=list)
    stopped_by_time: bool = False
    seconds: float = 0.0

    @property
    def eligible(self) -> int:
        """How many the plan would sync (the dry run's population)."""
        return self.plan.will_sync

    @property
    def unchecked(self) -> int:
        return max(self.eligible - self.checked, 0)

    @property
    def complete(self) -> bool:
        return self.checked >= self.eligible

    @property
    def would_send(self) -> int:
        return self.would_create + self.would_update


def dry_run(app, org_id: int, selection: Selection, *, limit: int | None = None,
            seconds: float | None = None, chunk: int = CHUNK) -> DryRun:
    """Map the registrations of ``selection`` that would sync, count what the job would
    do with them, write nothing. Needs an app context and a database connection."""
    started = time.monotonic()
    max_n, budget = dry_run_limits(app)
    limit = max_n if limit is None else max(0, int(limit))
    budget = budget if seconds is None else seconds
    checks = check_connections(org_id, app)
    plan = plan_sync(app, org_id, selection, checks)
    result = DryRun(plan=plan, limit=limit)
    ok: dict[int, ConnectionCheck] = {cid: c for cid, c in checks.items() if c.problem is None}
    if (not plan.will_sync or not ok or selection.empty
            or not Organization.get_by_id(org_id).uses_registration_module):
        result.seconds = time.monotonic() - started
        return result

    contexts = ExportContexts.for_day()
    kinds: dict[tuple, WarningKind] = {}
    base = selection.query(org_id, Registration.id).where(
        (Registration.status == APPROVED) & School.sync_connection.in_(list(ok)))
    last = 0
    while result.checked < limit:
        if time.monotonic() - started > budget:
            result.stopped_by_time = True
            break
        ids = [rid for (rid,) in base.where(Registration.id > last).order_by(Registration.id)
               .limit(min(chunk, limit - result.checked)).tuples()]
        if not ids:
            break
        last = ids[-1]
        regs = load_registrations(ids)
        linked = {cid: sis_ids_for([r.student_id for r in regs.values() if r.school.sync_connection_id == cid],
                                   link_scope(c.connection)) for cid, c in ok.items()}
        for rid in ids:
            reg = regs.get(rid)
            if reg is None or reg.status != APPROVED:
                continue  # changed since the query a moment ago
            check = ok.get(reg.school.sync_connection_id)
            if check is None:
                continue
            result.checked += 1
            _map_one(result, check, reg, contexts, kinds, linked[check.connection.id].get(reg.student_id))

    if result.failures:
        names = dict(Registration.select(Registration.id, Registration.student_name).where(
            Registration.id.in_([f.registration_id for f in result.failures])).tuples())
        for f in result.failures:
            f.student_name = names.get(f.registration_id) or ""
    result.warning_kinds = sorted(kinds.values(), key=lambda k: -k.count)[:SHOWN_WARNING_KINDS]
    result.seconds = time.monotonic() - started
    return result


def _map_one(result: DryRun, check: ConnectionCheck, reg, contexts: ExportContexts, kinds,
             sis_id: str | None) -> None:
    """One record, mapped by the job's own rule (``export_rule.map_for_export``) for the
    student's link on the connection it goes to."""
    try:
        mapped = map_for_export(check.compiled, reg, contexts, sis_id)
    except Exception as exc:  # the job fails such a record; so does its dry run
        log.exception("dry run: mapping registration %s failed", reg.id)
        _fail(result, reg, mapping_crash_reason(exc))
        return
    if not mapped.ok:
        _fail(result, reg, mapping_failure_reason(mapped))
        return
    if sis_id:
        result.would_update += 1
    else:
        result.would_create += 1
    if mapped.problems:  # warnings only: the record would be sent
        result.with_warnings += 1
        result.warnings += len(mapped.problems)
        for p in mapped.problems:
            kind = kinds.get((p.field, p.code))
            if kind is None:
                kind = kinds[(p.field, p.code)] = WarningKind(p.field, p.code, p.message)
            kind.count += 1


def _fail(result: DryRun, reg, reason: str) -> None:
    result.would_fail += 1
    if len(result.failures) < SHOWN_FAILURES:
        result.failures.append(DryRunFailure(reg.id, reg.form_id, reason))
