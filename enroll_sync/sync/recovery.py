"""Crash recovery: records of a task that stopped (SIGKILL included) go back to
Pending once its markers are older than ``JOB_STALE_SECONDS``, and jobs no live
task is running are handed back to the queue. Those records are exported again;
the adapter's match-before-insert turns a repeated insert into an update, so the
SIS never gets a duplicate."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Callable

from peewee import Cast, fn

from ..config import job_settings
from ..db import write_tx
from ..models import (ACTIVE_JOB_STATUSES, IMPORT_JOB_KINDS, SKIPPED, SYNC_IN_PROGRESS, SYNC_PENDING, Registration, SyncItem,
                      SyncJob, SyncTask, utcnow)
from .progress import finish_if_done, settled_status

#: why a record a dead task held ends Skipped when its job was cancelled meanwhile
STOPPED_REASON = ("Not sent: the sync was cancelled while a worker that stopped held this record; nothing "
                  "is known to have reached the SIS. Sync it again to be sure.")

log = logging.getLogger("enroll_sync.sync")


def reset_stale_items(stale_seconds: float, job_id: int | None = None) -> int:
    """Take back the In Progress items whose task died; returns how many.

    An item is stale when its registration's marker is no longer its own or has not
    been refreshed for ``stale_seconds`` (the heartbeat of a live task refreshes it).
    Items of a job still running go back to Pending for the next task; items of a job
    cancelled meanwhile are Skipped like the rest of it, and their registrations get
    back the Sync Status they had."""
    cutoff = utcnow() - dt.timedelta(seconds=stale_seconds)
    cond = (SyncItem.status == SYNC_IN_PROGRESS) & (
        Registration.sync_lock.is_null() | (Registration.sync_lock != Cast(SyncItem.id, "TEXT"))
        | (Registration.sync_lock_at < cutoff))
    if job_id is not None:
        cond &= SyncItem.job == job_id
    with write_tx():
        rows = list(SyncItem.select(SyncItem.id, SyncItem.registration, SyncItem.job, SyncJob.status)
                    .join(Registration, on=(SyncItem.registration == Registration.id))
                    .switch(SyncItem).join(SyncJob, on=(SyncItem.job == SyncJob.id)).where(cond).tuples())
        if not rows:
            return 0
        live = [(i, r) for i, r, _j, status in rows if status in ACTIVE_JOB_STATUSES]
        for start in range(0, len(live), 500):
            chunk = live[start:start + 500]
            SyncItem.update(status=SYNC_PENDING, started_at=None).where(
                SyncItem.id.in_([i for i, _ in chunk]) & (SyncItem.status == SYNC_IN_PROGRESS)).execute()
            Registration.update(sync_lock=None, sync_lock_at=None).where(
                Registration.id.in_([r for _, r in chunk])
                & Registration.sync_lock.in_([str(i) for i, _ in chunk])).execute()
            Registration.update(sync_status=SYNC_PENDING).where(
                Registration.id.in_([r for _, r in chunk]) & Registration.sync_lock.is_null()).execute()
        now = utcnow()
        for item_id, reg_id, job, status in rows:
            if status in ACTIVE_JOB_STATUSES:
                continue
            # the job ended (Cancel sync) while a dead task held this record: it was never
            # confirmed sent, so it ends like the records the cancel skipped
            SyncItem.update(status=SKIPPED, reason=STOPPED_REASON, finished_at=now).where(
                (SyncItem.id == item_id) & (SyncItem.status == SYNC_IN_PROGRESS)).execute()
            Registration.update(sync_status=settled_status(reg_id, job), sync_lock=None, sync_lock_at=None).where(
                (Registration.id == reg_id) & (Registration.sync_lock.is_null()
                                               | (Registration.sync_lock == str(item_id))
                                               | (Registration.sync_lock_at < cutoff))).execute()
    log.warning("took back %d record(s) of a stopped sync task", len(rows))
    return len(rows)


def live_tasks(stale_seconds: float) -> dict[int, int]:
    """job id -> tasks whose heartbeat is fresh; rows of tasks that stopped beating go."""
    cutoff = utcnow() - dt.timedelta(seconds=stale_seconds)
    SyncTask.delete().where(SyncTask.heartbeat_at < cutoff).execute()
    return dict(SyncTask.select(SyncTask.job, fn.COUNT(SyncTask.id)).group_by(SyncTask.job).tuples())


def recover(app, enqueue: Callable[[int, int], Any], queued: Callable[[], dict[int, int]]) -> list[int]:
    """Find work no live task is doing and hand it back to the queue.

    Items of dead tasks are taken back (``reset_stale_items``); jobs whose items are all
    final but were never marked Completed are completed; and every running job with
    Pending records gets as many tasks enqueued (``enqueue(job_id, n)``) as it lacks to
    reach the number it was planned with: live tasks (their heartbeat is fresh) and tasks
    waiting in the queue (``queued()``: job id -> count) both count. A job whose workers
    all died, some died, or whose queue was lost runs as wide again as it was planned.
    Returns the ids of the jobs that got tasks.
    """
    cfg = job_settings(app)
    reset_stale_items(cfg.stale)
    cutoff = utcnow() - dt.timedelta(seconds=cfg.stale)
    alive = live_tasks(cfg.stale)
    jobs = list(SyncJob.select(SyncJob.id, SyncJob.planned_tasks, SyncJob.status, SyncJob.heartbeat_at,
                               SyncJob.created_at).where(SyncJob.status.in_(ACTIVE_JOB_STATUSES)
                                                         & SyncJob.kind.not_in(IMPORT_JOB_KINDS)))  # imports.runner
    waiting = queued() if jobs else {}
    pending = dict(SyncItem.select(SyncItem.job, fn.COUNT(SyncItem.id)).where(
        SyncItem.job.in_([j.id for j in jobs]) & (SyncItem.status == SYNC_PENDING))
        .group_by(SyncItem.job).tuples()) if jobs else {}
    requeued = []
    for job in jobs:
        if not pending.get(job.id):
            if not alive.get(job.id):
                finish_if_done(job.id)
            continue
        # a job nobody runs is picked up again only once its heartbeat is stale: a job just
        # created, approved or enqueued may be about to be taken by a worker
        fresh = (job.heartbeat_at or job.created_at) >= cutoff
        planned = max(1, job.planned_tasks or cfg.tasks)
        missing = min(planned - alive.get(job.id, 0) - waiting.get(job.id, 0), pending[job.id])
        if missing > 0 and (alive.get(job.id) or not fresh):
            enqueue(job.id, missing)
            requeued.append(job.id)
            SyncJob.update(heartbeat_at=utcnow()).where(SyncJob.id == job.id).execute()
    if requeued:
        log.warning("enqueued tasks again for sync job(s) %s to bring them back to their planned width",
                    ", ".join(map(str, requeued)))
    return requeued
