"""Helpers shared by the PowerSchool tests (a unique module name, not conftest)."""
from __future__ import annotations

import itertools

from enroll_sync import ExportRecord, nest

_local_ids = itertools.count(500001)


def next_local_id() -> int:
    return next(_local_ids)


def payload(local_id=None, **overrides) -> dict:
    """A flat mapped payload valid for a PowerSchool INSERT."""
    lid = next_local_id() if local_id is None else local_id
    p = {
        "local_id": str(lid),
        "name.first_name": "Ana",
        "name.last_name": f"Lopez{lid}",
        "demographics.gender": "F",
        "demographics.birth_date": "2015-03-04",
        "school_enrollment.school_number": "100",
        "school_enrollment.grade_level": "3",
        "school_enrollment.entry_date": "2025-08-20",
        "school_enrollment.exit_date": "2026-06-10",
        "school_enrollment.enroll_status": "A",
    }
    p.update(overrides)
    return {k: v for k, v in p.items() if v is not None}


def record(record_id=None, local_id=None, sis_id=None, **overrides) -> ExportRecord:
    p = payload(local_id, **overrides)
    return ExportRecord(record_id=str(record_id or f"reg-{p['local_id']}"), payload=p, sis_id=sis_id)


def post_students(api, *students):
    r = api.post("/ws/v1/student", json={"students": {"student": list(students)}})
    return r


def student_body(local_id=None, uid="u1", **overrides):
    """A nested INSERT body as the API expects it (for direct sandbox tests)."""
    body = {"client_uid": uid, "action": "INSERT"}
    flat = payload(local_id, **overrides)
    body.update(nest(flat))
    return body
