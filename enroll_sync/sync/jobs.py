"""Sync jobs: the plan shown before "Proceed with Sync", creating a job in bulk, the
batch runner, progress, Retry failed and crash recovery.

The life of a job
-----------------
``create_job`` inserts one SyncItem per registration with a single
``INSERT ... SELECT`` (100,000 rows without a Python loop), marks those
registrations Pending and returns; the web layer then enqueues it (``queue``).
When the district holds a large update (``Organization.hold_updates_over``) and the
job would update more students the SIS already has than that, it is created Held
instead: no worker runs it until a second person approves it (``approve_job``).

``run_job`` is what a worker runs. Several tasks may run one job at once (in
threads and in separate ``enroll-sync worker`` processes); each loops:

1. **claim** a batch of Pending items of one connection (``FOR UPDATE SKIP LOCKED``
   on PostgreSQL, a ``BEGIN IMMEDIATE`` transaction on SQLite) and take each
   registration's in-flight marker ``Registration.sync_lock`` (= the SyncItem id)
   unless another live job holds it. Items and registrations become In Progress.
2. **re-check and map**: a registration that is no longer Approved is Skipped; the
   connection's mapping is compiled once per connection and task; records whose
   mapping has an error are Failed with the message and never sent.
3. **export** the rest through ``open_adapter(conn).export()`` in the adapter's batch
   size; exactly one outcome per record.
4. **record** every outcome in one transaction: SyncItem (status, payload sent, SIS
   answer, errors, SIS id; secrets scrubbed), Registration (Sync Status, last synced,
   SIS id; marker released), Student.sis_id (so the next sync is an update).

While a task runs, a heartbeat thread refreshes ``SyncJob.heartbeat_at`` and the
``sync_lock_at`` of the records it holds. A task killed at any point (SIGKILL
included) stops heartbeating: once its markers are older than ``JOB_STALE_SECONDS``
``recover`` (run by every worker) puts its In Progress items back to Pending and
re-enqueues the job if no task has it. Those records are exported again; the
adapter's match-before-insert turns a repeated insert into an update, so the SIS
never gets a duplicate. Every item ends Succeeded, Partial Sync, Failed or Skipped.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Iterator

from peewee import JOIN, Cast, Value, fn

from ..adapters import AdapterError, ExportRecord, ExportResult, Outcome
from ..catalog import source_field_keys
from ..db import database, is_sqlite
from ..export_rule import ExportContexts, map_for_export
from ..models import (JOB_CANCELLED, JOB_DONE, JOB_HELD, JOB_QUEUED, JOB_RUNNING, SYNC_FAILED, SYNC_IN_PROGRESS,
                      SYNC_NOT_SYNCED, SYNC_PARTIAL, SYNC_PENDING, SYNC_SUCCEEDED, Mapping,
                      Organization, Registration, School, Student, SyncConnection, SyncItem, SyncJob,
                      User, utcnow)
from .redact import dumps_scrubbed, scrub_text
from .selection import Selection

log = logging.getLogger("enroll_sync.sync")

APPROVED = "Approved"
#: an item the job did not send because the registration was not eligible any more
SKIPPED = "Skipped"
FINAL_STATUSES = (SYNC_SUCCEEDED, SYNC_PARTIAL, SYNC_FAILED, SKIPPED)
ITEM_STATUSES = (SYNC_PENDING, SYNC_IN_PROGRESS) + FINAL_STATUSES
ACTIVE_JOB_STATUSES = (JOB_QUEUED, JOB_RUNNING)
#: jobs Cancel sync may stop: the active ones and those held for approval (which no worker runs)
CANCELLABLE_JOB_STATUSES = ACTIVE_JOB_STATUSES + (JOB_HELD,)
MAPPING_KIND = "export_student"

_OUTCOME_STATUS = {Outcome.SUCCEEDED: SYNC_SUCCEEDED, Outcome.PARTIAL: SYNC_PARTIAL,
                   Outcome.FAILED: SYNC_FAILED}


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class JobSettings:
    """How jobs run. Each is read from the app config, else ``ENROLL_SYNC_<NAME>``."""

    heartbeat: float = 5.0      # JOB_HEARTBEAT_SECONDS: how often a running task says it is alive
    stale: float = 60.0         # JOB_STALE_SECONDS: silence after which a task counts as dead
    tasks: int = 4              # JOB_TASKS: tasks a job is split into (parallel workers share it)
    recovery: float = 15.0      # JOB_RECOVERY_SECONDS: how often a worker looks for dead tasks
    poll: float = 0.5           # JOB_POLL_SECONDS: wait while another job holds the records
    batches_per_export: int = 5  # JOB_BATCHES_PER_EXPORT: adapter batches handed over per export()


_SETTING_NAMES = {"heartbeat": ("JOB_HEARTBEAT_SECONDS", float), "stale": ("JOB_STALE_SECONDS", float),
                  "tasks": ("JOB_TASKS", int), "recovery": ("JOB_RECOVERY_SECONDS", float),
                  "poll": ("JOB_POLL_SECONDS", float),
                  "batches_per_export": ("JOB_BATCHES_PER_EXPORT", int)}


def job_settings(app) -> JobSettings:
    values = {}
    for attr, (name, cast) in _SETTING_NAMES.items():
        raw = app.config.get(name)
        if raw is None:
            raw = os.environ.get("ENROLL_SYNC_" + name)
        if raw not in (None, ""):
            try:
                values[attr] = cast(raw)
            except (TypeError, ValueError):
                log.warning("ignoring %s=%r (not a number)", name, raw)
    s = JobSettings(**values)
    # a heartbeat must come well within the stale window
    if s.heartbeat * 2 > s.stale:
        s = JobSettings(**{**s.__dict__, "heartbeat": s.stale / 4})
    return s


def write_tx():
    """A write transaction that takes the write lock up front on SQLite (no
    SQLITE_BUSY on upgrade between processes); a normal transaction elsewhere."""
    return database.atomic("IMMEDIATE") if is_sqlite() else database.atomic()


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def _executemany(sql: str, rows: list[tuple]) -> None:
    """Run one statement for many rows (``?`` placeholders) on the open connection."""
    if not rows:
        return
    if is_sqlite():
        database.cursor().executemany(sql, rows)
    else:
        from psycopg2.extras import execute_batch
        execute_batch(database.cursor(), sql.replace("?", "%s"), rows, page_size=250)


def _execute(sql: str, params: tuple) -> None:
    """Run one statement (``?`` placeholders) on the open connection."""
    database.execute_sql(sql if is_sqlite() else sql.replace("?", "%s"), params)


def retrying(fn: Callable[[], Any], attempts: int = 5) -> Any:
    """Run a transaction, again if the database chose it as a deadlock victim or
    could not serialize it (PostgreSQL), or stayed locked too long (SQLite)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not _retryable(exc):
                raise
            log.warning("retrying a sync transaction after: %s", str(exc).splitlines()[0] if str(exc) else exc)
            time.sleep(0.05 * (2 ** attempt))


def _retryable(exc: BaseException) -> bool:
    import sqlite3

    from peewee import OperationalError
    if isinstance(exc, (OperationalError, sqlite3.OperationalError)):
        return True
    try:  # raw cursors (executemany) raise the driver's own errors
        import psycopg2
        return isinstance(exc, (psycopg2.errors.TransactionRollbackError, psycopg2.OperationalError))
    except ImportError:
        return False


def _t(model) -> str:
    return '"%s"' % model._meta.table_name


# --------------------------------------------------------------------------- the mapping of a connection

@dataclass
class ConnectionCheck:
    """Whether a connection's registrations can be synced, and its compiled mapping."""

    connection: SyncConnection
    problem: str | None = None
    compiled: Any = None
    version: tuple | None = None


def _mapping_stamp(conn_id: int):
    row = (Mapping.select(Mapping.id, Mapping.version, Mapping.updated_at)
           .where((Mapping.connection == conn_id) & (Mapping.kind == MAPPING_KIND)).first())
    return None if row is None else (row.id, row.version, row.updated_at)


def check_connection(conn: SyncConnection, app, source_fields: Iterable[str] | None = None) -> ConnectionCheck:
    """Compile ``conn``'s Export Student Mapping against its target fields.

    ``problem`` says why nothing can be sent through it: no mapping, required SIS
    fields left unmapped, rows that are wrong, or fields that could not be loaded.
    """
    from ..connections import target_sections
    from ..mapping import ERROR, compile_mapping

    mapping = Mapping.get_or_none((Mapping.connection == conn.id) & (Mapping.kind == MAPPING_KIND))
    stamp = None if mapping is None else (mapping.id, mapping.version, mapping.updated_at)
    mapped = [r for r in (mapping.rows if mapping else []) or []
              if isinstance(r, dict) and r.get("type") not in (None, "", "do_not_map")]
    if not mapped:
        return ConnectionCheck(conn, f"{conn.name} has no Export Student Mapping yet.", version=stamp)
    try:
        sections = target_sections(conn, app=app)
    except (AdapterError, ValueError) as exc:
        return ConnectionCheck(conn, f"The SIS fields of {conn.name} could not be loaded: {exc}", version=stamp)
    except Exception:  # an adapter bug must not break a page or a job
        log.exception("target_fields of connection %s failed", conn.id)
        return ConnectionCheck(conn, f"The SIS fields of {conn.name} could not be loaded.", version=stamp)
    if source_fields is None:
        source_fields = source_field_keys(conn.organization_id)
    compiled = compile_mapping(mapping.rows, sections, steps=app.extensions.get("enroll_sync.steps"),
                               source_fields=source_fields)
    if compiled.unmapped_required:
        labels = ", ".join(t.label or t.key for t in compiled.unmapped_required)
        return ConnectionCheck(conn, f"The mapping of {conn.name} lacks required field(s): {labels}.",
                               compiled, stamp)
    errors = [p for p in compiled.config_problems if p.severity == ERROR]
    if errors:
        shown = "; ".join(p.message for p in errors[:3]) + (" ..." if len(errors) > 3 else "")
        return ConnectionCheck(conn, f"The mapping of {conn.name} has errors: {shown}", compiled, stamp)
    return ConnectionCheck(conn, None, compiled, stamp)


def check_connections(org_id: int, app) -> dict[int, ConnectionCheck]:
    fields = source_field_keys(org_id)
    conns = SyncConnection.select().where(SyncConnection.organization == org_id)
    return {c.id: check_connection(c, app, fields) for c in conns}


# --------------------------------------------------------------------------- the plan ("Sync to SIS")

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


# --------------------------------------------------------------------------- creating jobs

#: a job up to this size marks its registrations Pending when it is created; a bigger
#: one leaves that to its first task (rewriting 100,000 registration rows would make
#: "Proceed with Sync" take seconds), so they show Pending once a worker has it.
PENDING_INLINE_MAX = 20000


def _pending_registrations(job_id: int, lo: int | None = None, hi: int | None = None) -> int:
    items = SyncItem.select(SyncItem.registration).where((SyncItem.job == job_id) & (SyncItem.status == SYNC_PENDING))
    if lo is not None:
        items = items.where((SyncItem.id >= lo) & (SyncItem.id <= hi))
    if lo is not None and not is_sqlite():
        # while tasks already claim: skip rows they hold instead of waiting (and deadlocking)
        Reg = Registration.alias()
        items = (Reg.select(Reg.id).where(Reg.id.in_(items) & (Reg.sync_status != SYNC_IN_PROGRESS))
                 .for_update(of=Reg, skip_locked=True))
    return Registration.update(sync_status=SYNC_PENDING).where(
        Registration.id.in_(items) & (Registration.sync_status != SYNC_IN_PROGRESS)).execute()


def _pending_registrations_in_chunks(job_id: int, chunk: int = 5000) -> None:
    lo, hi = SyncItem.select(fn.MIN(SyncItem.id), fn.MAX(SyncItem.id)).where(SyncItem.job == job_id).scalar(
        as_tuple=True)
    if lo is None:
        return
    for start in range(lo, hi + 1, chunk):
        def mark(start=start):
            with write_tx():
                _pending_registrations(job_id, start, start + chunk - 1)
        retrying(mark)


def create_job(app, org_id: int, user_id: int | None, selection: Selection, *, kind: str = "bulk",
               only_eligible: bool = True, checks: dict[int, ConnectionCheck] | None = None) -> SyncJob | None:
    """Create a job over ``selection`` in one INSERT ... SELECT; None when nothing
    would be in it. With ``only_eligible`` (the web page) registrations that the
    plan skips are left out; the job re-checks Approved itself either way."""
    if selection.empty:
        return None
    ok_ids: list[int] = []
    if only_eligible:
        if not Organization.get_by_id(org_id).uses_registration_module:
            return None
        checks = check_connections(org_id, app) if checks is None else checks
        ok_ids = [cid for cid, c in checks.items() if c.problem is None]
        if not ok_ids:
            return None
    with write_tx():
        job = SyncJob.create(organization=org_id, created_by=user_id, kind=kind, status=JOB_QUEUED)
        q = selection.query(org_id, Value(job.id), Registration.id, School.sync_connection, Value(SYNC_PENDING))
        if only_eligible:
            q = q.where((Registration.status == APPROVED) & School.sync_connection.in_(ok_ids))
        SyncItem.insert_from(q.order_by(Registration.id),
                             [SyncItem.job, SyncItem.registration, SyncItem.connection, SyncItem.status]).execute()
        return _settle_new_job(job)


def _settle_new_job(job: SyncJob) -> SyncJob | None:
    """After a new job's items are inserted (same transaction): its total, Held when it
    updates too many known students, its registrations Pending; None (and no job) when
    it holds nothing."""
    total = SyncItem.select().where(SyncItem.job == job.id).count()
    if not total:
        job.delete_instance()
        return None
    SyncJob.update(total=total).where(SyncJob.id == job.id).execute()
    job.total = total
    _hold_if_too_many_updates(job)
    if total <= PENDING_INLINE_MAX:
        _pending_registrations(job.id)
    return job


def create_retry_job(app, job: SyncJob, user_id: int | None) -> SyncJob | None:
    """"Retry failed": a new job of only the Failed records of ``job``."""
    with write_tx():
        new = SyncJob.create(organization=job.organization_id, created_by=user_id, kind="retry",
                             retry_of=job.id, status=JOB_QUEUED)
        q = (SyncItem.select(Value(new.id), SyncItem.registration, School.sync_connection, Value(SYNC_PENDING))
             .join(Registration, on=(SyncItem.registration == Registration.id))
             .join(School, on=(Registration.school == School.id))
             .where((SyncItem.job == job.id) & (SyncItem.status == SYNC_FAILED)
                    & (Registration.organization == job.organization_id))
             .order_by(SyncItem.registration))
        SyncItem.insert_from(q, [SyncItem.job, SyncItem.registration, SyncItem.connection,
                                 SyncItem.status]).execute()
        return _settle_new_job(new)


# --------------------------------------------------------------------------- holding a large update

def _has_value(column):
    return column.is_null(False) & (column != "")


def count_would_update(job_id: int) -> int:
    """How many of the job's registrations the sync would send as an update: those whose
    student already has an SIS id (``student_sis_id``, the rule ``export_rule.map_for_export``
    uses), counted in one query."""
    return (SyncItem.select(fn.COUNT(SyncItem.id))
            .join(Registration, on=(SyncItem.registration == Registration.id))
            .join(Student, on=(Registration.student == Student.id))
            .where((SyncItem.job == job_id) & (_has_value(Student.sis_id) | _has_value(Registration.sis_id)))
            .scalar()) or 0


def _hold_if_too_many_updates(job: SyncJob) -> None:
    """When the district has a limit, count the job's updates once; over the limit the
    job is Held (no worker runs it) until a second person approves it. Runs inside the
    transaction that created the job."""
    limit = (Organization.select(Organization.hold_updates_over)
             .where(Organization.id == job.organization_id).scalar())
    if limit is None:
        return
    would_update = count_would_update(job.id)
    changes = {"would_update": would_update}
    if would_update > limit:
        changes.update(status=JOB_HELD, hold_limit=limit)
    SyncJob.update(**changes).where(SyncJob.id == job.id).execute()
    for name, value in changes.items():
        setattr(job, name, value)


def approve_job(job: SyncJob, user_id: int) -> bool:
    """Approve and start a Held job: it becomes Queued (the caller enqueues it). Never by
    the person who started it. True when this call approved it; False when the job was
    not Held any more (approved or cancelled meanwhile) or ``user_id`` started it."""
    now = utcnow()
    not_creator = SyncJob.created_by.is_null() | (SyncJob.created_by != user_id)
    # heartbeat_at: recovery re-enqueues it only if no worker takes it within JOB_STALE_SECONDS
    return bool(SyncJob.update(status=JOB_QUEUED, approved_by=user_id, approved_at=now, heartbeat_at=now).where(
        (SyncJob.id == job.id) & (SyncJob.status == JOB_HELD) & not_creator).execute())


# --------------------------------------------------------------------------- cancelling

def cancel_job(job: SyncJob, user_name: str) -> int | None:
    """Cancel Sync: every record the job has not sent yet is Skipped (its registration
    gets back the Sync Status it had), and the job is Cancelled. Batches already on
    their way to the SIS finish with their true outcome. A job Held for approval can be
    cancelled too (nothing of it was sent). Returns how many records were skipped, or
    None when the job was no longer running or held."""
    reason = f"Not sent: the sync was cancelled by {user_name}."
    now = utcnow()
    I, R = _t(SyncItem), _t(Registration)
    with write_tx():
        stopped = SyncJob.update(status=JOB_CANCELLED, finished_at=now, heartbeat_at=now).where(
            (SyncJob.id == job.id) & SyncJob.status.in_(CANCELLABLE_JOB_STATUSES)).execute()
        if not stopped:
            return None
        skipped = SyncItem.update(status=SKIPPED, reason=reason, finished_at=now).where(
            (SyncItem.job == job.id) & (SyncItem.status == SYNC_PENDING)).execute()
        # registrations this job made Pending, that no other job is about to send, get back
        # the Sync Status of their last finished attempt (or Not Synced)
        final = ", ".join("?" for _ in (SYNC_SUCCEEDED, SYNC_PARTIAL, SYNC_FAILED))
        _execute(
            f'UPDATE {R} SET "sync_status" = COALESCE((SELECT o."status" FROM {I} o WHERE o."registration_id" = '
            f'{R}."id" AND o."job_id" <> ? AND o."status" IN ({final}) ORDER BY o."id" DESC LIMIT 1), ?) '
            f'WHERE "id" IN (SELECT "registration_id" FROM {I} WHERE "job_id" = ? AND "status" = ? AND "reason" = ?) '
            f'AND "sync_lock" IS NULL AND "sync_status" = ? AND NOT EXISTS (SELECT 1 FROM {I} a WHERE '
            f'a."registration_id" = {R}."id" AND a."job_id" <> ? AND a."status" IN (?, ?))',
            (job.id, SYNC_SUCCEEDED, SYNC_PARTIAL, SYNC_FAILED, SYNC_NOT_SYNCED, job.id, SKIPPED, reason,
             SYNC_PENDING, job.id, SYNC_PENDING, SYNC_IN_PROGRESS))
        SyncJob.update(message=f"Cancelled by {user_name}; {skipped} record(s) not sent.").where(
            SyncJob.id == job.id).execute()
    return skipped


# --------------------------------------------------------------------------- progress

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
    jobs = list(SyncJob.select().where((SyncJob.organization == org_id) & SyncJob.status.in_(ACTIVE_JOB_STATUSES))
                .order_by(SyncJob.id.desc()).limit(limit))
    counts = counts_for([j.id for j in jobs])
    now = utcnow()
    return [Progress(j, counts[j.id], now) for j in jobs]


# --------------------------------------------------------------------------- the runner

@dataclass
class _Outcome:
    item_id: int
    reg_id: int
    status: str
    reason: str | None = None
    action: str | None = None
    sis_id: str | None = None
    sent: str | None = None       # JSON text, scrubbed
    response: str | None = None   # JSON text, scrubbed
    errors: list | None = None
    student_id: int | None = None
    mapping_version: int | None = None  # the mapping version it was mapped with (None: not mapped)


@dataclass
class RunStats:
    claimed: int = 0
    exported: int = 0
    batches: int = 0
    finished: bool = False
    stopped: bool = False


class _Heartbeat(threading.Thread):
    """Keeps the job's heartbeat and the held records' markers fresh while a task runs."""

    def __init__(self, job_id: int, interval: float):
        super().__init__(name=f"sync-heartbeat-{job_id}", daemon=True)
        self.job_id = job_id
        self.interval = interval
        self.held: list[tuple[int, int]] = []  # (item id, registration id)
        self._halt = threading.Event()

    def run(self):
        with database.connection_context():
            while not self._halt.wait(self.interval):
                try:
                    self.beat()
                except Exception:  # a missed beat is not fatal; the next one may work
                    log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def beat(self):
        # two single-statement transactions, never one holding both: a batch being
        # recorded locks its registrations and must not wait on the job row (deadlock)
        now = utcnow()
        held = list(self.held)
        SyncJob.update(heartbeat_at=now).where(SyncJob.id == self.job_id).execute()
        if held:
            mine = (Registration.id.in_([r for _, r in held])
                    & Registration.sync_lock.in_([str(i) for i, _ in held]))
            if not is_sqlite():
                # rows being recorded right now are locked and about to be released: skip them
                Reg = Registration.alias()
                mine = Registration.id.in_(Reg.select(Reg.id).where(
                    Reg.id.in_([r for _, r in held]) & Reg.sync_lock.in_([str(i) for i, _ in held]))
                    .for_update(of=Reg, skip_locked=True))
            Registration.update(sync_lock_at=now).where(mine).execute()

    def stop(self):
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)


def mapping_failure_reason(result) -> str:
    return "Not sent: " + "; ".join(p.message for p in result.errors)


def mapping_crash_reason(exc: BaseException) -> str:
    return (f"Not sent: the mapping could not be applied ({type(exc).__name__}); details are in the "
            f"server log.")


class JobRunner:
    """Runs one task of a job: claim, map, export, record, until nothing is left."""

    def __init__(self, app, job: SyncJob, cfg: JobSettings | None = None, stop: threading.Event | None = None):
        self.app = app
        self.job = job
        self.job_id = job.id
        self.cfg = cfg or job_settings(app)
        self.stop = stop or threading.Event()
        self.org = Organization.get_by_id(job.organization_id)
        self.source_fields = source_field_keys(self.org.id)
        self.contexts = ExportContexts.for_day()
        self._checks: dict[int, ConnectionCheck] = {}
        self._connections: dict[int, SyncConnection] = {}
        self.heartbeat = _Heartbeat(job.id, self.cfg.heartbeat)
        self.stats = RunStats()

    # -- connections and mappings (compiled once per connection)
    def connection(self, conn_id: int) -> SyncConnection | None:
        conn = self._connections.get(conn_id)
        if conn is None:
            conn = SyncConnection.get_or_none(SyncConnection.id == conn_id)
            if conn is not None:
                self._connections[conn_id] = conn
        return conn

    def check(self, conn: SyncConnection) -> ConnectionCheck:
        cached = self._checks.get(conn.id)
        if cached is not None and cached.version == _mapping_stamp(conn.id):
            return cached
        check = check_connection(conn, self.app, self.source_fields)
        self._checks[conn.id] = check
        return check

    def batch_size(self, conn: SyncConnection | None) -> int:
        size = 100
        if conn is not None:
            try:
                from ..connections import open_adapter
                size = int(getattr(open_adapter(conn, self.app), "batch_size", 100) or 100)
            except Exception:
                size = 100
        return max(1, size) * max(1, self.cfg.batches_per_export)

    # -- 1. claim
    def claim(self) -> tuple[int | None, list[tuple[int, int]]]:
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=self.cfg.stale)
        free = Registration.sync_lock.is_null() | (Registration.sync_lock_at < cutoff)
        base = ((SyncItem.job == self.job_id) & (SyncItem.status == SYNC_PENDING) & free)
        first = (SyncItem.select(SyncItem.connection)
                 .join(Registration, on=(SyncItem.registration == Registration.id))
                 .where(base).order_by(SyncItem.id).limit(1).tuples().first())
        if first is None:
            return None, []
        conn_id = first[0]
        size = self.batch_size(self.connection(conn_id) if conn_id else None)
        conn_cond = SyncItem.connection.is_null() if conn_id is None else (SyncItem.connection == conn_id)

        def take() -> list[tuple[int, int]]:
            with write_tx():
                q = (SyncItem.select(SyncItem.id, SyncItem.registration)
                     .join(Registration, on=(SyncItem.registration == Registration.id))
                     .where(base & conn_cond).order_by(SyncItem.id).limit(size))
                if not is_sqlite():
                    q = q.for_update(of=SyncItem, skip_locked=True)  # tasks of one job take different rows
                pairs = list(q.tuples())
                if not pairs:
                    return []
                reg_ids = [r for _, r in pairs]
                # the in-flight markers (and In Progress), row by row in id order (no deadlock
                # between claims); a row another job holds is left as it is
                _executemany(f'UPDATE {_t(Registration)} SET "sync_lock"=?, "sync_lock_at"=?, "sync_status"=? '
                             f'WHERE "id"=? AND ("sync_lock" IS NULL OR "sync_lock_at" < ?)',
                             [(str(i), now, SYNC_IN_PROGRESS, r, cutoff)
                              for i, r in sorted(pairs, key=lambda p: p[1])])
                held = dict(Registration.select(Registration.id, Registration.sync_lock)
                            .where(Registration.id.in_(reg_ids)).tuples())
                taken = [(i, r) for i, r in pairs if held.get(r) == str(i)]
                if taken:
                    SyncItem.update(status=SYNC_IN_PROGRESS, started_at=now).where(
                        SyncItem.id.in_([i for i, _ in taken])).execute()
                return taken

        mine = retrying(take)
        if not mine:
            return conn_id, []
        self.heartbeat.held = mine
        self.stats.claimed += len(mine)
        return conn_id, mine

    # -- 2. + 3. check, map and export one claimed batch
    def process(self, conn_id: int | None, mine: list[tuple[int, int]]) -> None:
        regs = _load_registrations([r for _, r in mine])
        outcomes: list[_Outcome] = []
        reroute: list[tuple[int, int, int]] = []
        to_send: list[tuple[int, Any, ExportRecord, list]] = []
        conn = self.connection(conn_id) if conn_id else None
        check = None
        mapped: set[int] = set()
        for item_id, reg_id in mine:
            reg = regs.get(reg_id)
            if reg is None:
                continue  # deleted meanwhile: its item went with it (ON DELETE CASCADE)
            if not self.org.uses_registration_module:
                outcomes.append(_Outcome(item_id, reg_id, SKIPPED, NO_MODULE))
                continue
            if reg.status != APPROVED:
                outcomes.append(_Outcome(item_id, reg_id, SKIPPED,
                                         f"Not Approved (the registration is {reg.status}): only Approved "
                                         f"registrations are synced."))
                continue
            current = reg.school.sync_connection_id
            if current is None:
                outcomes.append(_Outcome(item_id, reg_id, SYNC_FAILED,
                                         f"{reg.school.name} has no sync connection. Set one under "
                                         f"Schools/Programs, then Retry failed."))
                continue
            if current != conn_id:
                reroute.append((item_id, reg_id, current))
                continue
            if check is None:
                check = self.check(conn)
            if check.problem:
                outcomes.append(_Outcome(item_id, reg_id, SYNC_FAILED, check.problem))
                continue
            mapped.add(item_id)
            try:
                sis_id, result = map_for_export(check.compiled, reg, self.contexts)
            except Exception as exc:  # a bug must fail this record, not stall the job on it forever
                log.exception("mapping registration %s failed", reg_id)
                outcomes.append(_Outcome(item_id, reg_id, SYNC_FAILED, mapping_crash_reason(exc)))
                continue
            if not result.ok:
                errors = [p.to_dict() for p in result.problems]
                outcomes.append(_Outcome(item_id, reg_id, SYNC_FAILED, mapping_failure_reason(result), errors=errors))
                continue
            warnings = [p.to_dict() for p in result.problems]  # warnings only: the record is sent
            to_send.append((item_id, reg, ExportRecord(str(reg.id), result.payload, sis_id), warnings))
        if to_send:
            outcomes.extend(self.export(conn, to_send))
        if mapped and check is not None and check.version:
            for o in outcomes:
                if o.item_id in mapped:
                    o.mapping_version = check.version[1]
        self.record(conn, outcomes, reroute)
        self.stats.batches += 1

    def export(self, conn: SyncConnection, to_send) -> list[_Outcome]:
        from ..connections import open_adapter, secret_values
        records = [rec for _, _, rec, _ in to_send]
        try:
            secrets = secret_values(conn, self.app)
        except Exception:
            secrets = []
        results: dict[str, ExportResult] = {}
        failure = None
        try:
            adapter = open_adapter(conn, self.app)
            for r in adapter.export(records) or ():
                if isinstance(r, ExportResult):
                    results[str(r.record_id)] = r
        except AdapterError as exc:
            failure = scrub_text(str(exc), secrets) or "The SIS refused the batch."
        except Exception as exc:
            log.exception("export through connection %s failed", conn.id)
            failure = (f"The {conn.adapter} adapter failed unexpectedly ({type(exc).__name__}); nothing is "
                       f"known to have reached the SIS. Details are in the worker log.")
        self.stats.exported += len(records)
        out = []
        for item_id, reg, rec, warnings in to_send:
            r = results.get(rec.record_id)
            if r is None:
                reason = failure or ("The adapter gave no answer for this record, so it may or may not have "
                                     "reached the SIS. Syncing it again is safe.")
                out.append(_Outcome(item_id, reg.id, SYNC_FAILED, reason, sent=None,
                                    errors=(warnings or []) + [{"field": None, "code": "NO_RESULT",
                                                                "message": reason, "severity": "error"}],
                                    student_id=reg.student_id))
                continue
            status = _OUTCOME_STATUS.get(r.outcome, SYNC_FAILED)
            errors = [{"field": e.field, "code": e.code, "message": scrub_text(e.message, secrets),
                       "severity": "error"} for e in (r.errors or [])]
            reason = scrub_text(r.message, secrets) or (
                "; ".join(e["message"] for e in errors) if errors else None)
            out.append(_Outcome(item_id, reg.id, status, reason, action=r.action,
                                sis_id=str(r.sis_id) if r.sis_id not in (None, "") else None,
                                sent=dumps_scrubbed(r.sent, secrets), response=dumps_scrubbed(r.response, secrets),
                                errors=((warnings or []) + errors) or None, student_id=reg.student_id))
        return out

    # -- 4. record
    def record(self, conn, outcomes: list[_Outcome], reroute: list[tuple[int, int, int]]) -> None:
        now = utcnow()
        I, R, S = _t(SyncItem), _t(Registration), _t(Student)
        item_rows, reg_rows, student_rows, skipped = [], [], [], []
        for o in outcomes:
            item_rows.append((o.status, o.reason, o.action, o.sis_id, o.sent, o.response,
                              _dumps(o.errors), o.mapping_version, now, o.item_id, SYNC_IN_PROGRESS))
            if o.status == SKIPPED:
                skipped.append(o)
                continue
            reached = o.status in (SYNC_SUCCEEDED, SYNC_PARTIAL)
            sis_id = o.sis_id if reached else None
            reg_rows.append((o.status, now if reached else None, sis_id, o.reg_id, str(o.item_id)))
            if sis_id and o.student_id:
                student_rows.append((sis_id, o.student_id))

        # rows in registration order in every transaction, so two never wait on each other in a circle
        reg_rows.sort(key=lambda row: row[3])
        student_rows.sort(key=lambda row: row[1])

        def write():
            with write_tx():
                _executemany(
                    f'UPDATE {I} SET "status"=?, "reason"=?, "action"=?, "sis_id"=?, "sent"=?, "response"=?, '
                    f'"errors"=?, "mapping_version"=?, "finished_at"=? WHERE "id"=? AND "status"=?', item_rows)
                _executemany(
                    f'UPDATE {R} SET "sync_status"=?, "last_synced_at"=COALESCE(?, "last_synced_at"), '
                    f'"sis_id"=COALESCE(?, "sis_id"), "sync_lock"=NULL, "sync_lock_at"=NULL '
                    f'WHERE "id"=? AND "sync_lock"=?', reg_rows)
                _executemany(f'UPDATE {S} SET "sis_id"=? WHERE "id"=?', student_rows)
                for o in skipped:
                    Registration.update(sync_status=_settled_status(o.reg_id, self.job_id), sync_lock=None,
                                        sync_lock_at=None).where(
                        (Registration.id == o.reg_id) & (Registration.sync_lock == str(o.item_id))).execute()
                for item_id, reg_id, new_conn in reroute:
                    # the school's connection changed since the job was created: send it through the new one
                    SyncItem.update(status=SYNC_PENDING, connection=new_conn, started_at=None).where(
                        (SyncItem.id == item_id) & (SyncItem.status == SYNC_IN_PROGRESS)).execute()
                    Registration.update(sync_status=SYNC_PENDING, sync_lock=None, sync_lock_at=None).where(
                        (Registration.id == reg_id) & (Registration.sync_lock == str(item_id))).execute()

        retrying(write)
        self.heartbeat.held = []
        SyncJob.update(heartbeat_at=now).where(SyncJob.id == self.job_id).execute()

    # -- the loop
    def run(self, requeue: Callable[[int], Any] | None = None) -> RunStats:
        now = utcnow()
        first = SyncJob.update(status=JOB_RUNNING, started_at=now, heartbeat_at=now).where(
            (SyncJob.id == self.job_id) & (SyncJob.status == JOB_QUEUED)).execute()
        if not first and not SyncJob.update(heartbeat_at=now).where(
                (SyncJob.id == self.job_id) & (SyncJob.status == JOB_RUNNING)).execute():
            self.stats.finished = True  # completed meanwhile
            return self.stats
        self.heartbeat.start()
        try:
            if first and self.job.total > PENDING_INLINE_MAX:
                _pending_registrations_in_chunks(self.job_id)
            while True:
                if self.stop.is_set():
                    self.stats.stopped = True
                    if requeue is not None:
                        requeue(self.job_id)  # the next worker carries on at once
                    break
                conn_id, mine = self.claim()
                if mine:
                    self.process(conn_id, mine)
                    continue
                counts = counts_for([self.job_id])[self.job_id]
                pending, in_progress = counts.get(SYNC_PENDING, 0), counts.get(SYNC_IN_PROGRESS, 0)
                if not pending and not in_progress:
                    self.stats.finished = finish_if_done(self.job_id)
                    break
                if reset_stale_items(self.cfg.stale, job_id=self.job_id):
                    continue
                if not pending:
                    break  # live tasks hold the rest; the last of them completes the job
                # pending records are held by another job (or a task mid-claim): wait for them
                self.stop.wait(self.cfg.poll)
        finally:
            self.heartbeat.stop()
        log.info("sync job %s: this task sent %d record(s) in %d batch(es)%s", self.job_id, self.stats.exported,
                 self.stats.batches, "; the job is complete" if self.stats.finished else "")
        return self.stats


def _load_registrations(ids: list[int]) -> dict[int, SimpleNamespace]:
    """What a batch needs of its registrations, students and schools, in one query
    (plain rows: building model instances costs more than the mapping itself)."""
    rows = (Registration.select(
        Registration.id, Registration.form_id, Registration.grade, Registration.school_year, Registration.status,
        Registration.approved_at, Registration.answers, Registration.sis_id, Registration.student,
        Student.schoolmint_id, Student.sis_id, School.name, School.school_number, School.sync_connection)
        .join(Student, on=(Registration.student == Student.id))
        .switch(Registration).join(School, on=(Registration.school == School.id))
        .where(Registration.id.in_(ids)).tuples())
    out = {}
    for (rid, form_id, grade, year, status, approved_at, answers, sis_id, student_id, sm_id, st_sis,
         school_name, school_number, conn_id) in rows:
        if isinstance(approved_at, str):
            approved_at = Registration.approved_at.python_value(approved_at)
        out[rid] = SimpleNamespace(
            id=rid, form_id=form_id, grade=grade, school_year=year, status=status, approved_at=approved_at,
            answers=answers, sis_id=sis_id, student_id=student_id,
            student=SimpleNamespace(schoolmint_id=sm_id, sis_id=st_sis),
            school=SimpleNamespace(name=school_name, school_number=school_number, sync_connection_id=conn_id))
    return out


def _settled_status(reg_id: int, exclude_job: int) -> str:
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


def run_job(app, job_id: int, *, stop: threading.Event | None = None,
            requeue: Callable[[int], Any] | None = None) -> RunStats:
    """Run one task of job ``job_id`` to the end (needs an app context and a
    database connection). Safe to run many times and in parallel."""
    job = SyncJob.get_or_none(SyncJob.id == job_id)
    if job is None or job.status not in ACTIVE_JOB_STATUSES:
        return RunStats(finished=True)
    return JobRunner(app, job, stop=stop).run(requeue)


# --------------------------------------------------------------------------- recovery

def reset_stale_items(stale_seconds: float, job_id: int | None = None) -> int:
    """Put In Progress items whose task died back to Pending; returns how many.

    An item is stale when its registration's marker is no longer its own or has not
    been refreshed for ``stale_seconds`` (the heartbeat of a live task refreshes it)."""
    cutoff = utcnow() - dt.timedelta(seconds=stale_seconds)
    cond = (SyncItem.status == SYNC_IN_PROGRESS) & (
        Registration.sync_lock.is_null() | (Registration.sync_lock != Cast(SyncItem.id, "TEXT"))
        | (Registration.sync_lock_at < cutoff))
    if job_id is not None:
        cond &= SyncItem.job == job_id
    with write_tx():
        rows = list(SyncItem.select(SyncItem.id, SyncItem.registration)
                    .join(Registration, on=(SyncItem.registration == Registration.id)).where(cond).tuples())
        if not rows:
            return 0
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            SyncItem.update(status=SYNC_PENDING, started_at=None).where(
                SyncItem.id.in_([i for i, _ in chunk]) & (SyncItem.status == SYNC_IN_PROGRESS)).execute()
            Registration.update(sync_lock=None, sync_lock_at=None).where(
                Registration.id.in_([r for _, r in chunk])
                & Registration.sync_lock.in_([str(i) for i, _ in chunk])).execute()
            Registration.update(sync_status=SYNC_PENDING).where(
                Registration.id.in_([r for _, r in chunk]) & Registration.sync_lock.is_null()).execute()
    log.warning("put %d record(s) of a stopped sync task back in the queue", len(rows))
    return len(rows)


def recover(app, requeue: Callable[[int], bool]) -> list[int]:
    """Find work that no live task is doing and hand it back to the queue.

    Items of dead tasks go back to Pending; jobs that are not complete and whose
    heartbeat is older than the stale window are re-enqueued (``requeue(job_id)``
    returns False when a task for the job is already waiting in the queue); jobs
    whose items are all final but which were never marked Completed are completed.
    Returns the ids of the jobs re-enqueued.
    """
    cfg = job_settings(app)
    reset_stale_items(cfg.stale)
    cutoff = utcnow() - dt.timedelta(seconds=cfg.stale)
    stalled = list(SyncJob.select(SyncJob.id).where(
        SyncJob.status.in_(ACTIVE_JOB_STATUSES)
        & ((SyncJob.heartbeat_at.is_null() & (SyncJob.created_at < cutoff)) | (SyncJob.heartbeat_at < cutoff))
    ).tuples())
    requeued = []
    for (job_id,) in stalled:
        if finish_if_done(job_id):
            continue
        if requeue(job_id):
            requeued.append(job_id)
            SyncJob.update(heartbeat_at=utcnow()).where(SyncJob.id == job_id).execute()
    if requeued:
        log.warning("re-enqueued sync job(s) %s whose worker stopped", ", ".join(map(str, requeued)))
    return requeued
