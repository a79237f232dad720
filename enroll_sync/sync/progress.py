"""How far a job is: counts by status, rate and time left, its failures, a
registration's sync history, the running jobs of a district, and completing a job
once every record is final."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Iterable, Iterator

from peewee import JOIN, fn

from ..models import (ACTIVE_JOB_STATUSES, CANCELLABLE_JOB_STATUSES, FINAL_STATUSES, IMPORT_JOB_KINDS, JOB_DONE,
                      JOB_HELD, SKIPPED,
                      SYNC_FAILED, SYNC_IN_PROGRESS, SYNC_NOT_SYNCED, SYNC_PARTIAL, SYNC_PENDING, SYNC_SUCCEEDED,
                      Registration, School, Student, SyncItem, SyncJob, User, utcnow)


def counts_for(job_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """job id -> {item status: count} (one grouped query)."""
    ids = list(job_ids)
    out: dict[int, dict[str, int]] = {i: {} for i in ids}
    if not ids:
        return out
    for job_id, status, n in (SyncItem.select(SyncItem.job, SyncItem.status, fn.COUNT(SyncItem.id))
                              .where(SyncItem.job.in_(ids)).group_by(SyncItem.job, SyncItem.status).tuples()):
        out[job_id][status] = n
    return out


@dataclass
class Progress:
    job: SyncJob
    counts: dict[str, int]
    now: dt.datetime

    def n(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def total(self) -> int:
        return self.job.total or sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(self.n(s) for s in FINAL_STATUSES)

    @property
    def succeeded(self) -> int:
        return self.n(SYNC_SUCCEEDED)

    @property
    def failed(self) -> int:
        return self.n(SYNC_FAILED)

    @property
    def partial(self) -> int:
        return self.n(SYNC_PARTIAL)

    @property
    def skipped(self) -> int:
        return self.n(SKIPPED)

    @property
    def held(self) -> bool:
        """Waiting for a second person's approval: not running, not finished either."""
        return self.job.status == JOB_HELD

    @property
    def finished(self) -> bool:
        return self.job.status not in CANCELLABLE_JOB_STATUSES

    @property
    def percent(self) -> int:
        if self.job.status == JOB_DONE or not self.total:
            return 100 if self.finished else 0
        return int(100 * self.done / self.total)  # a Cancelled job says how far it got

    @property
    def elapsed(self) -> float | None:
        if not self.job.started_at:
            return None
        end = self.job.finished_at if self.finished and self.job.finished_at else self.now
        return max((end - self.job.started_at).total_seconds(), 0.001)

    @property
    def rate(self) -> float | None:
        """Records per second since the job started."""
        if not self.elapsed or not self.done:
            return None
        return self.done / self.elapsed

    @property
    def seconds_left(self) -> float | None:
        if self.finished or not self.rate:
            return None
        return (self.total - self.done) / self.rate


def job_progress(job: SyncJob) -> Progress:
    return Progress(job, counts_for([job.id])[job.id], utcnow())


@dataclass(frozen=True)
class RatePoint:
    """Records finished per second in one slice of a job's run, ``start``..``end``
    seconds after it started."""
    start: float
    end: float
    records: int

    @property
    def rate(self) -> float:
        return self.records / max(self.end - self.start, 0.001)


def rate_series(progress: Progress, max_points: int = 40) -> list[RatePoint]:
    """The job's records/s over its run (so far): the run cut into at most
    ``max_points`` equal slices of at least a second, each with the records that
    finished in it. One grouped query, whatever the size of the job."""
    from ..db import database, is_sqlite  # noqa: PLC0415
    job = progress.job
    if not job.started_at:
        return []
    start = job.started_at
    elapsed = (progress.elapsed or 0.0)
    if elapsed <= 0:
        return []
    width = max(1.0, elapsed / max_points)
    slices = max(1, round(elapsed / width))  # the last slice ends at ``elapsed``, never a sliver
    p = database.param
    if is_sqlite():
        bucket = f"CAST(((julianday(finished_at) - julianday({p})) * 86400.0) / {p} AS INTEGER)"
        args = (start.strftime("%Y-%m-%d %H:%M:%S.%f"), width)
    else:
        bucket = f"FLOOR(EXTRACT(EPOCH FROM (finished_at - CAST({p} AS TIMESTAMP))) / {p})"
        args = (start, width)
    sql = (f"SELECT {bucket} AS b, COUNT(*) FROM {SyncItem._meta.table_name} "
           f"WHERE job_id = {p} AND finished_at IS NOT NULL GROUP BY b")
    per_slice: dict[int, int] = {}
    for b, n in database.execute_sql(sql, args + (job.id,)).fetchall():
        if b is None:
            continue
        i = min(max(int(b), 0), slices - 1)  # a record finished a hair before start or after end
        per_slice[i] = per_slice.get(i, 0) + n
    return [RatePoint(i * width, elapsed if i == slices - 1 else (i + 1) * width, per_slice.get(i, 0))
            for i in range(slices)]


def summary(counts: dict[str, int]) -> str:
    parts = [f"{counts.get(s, 0)} {s.lower() if s != SYNC_PARTIAL else 'partial'}" for s in
             (SYNC_SUCCEEDED, SYNC_PARTIAL, SYNC_FAILED, SKIPPED) if counts.get(s)]
    return ", ".join(parts) or "nothing to do"


def failed_items(job: SyncJob, statuses=(SYNC_FAILED, SYNC_PARTIAL)) -> Iterator[SyncItem]:
    """The job's failures, with registration, student and school (streamed)."""
    q = (SyncItem.select(SyncItem, Registration, Student, School)
         .join(Registration, on=(SyncItem.registration == Registration.id))
         .join(Student, on=(Registration.student == Student.id))
         .switch(Registration).join(School, on=(Registration.school == School.id))
         .where((SyncItem.job == job.id) & SyncItem.status.in_(list(statuses)))
         .order_by(SyncItem.id))
    return q.iterator()


def registration_history(reg: Registration) -> list[SyncItem]:
    """Every attempt to sync ``reg``, newest first, with the job and who started it."""
    Creator = User.alias()
    return list(SyncItem.select(SyncItem, SyncJob, Creator)
                .join(SyncJob, on=(SyncItem.job == SyncJob.id))
                .join(Creator, JOIN.LEFT_OUTER, on=(SyncJob.created_by == Creator.id))
                .where(SyncItem.registration == reg.id)
                .order_by(SyncItem.id.desc()))


def running_jobs(org_id: int, limit: int = 3) -> list[Progress]:
    jobs = list(SyncJob.select().where((SyncJob.organization == org_id) & SyncJob.status.in_(ACTIVE_JOB_STATUSES)
                                       & SyncJob.kind.not_in(IMPORT_JOB_KINDS))  # imports: imports.jobs
                .order_by(SyncJob.id.desc()).limit(limit))
    counts = counts_for([j.id for j in jobs])
    now = utcnow()
    return [Progress(j, counts[j.id], now) for j in jobs]


def settled_status(reg_id: int, exclude_job: int) -> str:
    """The Sync Status a registration had before a job that skipped it."""
    last = (SyncItem.select(SyncItem.status)
            .where((SyncItem.registration == reg_id) & (SyncItem.job != exclude_job)
                   & SyncItem.status.in_([SYNC_SUCCEEDED, SYNC_PARTIAL, SYNC_FAILED]))
            .order_by(SyncItem.id.desc()).first())
    return last.status if last else SYNC_NOT_SYNCED


def finish_if_done(job_id: int) -> bool:
    """Mark the job Completed when every item is final. True when it is (now) complete."""
    counts = counts_for([job_id])[job_id]
    if counts.get(SYNC_PENDING) or counts.get(SYNC_IN_PROGRESS):
        return False
    now = utcnow()
    SyncJob.update(status=JOB_DONE, finished_at=now, heartbeat_at=now, message=summary(counts)).where(
        (SyncJob.id == job_id) & SyncJob.status.in_(ACTIVE_JOB_STATUSES)).execute()
    return True
