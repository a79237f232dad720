"""Send Record (the walkthrough's "Send a Test Record"): one registration, the saved
mapping, the adapter — nothing else.

The Field Mapping tab's "Send Record" shows ``preview_record`` (the body the adapter
would send, from ``adapter.preview`` of the mapping engine's payload) and "OK,
Continue" calls ``send_record``, which maps the record again with the same engine
(``mappings`` + ``export_rule``, as a sync job does), checks that the result still
has the previewed fingerprint, and exports exactly that ``ExportRecord`` through
``adapter.export``. So what the admin saw is what was sent; if the mapping or the
registration changed in between, nothing is sent and the new preview is shown
instead. Secrets are cut out with ``redaction.scrub``, as in a job's history.
Needs an app context (plugin manager, encryption key).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..adapters import AdapterError, ExportRecord, ExportResult, FieldError, FieldSection, Outcome
from ..db import database
from ..mapping.engine import MappingResult
from ..models import (APPROVED, JOB_DONE, JOB_FAILED, JOB_RUNNING, JOB_TEST, SYNC_IN_PROGRESS, Mapping,
                      Registration, SyncConnection, SyncItem, SyncJob, utcnow)
from ..redaction import log_unexpected, scrub
from . import mappings
from .connections import open_adapter, safe_secret_values, secret_values
from .export_rule import ExportContexts, map_for_export, status_for
from .links import forget_gone, how_linked, link_scope, record_link, sis_id_for

log = logging.getLogger("enroll_sync.send_record")

#: the walkthrough's "Important Note"
REGISTRATION_MODULE_NOTE = ("Exporting student data is only available for organizations who are using "
                            "Enroll's Registration module.")
GENERIC_ADAPTER_FAILURE = ("The SIS adapter failed unexpectedly. Nothing more is known here; the error "
                           "was logged for your administrator.")
#: a test-record in-flight marker older than this is considered abandoned
LOCK_STALE_AFTER = dt.timedelta(minutes=15)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def pretty_json(value: Any) -> str:
    """How a payload is shown to the admin (the preview and the sync history)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- preview

class SendRecordError(Exception):
    """A reason the test record cannot be previewed or sent, worded for the admin."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class SendRecordPreview:
    """What "Send Record" shows: the exact body and everything that blocks sending it."""

    registration: Registration
    record: ExportRecord
    result: MappingResult
    body: Any
    insert: bool
    mapping_version: int
    blockers: list[str] = field(default_factory=list)

    @property
    def sendable(self) -> bool:
        return not self.blockers and self.result.ok

    @property
    def fingerprint(self) -> str:
        """Identifies exactly this body, for this record, with this mapping version."""
        raw = canonical_json({"record": self.record.record_id, "sis_id": self.record.sis_id,
                              "version": self.mapping_version, "body": self.body})
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def body_json(self) -> str:
        return pretty_json(self.body)


def preview_record(conn: SyncConnection, reg: Registration, *, mapping: Mapping | None = None,
                        sections: list[FieldSection] | None = None, today: dt.date | None = None,
                        app=None) -> SendRecordPreview:
    """Map ``reg`` with the connection's saved mapping and ask the adapter for the exact body.

    Raises SendRecordError when there is nothing to preview (no mapping, the SIS's
    fields cannot be read, the adapter refuses); problems of the record itself are
    in ``result.problems`` and ``blockers``.
    """
    if reg.organization_id != conn.organization_id:
        raise SendRecordError("This registration belongs to another organization.", 404)
    mapping = mapping if mapping is not None else mappings.load(conn)
    rows = list(mapping.rows or ()) if mapping is not None else []
    if not mappings.mapped_rows(mapping):
        raise SendRecordError("Map at least one field and Save before sending a test record.")
    try:
        compiled = mappings.compile_rows(conn, rows, sections, app=app)
    except AdapterError as exc:
        raise SendRecordError(scrub(str(exc), safe_secret_values(conn, app))) from None
    sis_id = sis_id_for(reg.student_id, conn)
    result = map_for_export(compiled, reg, ExportContexts.for_day(today), sis_id)
    record = ExportRecord(record_id=str(reg.id), payload=dict(result.payload), sis_id=sis_id)
    secrets = secret_values(conn, app)
    try:
        body = open_adapter(conn, app).preview(record)
    except AdapterError as exc:
        raise SendRecordError(scrub(str(exc), secrets)) from None
    except Exception as exc:  # a bug in the adapter: logged, never shown
        log_unexpected(log, "Send Record's preview", conn, exc, secrets)
        raise SendRecordError(GENERIC_ADAPTER_FAILURE, 502) from None
    blockers = []
    org = conn.organization
    if not org.uses_registration_module:
        blockers.append(REGISTRATION_MODULE_NOTE)
    if reg.status != APPROVED:
        blockers.append(f"Only Approved registrations can be sent to the SIS; registration {reg.form_id} is "
                        f"{reg.status}. Choose an Approved example on the Configure tab.")
    if not result.ok:
        n = len(result.errors)
        blockers.append(f"{n} mapping error{'s' if n != 1 else ''} must be fixed before this record can be sent.")
    return SendRecordPreview(registration=reg, record=record, result=result,
                             body=scrub(body, secrets, keys=False),
                             insert=sis_id is None, mapping_version=mapping.version if mapping else 0,
                             blockers=blockers)


# --------------------------------------------------------------------------- send

class PreviewChanged(SendRecordError):
    """The record or the mapping changed after the preview: nothing was sent."""

    def __init__(self, preview: SendRecordPreview):
        super().__init__("The mapping or the registration changed since the preview, so nothing was sent. "
                         "Review the new preview below.")
        self.preview = preview


@dataclass
class SendRecordOutcome:
    job: SyncJob
    item: SyncItem
    result: ExportResult
    preview: SendRecordPreview

    @property
    def status(self) -> str:
        return self.item.status


def send_record(conn: SyncConnection, reg: Registration, user, *, fingerprint: str,
                     today: dt.date | None = None, app=None) -> SendRecordOutcome:
    """Export ``reg`` (the previewed record) through the connection's adapter.

    Records a SyncJob(kind="test") with one SyncItem holding what was sent and the
    SIS's answer, and updates the registration's Sync Status and, when the SIS holds
    the record, the student's SIS link on ``conn``. Raises PreviewChanged when the body no longer matches the
    previewed ``fingerprint`` and SendRecordError when the record must not be sent.
    """
    preview = preview_record(conn, reg, today=today, app=app)
    if not fingerprint or fingerprint != preview.fingerprint:
        raise PreviewChanged(preview)
    if not preview.sendable:
        raise SendRecordError(" ".join(preview.blockers) or "This record cannot be sent.")
    secrets = secret_values(conn, app)
    now = utcnow()
    with database.atomic():
        job = SyncJob.create(organization=conn.organization_id, created_by=getattr(user, "id", user),
                             kind=JOB_TEST, status=JOB_RUNNING, total=1, created_at=now, started_at=now,
                             heartbeat_at=now,
                             message=f"Send Test Record through {conn.name} (mapping version {preview.mapping_version})")
        item = SyncItem.create(job=job, registration=reg.id, connection=conn.id, status=SYNC_IN_PROGRESS,
                               started_at=now, sent=preview.body)
        token = f"test-item:{item.id}"
        locked = (Registration.update(sync_lock=token, sync_lock_at=now)
                  .where((Registration.id == reg.id)
                         & (Registration.sync_lock.is_null() | (Registration.sync_lock_at < now - LOCK_STALE_AFTER)))
                  .execute())
        if not locked:
            item.delete_instance()
            job.delete_instance()
            raise SendRecordError("This registration is being sent to the SIS by a sync job right now. "
                                  "Try again when the job has finished.")
    job_status = JOB_DONE
    try:
        result = _export_one(conn, preview.record, secrets, app)
    except Exception as exc:  # pragma: no cover - _export_one catches everything it can
        log_unexpected(log, "Send Record", conn, exc, secrets)
        result = ExportResult(preview.record.record_id, Outcome.FAILED, message=GENERIC_ADAPTER_FAILURE)
        job_status = JOB_FAILED
    finally:
        (Registration.update(sync_lock=None, sync_lock_at=None)
         .where((Registration.id == reg.id) & (Registration.sync_lock == token)).execute())

    status = status_for(result.outcome)
    errors = [dataclasses.asdict(e) if isinstance(e, FieldError) else e for e in (result.errors or [])]
    reason = result.message or "; ".join(
        (f"{e['field']}: " if e.get("field") else "") + str(e.get("message", "")) for e in errors) or None
    gone = preview.record.sis_id if result.outcome == Outcome.NOT_FOUND else None
    if gone:
        reason = (f"The SIS no longer has student {gone}, so the link to it was removed and nothing was sent. "
                  f"Send Record again: the new preview creates the student or matches the one the SIS has.")
    elif result.outcome == Outcome.RETRY:
        reason = f"The SIS asked to try again later, so nothing was sent{': ' + reason if reason else '.'}"
    done = utcnow()
    with database.atomic():
        item.status = status
        item.reason = scrub(reason, secrets) if reason else None
        item.action = result.action
        item.sis_id = result.sis_id
        item.sent = scrub(result.sent if result.sent is not None else preview.body, secrets)
        item.response = scrub(result.response, secrets)
        item.errors = scrub(errors, secrets) if errors else None
        item.mapping_version = preview.mapping_version or None
        item.finished_at = done
        item.save()
        changes = {Registration.sync_status: status}
        if result.ok:
            changes[Registration.last_synced_at] = done
        Registration.update(changes).where(Registration.id == reg.id).execute()
        if gone:
            forget_gone(reg.student_id, link_scope(conn), gone)
        if result.ok and result.sis_id:
            record_link(conn, reg.student_id, str(result.sis_id), how_linked(result, preview.record.sis_id),
                        item_id=item.id, user_id=getattr(user, "id", user))
        job.status = job_status
        job.finished_at = done
        job.heartbeat_at = done
        job.save()
    return SendRecordOutcome(job=job, item=item, result=result, preview=preview)


def _export_one(conn, record: ExportRecord, secrets, app) -> ExportResult:
    try:
        results = open_adapter(conn, app).export([record])
    except AdapterError as exc:
        return ExportResult(record.record_id, Outcome.FAILED, message=scrub(str(exc), secrets))
    except Exception as exc:  # a bug in the adapter: logged (redacted), never shown
        log_unexpected(log, "Send Record", conn, exc, secrets)
        return ExportResult(record.record_id, Outcome.FAILED, message=GENERIC_ADAPTER_FAILURE)
    for r in results or ():
        if isinstance(r, ExportResult) and str(r.record_id) == record.record_id:
            if r.message:
                r.message = scrub(r.message, secrets)
            return r
    log.error("adapter %s returned no result for record %s", conn.adapter, record.record_id)
    return ExportResult(record.record_id, Outcome.FAILED,
                        message="The SIS adapter returned no result for this record.")
