"""Send Test Record: one registration, the saved mapping, the adapter — nothing else.

The Field Mapping tab's "Send Record" shows ``preview_test_record`` (the body the
adapter would send, from ``adapter.preview`` of the mapping engine's payload) and
"OK, Continue" calls ``send_test_record``, which maps the record again with the same
engine, checks that the result still has the previewed fingerprint, and exports
exactly that ``ExportRecord`` through ``adapter.export``. So what the admin saw is
what was sent; if the mapping or the registration changed in between, nothing is
sent and the new preview is shown instead.

The helpers at the top (``compile_for``, ``export_record``,
``status_for``) are the pieces a bulk sync job needs too; secrets are cut out
with ``sync.redact.scrub``, as in a job's history. Needs an app
context (plugin manager, encryption key) like ``connections``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

from flask import current_app

from .adapters import AdapterError, ExportRecord, ExportResult, FieldError, FieldSection, Outcome
from .catalog import source_field_keys, student_sis_id
from .connections import open_adapter, secret_values, target_sections
from .db import database
from .export_rule import ExportContexts, map_for_export
from .mapping.engine import CompiledMapping, MappingResult, compile_mapping
from .models import (JOB_DONE, JOB_FAILED, JOB_RUNNING, SYNC_FAILED, SYNC_IN_PROGRESS, SYNC_PARTIAL,
                     SYNC_SUCCEEDED, Mapping, Registration, Student, SyncConnection, SyncItem,
                     SyncJob, utcnow)
from .sync.redact import scrub

log = logging.getLogger("enroll_sync.test_record")

EXPORT_STUDENT = "export_student"
#: the walkthrough's "Important Note"
REGISTRATION_MODULE_NOTE = ("Exporting student data is only available for organizations who are using "
                            "Enroll's Registration module.")
GENERIC_ADAPTER_FAILURE = ("The SIS adapter failed unexpectedly. Nothing more is known here; the error "
                           "was logged for your administrator.")
#: a test-record in-flight marker older than this is considered abandoned
LOCK_STALE_AFTER = dt.timedelta(minutes=15)

STATUS_OF_OUTCOME = {Outcome.SUCCEEDED: SYNC_SUCCEEDED, Outcome.FAILED: SYNC_FAILED,
                     Outcome.PARTIAL: SYNC_PARTIAL}


# --------------------------------------------------------------------------- shared helpers

def step_classes(app=None) -> dict:
    return (app or current_app).extensions["enroll_sync.steps"]


def load_mapping(conn: SyncConnection, kind: str = EXPORT_STUDENT) -> Mapping | None:
    return Mapping.get_or_none((Mapping.connection == conn.id) & (Mapping.kind == kind))


def compile_for(conn: SyncConnection, rows: Iterable[dict], sections: list[FieldSection] | None = None,
                app=None) -> CompiledMapping:
    """The connection's mapping compiled against its SIS fields, steps and form catalog."""
    if sections is None:
        sections = target_sections(conn, app=app)
    return compile_mapping(list(rows or ()), sections, step_classes(app),
                           source_fields=source_field_keys(conn.organization_id))


def export_record(reg: Registration, result: MappingResult) -> ExportRecord:
    return ExportRecord(record_id=str(reg.id), payload=dict(result.payload), sis_id=student_sis_id(reg))


def status_for(outcome: Outcome) -> str:
    return STATUS_OF_OUTCOME.get(outcome, SYNC_FAILED)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def pretty_json(value: Any) -> str:
    """How a payload is shown to the admin (the preview and the sync history)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


# --------------------------------------------------------------------------- preview

class TestRecordError(Exception):
    """A reason the test record cannot be previewed or sent, worded for the admin."""

    __test__ = False  # not a pytest class

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class TestRecordPreview:
    """What "Send Record" shows: the exact body and everything that blocks sending it."""

    registration: Registration
    record: ExportRecord
    result: MappingResult
    body: Any
    insert: bool
    mapping_version: int
    blockers: list[str] = field(default_factory=list)

    __test__ = False  # not a pytest class

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


def preview_test_record(conn: SyncConnection, reg: Registration, *, mapping: Mapping | None = None,
                        sections: list[FieldSection] | None = None, today: dt.date | None = None,
                        app=None) -> TestRecordPreview:
    """Map ``reg`` with the connection's saved mapping and ask the adapter for the exact body.

    Raises TestRecordError when there is nothing to preview (no mapping, the SIS's
    fields cannot be read, the adapter refuses); problems of the record itself are
    in ``result.problems`` and ``blockers``.
    """
    if reg.organization_id != conn.organization_id:
        raise TestRecordError("This registration belongs to another organization.", 404)
    mapping = mapping if mapping is not None else load_mapping(conn)
    rows = list(mapping.rows or ()) if mapping is not None else []
    if not any(r.get("type") not in (None, "", "do_not_map") for r in rows if isinstance(r, dict)):
        raise TestRecordError("Map at least one field and Save before sending a test record.")
    try:
        compiled = compile_for(conn, rows, sections, app)
    except AdapterError as exc:
        raise TestRecordError(_safe_message(conn, exc, app)) from None
    sis_id, result = map_for_export(compiled, reg, ExportContexts.for_day(today))
    record = export_record(reg, result)
    secrets = secret_values(conn, app)
    try:
        body = open_adapter(conn, app).preview(record)
    except AdapterError as exc:
        raise TestRecordError(scrub(str(exc), secrets)) from None
    except Exception as exc:  # a bug in the adapter: logged, never shown
        _log_unexpected("preview", conn, exc, secrets)
        raise TestRecordError(GENERIC_ADAPTER_FAILURE, 502) from None
    blockers = []
    org = conn.organization
    if not org.uses_registration_module:
        blockers.append(REGISTRATION_MODULE_NOTE)
    if reg.status != "Approved":
        blockers.append(f"Only Approved registrations can be sent to the SIS; registration {reg.form_id} is "
                        f"{reg.status}. Choose an Approved example on the Configure tab.")
    if not result.ok:
        n = len(result.errors)
        blockers.append(f"{n} mapping error{'s' if n != 1 else ''} must be fixed before this record can be sent.")
    return TestRecordPreview(registration=reg, record=record, result=result,
                             body=scrub(body, secrets, keys=False),
                             insert=sis_id is None, mapping_version=mapping.version if mapping else 0,
                             blockers=blockers)


# --------------------------------------------------------------------------- send

class PreviewChanged(TestRecordError):
    """The record or the mapping changed after the preview: nothing was sent."""

    def __init__(self, preview: TestRecordPreview):
        super().__init__("The mapping or the registration changed since the preview, so nothing was sent. "
                         "Review the new preview below.")
        self.preview = preview


@dataclass
class TestRecordOutcome:
    job: SyncJob
    item: SyncItem
    result: ExportResult
    preview: TestRecordPreview

    __test__ = False

    @property
    def status(self) -> str:
        return self.item.status


def send_test_record(conn: SyncConnection, reg: Registration, user, *, fingerprint: str,
                     today: dt.date | None = None, app=None) -> TestRecordOutcome:
    """Export ``reg`` (the previewed record) through the connection's adapter.

    Records a SyncJob(kind="test") with one SyncItem holding what was sent and the
    SIS's answer, and updates the registration's Sync Status (and the student's SIS
    id on success). Raises PreviewChanged when the body no longer matches the
    previewed ``fingerprint`` and TestRecordError when the record must not be sent.
    """
    preview = preview_test_record(conn, reg, today=today, app=app)
    if not fingerprint or fingerprint != preview.fingerprint:
        raise PreviewChanged(preview)
    if not preview.sendable:
        raise TestRecordError(" ".join(preview.blockers) or "This record cannot be sent.")
    secrets = secret_values(conn, app)
    now = utcnow()
    with database.atomic():
        job = SyncJob.create(organization=conn.organization_id, created_by=getattr(user, "id", user),
                             kind="test", status=JOB_RUNNING, total=1, created_at=now, started_at=now,
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
            raise TestRecordError("This registration is being sent to the SIS by a sync job right now. "
                                  "Try again when the job has finished.")
    job_status = JOB_DONE
    try:
        result = _export_one(conn, preview.record, secrets, app)
    except Exception as exc:  # pragma: no cover - _export_one catches everything it can
        _log_unexpected("export", conn, exc, secrets)
        result = ExportResult(preview.record.record_id, Outcome.FAILED, message=GENERIC_ADAPTER_FAILURE)
        job_status = JOB_FAILED
    finally:
        (Registration.update(sync_lock=None, sync_lock_at=None)
         .where((Registration.id == reg.id) & (Registration.sync_lock == token)).execute())

    status = status_for(result.outcome)
    errors = [dataclasses.asdict(e) if isinstance(e, FieldError) else e for e in (result.errors or [])]
    reason = result.message or "; ".join(
        (f"{e['field']}: " if e.get("field") else "") + str(e.get("message", "")) for e in errors) or None
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
        if result.outcome != Outcome.FAILED:
            changes[Registration.last_synced_at] = done
            if result.sis_id:
                changes[Registration.sis_id] = str(result.sis_id)
        Registration.update(changes).where(Registration.id == reg.id).execute()
        if result.outcome != Outcome.FAILED and result.sis_id:
            Student.update(sis_id=str(result.sis_id)).where(Student.id == reg.student_id).execute()
        job.status = job_status
        job.finished_at = done
        job.heartbeat_at = done
        job.save()
    return TestRecordOutcome(job=job, item=item, result=result, preview=preview)


def _export_one(conn, record: ExportRecord, secrets, app) -> ExportResult:
    try:
        results = open_adapter(conn, app).export([record])
    except AdapterError as exc:
        return ExportResult(record.record_id, Outcome.FAILED, message=scrub(str(exc), secrets))
    except Exception as exc:  # a bug in the adapter: logged (redacted), never shown
        _log_unexpected("export", conn, exc, secrets)
        return ExportResult(record.record_id, Outcome.FAILED, message=GENERIC_ADAPTER_FAILURE)
    for r in results or ():
        if isinstance(r, ExportResult) and str(r.record_id) == record.record_id:
            if r.message:
                r.message = scrub(r.message, secrets)
            return r
    log.error("adapter %s returned no result for record %s", conn.adapter, record.record_id)
    return ExportResult(record.record_id, Outcome.FAILED,
                        message="The SIS adapter returned no result for this record.")


def _safe_message(conn, exc: Exception, app=None) -> str:
    try:
        secrets = secret_values(conn, app)
    except Exception:
        secrets = []
    return scrub(str(exc), secrets)


def _log_unexpected(what: str, conn, exc: BaseException, secrets) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("Send Test Record: %s through connection %s (%s) failed unexpectedly:\n%s",
              what, conn.id, conn.adapter, scrub(text, secrets))
