"""What the dashboard and the Registrations list read: a district's registrations by
school and Sync Status, its latest jobs, what needs attention (failed records by
reason, syncs held for approval, connections whose last test failed) and the reason
behind each Failed or Partial Sync status. Read-only aggregates, one query each."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from peewee import fn

from ..models import (IMPORT_JOB_KINDS, JOB_HELD, SYNC_FAILED, SYNC_PARTIAL, SYNC_STATUSES, Registration, School,
                      SyncConnection,
                      SyncItem, SyncJob, User, utcnow)
from .progress import Progress, counts_for


@dataclass
class SchoolCounts:
    school: School
    counts: dict[str, int] = field(default_factory=dict)

    def n(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def status_by_school(org_id: int) -> list[SchoolCounts]:
    """Every school of the district (by name) with its registrations per Sync Status."""
    schools = {s.id: SchoolCounts(s) for s in School.select().where(School.organization == org_id)
               .order_by(School.name)}
    for school_id, status, n in (Registration.select(Registration.school, Registration.sync_status,
                                                     fn.COUNT(Registration.id))
                                 .where(Registration.organization == org_id)
                                 .group_by(Registration.school, Registration.sync_status).tuples()):
        if school_id in schools:
            schools[school_id].counts[status] = n
    return list(schools.values())


def status_totals(rows: Iterable[SchoolCounts]) -> dict[str, int]:
    out = {s: 0 for s in SYNC_STATUSES}
    for row in rows:
        for status, n in row.counts.items():
            out[status] = out.get(status, 0) + n
    return out


def recent_jobs(org_id: int, limit: int = 8) -> list[tuple[Progress, User | None]]:
    """The district's latest jobs, newest first, with their progress and who started them."""
    jobs = list(SyncJob.select().where((SyncJob.organization == org_id) & SyncJob.kind.not_in(IMPORT_JOB_KINDS))
                .order_by(SyncJob.id.desc()).limit(limit))  # imports have their own page and counts
    counts = counts_for([j.id for j in jobs])
    users = {u.id: u for u in User.select().where(User.id.in_([j.created_by_id for j in jobs if j.created_by_id]))}
    now = utcnow()
    return [(Progress(j, counts[j.id], now), users.get(j.created_by_id)) for j in jobs]


def failure_reasons(org_id: int, limit: int = 6) -> tuple[list[tuple[str, int]], int]:
    """The reasons of the registrations whose Sync Status is Failed now (their latest
    attempt's reason), most frequent first: (top reasons with counts, registrations Failed)."""
    latest = (SyncItem.select(fn.MAX(SyncItem.id))
              .join(Registration, on=(SyncItem.registration == Registration.id))
              .where((Registration.organization == org_id) & (Registration.sync_status == SYNC_FAILED)
                     & (SyncItem.status == SYNC_FAILED))
              .group_by(SyncItem.registration))
    rows = list(SyncItem.select(SyncItem.reason, fn.COUNT(SyncItem.id).alias("n"))
                .where(SyncItem.id.in_(latest)).group_by(SyncItem.reason)
                .order_by(fn.COUNT(SyncItem.id).desc(), SyncItem.reason).tuples())
    failed = (Registration.select().where((Registration.organization == org_id)
                                          & (Registration.sync_status == SYNC_FAILED)).count())
    return [(reason or "No reason recorded", n) for reason, n in rows[:limit]], failed


def held_jobs(org_id: int) -> list[SyncJob]:
    return list(SyncJob.select().where((SyncJob.organization == org_id) & (SyncJob.status == JOB_HELD))
                .order_by(SyncJob.id))


def failing_connections(org_id: int) -> list[SyncConnection]:
    """Connections whose last Test Connection (or check) failed."""
    return list(SyncConnection.select().where((SyncConnection.organization == org_id)
                                              & (SyncConnection.last_check_ok == False))  # noqa: E712
                .order_by(SyncConnection.name))


def status_reasons(registration_ids: Iterable[int]) -> dict[int, str]:
    """registration id -> the reason of its latest Failed or Partial Sync attempt."""
    ids = list(registration_ids)
    if not ids:
        return {}
    latest = (SyncItem.select(fn.MAX(SyncItem.id))
              .where(SyncItem.registration.in_(ids) & SyncItem.status.in_([SYNC_FAILED, SYNC_PARTIAL]))
              .group_by(SyncItem.registration))
    return {reg_id: reason or "" for reg_id, reason in
            SyncItem.select(SyncItem.registration, SyncItem.reason).where(SyncItem.id.in_(latest)).tuples()}
