"""Creating sync jobs, and what people do to them: Retry failed, holding a large
update for a second person's approval, approving it, Cancel sync.

``create_job`` inserts one SyncItem per registration with a single
``INSERT ... SELECT`` (100,000 rows without a Python loop), marks those
registrations Pending and returns; the web layer then enqueues it (``queue``).
When the district holds a large update (``Organization.hold_updates_over``) and the
job would update more students the SIS already has than that, it is created Held
instead: no worker runs it until a second person approves it (``approve_job``).
What a worker does with a job is in ``runner``; crash recovery in ``recovery``.
"""
from __future__ import annotations

from peewee import Value, fn

from ..db import execute, is_sqlite, retrying, table, write_tx
from ..models import (APPROVED, CANCELLABLE_JOB_STATUSES, JOB_CANCELLED, JOB_HELD, JOB_QUEUED, SKIPPED,
                      SYNC_FAILED, SYNC_IN_PROGRESS, SYNC_NOT_SYNCED, SYNC_PARTIAL, SYNC_PENDING, SYNC_SUCCEEDED,
                      Organization, Registration, School, SisLink, SyncConnection, SyncItem, SyncJob, utcnow)
from .mappings import ConnectionCheck, check_connections
from .selection import Selection


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


def mark_pending_in_chunks(job_id: int, chunk: int = 5000) -> None:
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
        # as_rowcount: no RETURNING of 100,000 ids to the client (PostgreSQL), and the count is the total
        total = SyncItem.insert_from(q.order_by(Registration.id), [SyncItem.job, SyncItem.registration,
                                                                    SyncItem.connection, SyncItem.status]
                                     ).as_rowcount().execute()
        return _settle_new_job(job, total)


def _settle_new_job(job: SyncJob, total: int | None = None) -> SyncJob | None:
    """After a new job's items are inserted (same transaction): its total, Held when it
    updates too many known students, its registrations Pending; None (and no job) when
    it holds nothing."""
    if total is None:
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
        total = SyncItem.insert_from(q, [SyncItem.job, SyncItem.registration, SyncItem.connection,
                                         SyncItem.status]).as_rowcount().execute()
        return _settle_new_job(new, total)


# --------------------------------------------------------------------------- holding a large update


def count_would_update(job_id: int) -> int:
    """How many of the job's registrations the sync would send as an update: those whose
    student has a SIS link on the connection the record goes to (the rule
    ``export_rule.map_for_export`` uses), counted in one query."""
    return (SyncItem.select(fn.COUNT(SyncItem.id))
            .join(Registration, on=(SyncItem.registration == Registration.id))
            .join(SyncConnection, on=(SyncItem.connection == SyncConnection.id))
            .join(SisLink, on=((SisLink.student == Registration.student)
                               & (SisLink.connection == fn.COALESCE(SyncConnection.shares_links_with,
                                                                    SyncConnection.id))))
            .where(SyncItem.job == job_id)
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
    I, R = table(SyncItem), table(Registration)
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
        execute(
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
