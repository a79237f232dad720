"""Helpers shared by the Aeries tests (a unique module name, not conftest)."""
from __future__ import annotations

import itertools

_n = itertools.count(1)

#: tiny backoffs so retry tests stay fast (advanced adapter settings, not in the form)
FAST = {"retry_backoff": 0.005, "max_backoff": 0.05, "max_attempts": 4, "timeout_s": 2}


def unique_last_name(prefix: str = "Rivera") -> str:
    return f"{prefix}{next(_n):05d}"


def insert_body(**overrides) -> dict:
    """An InsertStudent body with Aeries' write names."""
    body = {"LastName": unique_last_name(), "FirstName": "Ana", "MiddleName": "Luz", "Gender": "F",
            "Grade": 0, "NextGrade": 1, "BirthDate": "2020-03-14", "HomePhone": "(555) 201-3344",
            "HomeLanguageCode": "01", "EthnicityCode": "Y", "Race1Code": "700",
            "SchoolEnterDate": "2025-08-20", "ParentGuardianName": "Maria Rivera",
            "MailingAddress": "12 Oak St", "MailingAddressCity": "Eagle Rock",
            "MailingAddressState": "CA", "MailingAddressZipCode": "99999"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def payload(**overrides) -> dict:
    """A flat mapped payload (target keys = Aeries write names) valid for a new student."""
    p = {"LastName": unique_last_name(), "FirstName": "Ana", "MiddleName": "Luz",
         "BirthDate": "2017-03-14", "Gender": "F", "SchoolCode": "990", "Grade": "3",
         "HomePhone": "(555) 201-3344", "HomeLanguageCode": "01", "EthnicityCode": "Y",
         "Race1Code": "700", "SchoolEnterDate": "2025-08-20", "ParentGuardianName": "Maria Rivera",
         "MailingAddress": "12 Oak St", "MailingAddressCity": "Eagle Rock", "MailingAddressState": "CA",
         "MailingAddressZipCode": "99999"}
    p.update(overrides)
    return {k: v for k, v in p.items() if v is not None}


def record(record_id=None, sis_id=None, **overrides):
    from enroll_sync import ExportRecord

    p = payload(**overrides)
    return ExportRecord(record_id=str(record_id or f"reg-{p['LastName']}"), payload=p, sis_id=sis_id)


def posts(sandbox, what=""):
    return [r for r in sandbox.requests() if r["method"] == "POST" and what in r["path"]]
