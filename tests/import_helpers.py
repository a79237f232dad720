"""Shared set-up of the import tests: Import Student Mappings for both sandboxes,
schools assigned to the connections, and SIS data without accidental twins (two seeded
students with the same name and birth date would rightly be a conflict)."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict

from enroll_sync.db import database
from enroll_sync.models import School, SyncConnection
from enroll_sync.sync.imports.matching import match_key
from enroll_sync.testing import save_import_mapping

TO_ENROLL_DATE = [{"kind": "date", "from_format": "YYYY-MM-DD", "to_format": "MM/DD/YYYY"}]

#: PowerSchool -> Enroll; Overwrite checked on the middle name, not on the home phone
PS_ROWS = [
    {"to": "student_legal_first_name", "type": "direct", "from": "name.first_name"},
    {"to": "student_legal_middle_name", "type": "direct", "from": "name.middle_name", "overwrite": True},
    {"to": "student_legal_last_name", "type": "direct", "from": "name.last_name"},
    {"to": "birth_date", "type": "transformation", "from": "demographics.birth_date", "steps": TO_ENROLL_DATE},
    {"to": "gender", "type": "match_codes", "from": "demographics.gender", "codes": {"F": "Female", "M": "Male"},
     "unmatched": "blank"},
    {"to": "state_student_id", "type": "direct", "from": "state_province_id"},
    {"to": "home_street", "type": "direct", "from": "addresses.physical.street"},
    {"to": "home_city", "type": "direct", "from": "addresses.physical.city"},
    {"to": "home_zip", "type": "direct", "from": "addresses.physical.postal_code"},
    {"to": "home_phone", "type": "direct", "from": "phones.main.number"},
    {"to": "physician_name", "type": "direct", "from": "contact.doctor_name", "overwrite": True},
    {"to": "school.school_number", "type": "match_codes", "from": "school_enrollment.school_number",
     "codes": {"100": "101", "200": "201", "300": "301"}, "unmatched": "blank"},
]
GRADES = {"-1": "PK", "0": "K", **{str(g): str(g) for g in range(1, 13)}}
#: Ed-Fi -> Enroll; Overwrite checked on middle name, sex and birth city, not on ethnicity and grade
EDFI_ROWS = [
    {"to": "student_legal_first_name", "type": "direct", "from": "firstName"},
    {"to": "student_legal_middle_name", "type": "direct", "from": "middleName", "overwrite": True},
    {"to": "student_legal_last_name", "type": "direct", "from": "lastSurname"},
    {"to": "birth_date", "type": "transformation", "from": "birthDate", "steps": TO_ENROLL_DATE},
    {"to": "gender", "type": "match_codes", "from": "sexDescriptor", "overwrite": True, "unmatched": "blank",
     "codes": {"uri://ed-fi.org/SexDescriptor#Female": "Female", "uri://ed-fi.org/SexDescriptor#Male": "Male"}},
    {"to": "ethnicity", "type": "match_codes", "from": "hispanicLatinoEthnicity", "unmatched": "blank",
     "codes": {"True": "Hispanic or Latino", "False": "Not Hispanic or Latino"}},
    {"to": "grade_applying", "type": "match_codes", "from": "gradeLevel", "codes": GRADES, "unmatched": "blank"},
    {"to": "birth_city", "type": "direct", "from": "birthData.birthCity", "overwrite": True},
    {"to": "home_street", "type": "direct", "from": "addresses.0.streetNumberName"},
    {"to": "home_city", "type": "direct", "from": "addresses.0.city"},
]
#: Ed-Fi field -> Enroll field, for checking what an import wrote
EDFI_TO_ENROLL = {r["from"]: r["to"] for r in EDFI_ROWS}
EDFI_OVERWRITE = {r["from"] for r in EDFI_ROWS if r.get("overwrite")}


def assign_schools(app, conn_name: str, numbers) -> int:
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get(SyncConnection.name == conn_name)
        School.update(sync_connection=conn).where(School.school_number.in_(list(numbers))).execute()
        return conn.id


def set_up_powerschool(app) -> int:
    conn_id = assign_schools(app, "PowerSchool Sandbox", ["101", "201", "301"])
    save_import_mapping(app, conn_id, PS_ROWS)
    return conn_id


def set_up_edfi(app) -> int:
    conn_id = assign_schools(app, "Ed-Fi Sandbox", ["102"])
    save_import_mapping(app, conn_id, EDFI_ROWS)
    return conn_id


def ps_key(doc: dict) -> str | None:
    return match_key((doc.get("name") or {}).get("first_name"), (doc.get("name") or {}).get("last_name"),
                     (doc.get("demographics") or {}).get("birth_date"))


def edfi_key(doc: dict) -> str | None:
    return match_key(doc.get("firstName"), doc.get("lastSurname"), doc.get("birthDate"))


def untwin_powerschool(sandbox) -> int:
    """Give every seeded PowerSchool student that shares a name and birth date with another
    a different birth date. Returns how many were changed."""
    changed = 0
    while True:
        groups = defaultdict(list)
        for doc in sandbox.dump():
            groups[ps_key(doc)].append(doc)
        twins = [d for docs in groups.values() for d in docs[1:]]
        if not twins:
            return changed
        for doc in twins:
            born = dt.date.fromisoformat(doc["demographics"]["birth_date"]) + dt.timedelta(days=1 + changed % 7)
            sandbox.change_student(doc["id"], {"demographics.birth_date": born.isoformat()})
            changed += 1


def untwin_edfi(server) -> int:
    changed = 0
    while True:
        groups = defaultdict(list)
        for doc in server.dump()["students"]:
            groups[edfi_key(doc)].append(doc)
        twins = [d for docs in groups.values() for d in docs[1:]]
        if not twins:
            return changed
        for doc in twins:
            born = dt.date.fromisoformat(doc["birthDate"]) + dt.timedelta(days=1 + changed % 7)
            server.edit_student(doc["id"], {"birthDate": born.isoformat()})
            changed += 1
