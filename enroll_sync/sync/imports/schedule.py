"""Scheduled imports: each connection may import every day at a set time.

The time is ``ImportState.daily_at`` ("HH:MM", the server's local time). A periodic
task on the sync queue (every minute, in every worker) calls ``run_scheduled_imports``:
each due connection is claimed with one conditional UPDATE of its
``last_scheduled_on``, so however many workers run the periodic task, one import
starts per connection and day. A scheduled import has no preview: it runs like
"Run import" (reading only what changed since the last complete import when the SIS
can tell) and its conflicts wait in its report. When it cannot start (no mapping yet,
an import still running) the reason is written to the audit log.
"""
from __future__ import annotations

import datetime as dt
import logging
import re

from ...db import database
from ...models import AuditLog, ImportState, SyncConnection
from .jobs import ImportRefused, start_import

log = logging.getLogger("enroll_sync.imports")

TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_time(text: str | None) -> str | None:
    """"7:30" -> "07:30"; "" -> None; ValueError when it is not a time of day."""
    text = (text or "").strip()
    if not text:
        return None
    m = TIME.match(text)
    if not m:
        raise ValueError("Enter a time of day as HH:MM (24-hour), e.g. 06:30, or leave it blank.")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def due(now: dt.datetime) -> list[ImportState]:
    today = now.date().isoformat()
    hhmm = now.strftime("%H:%M")
    return [s for s in ImportState.select().where(ImportState.daily_at.is_null(False))
            if s.daily_at <= hhmm and s.last_scheduled_on != today]


def run_scheduled_imports(app, now: dt.datetime | None = None, enqueue=None) -> list[int]:
    """Start the imports that are due (``now``: local time). Returns the new job ids."""
    from ..queue import enqueue_import
    now = now or dt.datetime.now()
    today = now.date().isoformat()
    started = []
    for state in due(now):
        claimed = ImportState.update(last_scheduled_on=today).where(
            (ImportState.id == state.id) & (ImportState.last_scheduled_on.is_null()
                                            | (ImportState.last_scheduled_on != today))).execute()
        if not claimed:
            continue  # another worker started it
        conn = SyncConnection.get_or_none(SyncConnection.id == state.connection_id)
        if conn is None:
            continue
        try:
            job = start_import(app, conn, None, preview=False, scheduled=True)
        except ImportRefused as exc:
            log.warning("scheduled import of connection %s not started: %s", conn.id, exc)
            with database.atomic():
                AuditLog.create(organization=conn.organization_id, user=None, action="import.schedule_skipped",
                                object_type="SyncConnection", object_id=str(conn.id), details={"reason": str(exc)})
            continue
        (enqueue or enqueue_import)(app, job.id)
        started.append(job.id)
    return started


__all__ = ["parse_time", "due", "run_scheduled_imports"]
