"""Crash recovery: records of a task that stopped (SIGKILL included) go back to
Pending once its markers are older than ``JOB_STALE_SECONDS``, and jobs no live
task is running are handed back to the queue. Those records are exported again;
the adapter's match-before-insert turns a repeated insert into an update, so the
SIS never gets a duplicate."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

from peewee import Cast

from ..config import job_settings
from ..db import write_tx
from ..models import (ACTIVE_JOB_STATUSES, SYNC_IN_PROGRESS, SYNC_PENDING, Registration, SyncItem, SyncJob,
                      utcnow)
from .progress import finish_if_done

log = logging.getLogger("enroll_sync.sync")


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
