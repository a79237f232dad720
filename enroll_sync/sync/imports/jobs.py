"""Import jobs: starting a preview or an import, what people do to them (Cancel,
Resume), and how far one is.

An import job is a ``SyncJob`` of kind "import preview" or "import" (so it has the
job machinery's status, heartbeat, Sync Logs entry and page) with an ``ImportRun``
beside it (connection, cursor, change markers) and one ``ImportItem`` per SIS student.
One import at a time per connection. What a worker does with it is in ``runner``.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from peewee import fn

from ...adapters import AdapterError, can_import
from ...db import write_tx
from ...models import (ACTIVE_JOB_STATUSES, CANCELLABLE_JOB_STATUSES, IMPORT_CONFLICT, IMPORT_CREATED,
                       IMPORT_STATUSES, IMPORT_UNCHANGED, IMPORT_UPDATED, JOB_CANCELLED, JOB_DONE, JOB_FAILED,
                       JOB_IMPORT, JOB_IMPORT_PREVIEW, JOB_QUEUED, SKIPPED, SYNC_FAILED, ImportItem, ImportRun,
                       School, SyncConnection, SyncJob, utcnow)
from ..links import link_scope
from .fields import import_state

#: statuses of an item that need a look (the CSV of problems)
PROBLEM_STATUSES = (IMPORT_CONFLICT, SYNC_FAILED)


class ImportRefused(Exception):
    """Why an import cannot start now (shown to the admin); ``job`` is the one running, if any."""

    def __init__(self, message: str, job: SyncJob | None = None):
        super().__init__(message)
        self.job = job


def school_numbers(conn: SyncConnection) -> list[str]:
    """The numbers of the schools an import of ``conn`` reads: those assigned to it (or to a
    connection sharing its links)."""
    scope = link_scope(conn)
    sharers = [c for (c,) in SyncConnection.select(SyncConnection.id).where(
        (SyncConnection.id == scope) | (SyncConnection.shares_links_with == scope)).tuples()]
    return [n for (n,) in School.select(School.school_number).where(
        School.sync_connection.in_(sharers)).tuples()]


def readiness(conn: SyncConnection, app) -> str | None:
    """None when ``conn`` can be imported from now, else what to do first."""
    from ..connections import adapter_class
    from ..mappings import IMPORT_STUDENT, check_connection
    try:
        if not can_import(adapter_class(conn.adapter, app)):
            return f"{conn.name}'s SIS type cannot be imported from."
    except AdapterError as exc:
        return str(exc)
    if not school_numbers(conn):
        return (f"No school is assigned to {conn.name}: an import reads the students of the connection's schools. "
                f"Assign schools under Schools/Programs first.")
    check = check_connection(conn, app, kind=IMPORT_STUDENT)
    return check.problem


def active_import(conn: SyncConnection) -> SyncJob | None:
    return (SyncJob.select().join(ImportRun, on=(ImportRun.job == SyncJob.id))
            .where((ImportRun.connection == conn.id) & SyncJob.status.in_(ACTIVE_JOB_STATUSES))
            .order_by(SyncJob.id.desc()).first())


def start_import(app, conn: SyncConnection, user_id: int | None, *, preview: bool,
                 from_preview: SyncJob | None = None, scheduled: bool = False, full: bool = False) -> SyncJob:
    """Create a Queued import (or preview) job of ``conn``; the caller enqueues it
    (``queue.enqueue_import``). Reads only what changed since the last complete import
    when the SIS can tell, unless ``full``. Raises ImportRefused."""
    problem = readiness(conn, app)
    if problem:
        raise ImportRefused(problem)
    with write_tx():
        running = active_import(conn)
        if running is not None:
            raise ImportRefused(f"An import of {conn.name} is already running (job #{running.id}).", running)
        since = None if full else import_state(conn).marker
        job = SyncJob.create(organization=conn.organization_id, created_by=user_id,
                             kind=JOB_IMPORT_PREVIEW if preview else JOB_IMPORT, status=JOB_QUEUED, total=0)
        ImportRun.create(job=job, connection=conn, preview=preview, from_preview=from_preview,
                         scheduled=scheduled, since=since)
    return job


def cancel_import(job: SyncJob, user_name: str) -> bool:
    """Stop an import: the page being read finishes, nothing after it is read. True when
    this call stopped it."""
    now = utcnow()
    done = ImportItem.select().where(ImportItem.job == job.id).count()
    return bool(SyncJob.update(status=JOB_CANCELLED, finished_at=now, heartbeat_at=now,
                               message=f"Cancelled by {user_name} after {done:,} student(s).").where(
        (SyncJob.id == job.id) & SyncJob.status.in_(CANCELLABLE_JOB_STATUSES)).execute())


def resume_import(job: SyncJob) -> bool:
    """Queue a Failed import again: it continues after the last page it recorded. True
    when it was Failed."""
    with write_tx():
        ok = SyncJob.update(status=JOB_QUEUED, finished_at=None, heartbeat_at=utcnow(), message=None).where(
            (SyncJob.id == job.id) & (SyncJob.status == JOB_FAILED)).execute()
        if ok:
            ImportRun.update(failures=0).where(ImportRun.job == job.id).execute()
    return bool(ok)


# --------------------------------------------------------------------------- progress

@dataclass
class ImportProgress:
    job: SyncJob
    run: ImportRun
    counts: dict[str, int]
    now: dt.datetime

    def n(self, status: str) -> int:
        return self.counts.get(status, 0)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        return max(self.job.total or 0, self.done)

    @property
    def finished(self) -> bool:
        return self.job.status not in CANCELLABLE_JOB_STATUSES

    @property
    def percent(self) -> int:
        if self.job.status == JOB_DONE:
            return 100
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def elapsed(self) -> float | None:
        if not self.job.started_at:
            return None
        end = self.job.finished_at if self.finished and self.job.finished_at else self.now
        return max((end - self.job.started_at).total_seconds(), 0.001)

    @property
    def rate(self) -> float | None:
        return self.done / self.elapsed if self.elapsed and self.done else None

    @property
    def seconds_left(self) -> float | None:
        if self.finished or not self.rate or not self.job.total:
            return None
        return max(self.job.total - self.done, 0) / self.rate

    @property
    def problems(self) -> int:
        return sum(self.n(s) for s in PROBLEM_STATUSES)


def import_counts(job_id: int) -> dict[str, int]:
    return dict(ImportItem.select(ImportItem.status, fn.COUNT(ImportItem.id)).where(ImportItem.job == job_id)
                .group_by(ImportItem.status).tuples())


def import_progress(job: SyncJob) -> ImportProgress:
    run = ImportRun.get(ImportRun.job == job.id)
    return ImportProgress(job, run, import_counts(job.id), utcnow())


def summary(counts: dict[str, int], preview: bool) -> str:
    words = ({IMPORT_CREATED: "would be created", IMPORT_UPDATED: "would be updated",
              IMPORT_UNCHANGED: "unchanged", IMPORT_CONFLICT: "in conflict", SKIPPED: "skipped",
              SYNC_FAILED: "cannot be imported"} if preview else
             {IMPORT_CREATED: "created", IMPORT_UPDATED: "updated", IMPORT_UNCHANGED: "unchanged",
              IMPORT_CONFLICT: "in conflict", SKIPPED: "skipped", SYNC_FAILED: "failed"})
    parts = [f"{counts.get(s, 0):,} {words[s]}" for s in IMPORT_STATUSES if counts.get(s)]
    text = ", ".join(parts) or "no students"
    return ("Preview: " if preview else "") + text + "."


__all__ = ["ImportRefused", "readiness", "school_numbers", "active_import", "start_import", "cancel_import",
           "resume_import", "ImportProgress", "import_counts", "import_progress", "summary", "PROBLEM_STATUSES"]
