"""An Aeries-compatible sandbox SIS.

No public Aeries mock exists, so this server follows ``shared/reference/aeries-api.md``
(Aeries KB articles and Aeries' own PowerShell module) and marks what it had to infer:

- one static header per request, ``AERIES-CERT`` (case sensitive); a missing or wrong
  certificate answers **401** ``{"Message": ...}`` (the status Aeries documents for a
  security area that is not granted; the official module reads ``Message`` on 401);
  ``GET /api/v5/systeminfo`` needs no certificate;
- year databases: every endpoint takes ``?DatabaseYear=YYYY`` (the year the school year
  starts). A year the server does not have, or an invalid value, **silently** uses the
  default year, exactly as the KB describes; ``systeminfo`` lists the available years;
- ``/api/v5/schools`` (grade ranges, inactive schools), ``/api/v5/codes/{Table}/{Field}``
  (table and field by code or by name, with or without the trailing ``Code``; inactive
  codes have a non-blank ``Status``; grades carry ``AeriesCode`` so K is 0);
- students per school, always as an **array**; one StudentID may have records at several
  schools; ``/students/{id}``, ``/students/grade/{g}``, ``/students/sn/{sn}``,
  ``/students/{id}/extended``; paging with ``StartingRecord``/``EndingRecord``;
- ``POST /api/v5/schools/{sc}/InsertStudent`` (and v4) answers one Student;
  ``POST /api/v5/UpdateStudent/{id}`` answers an array (every school record of the
  student is updated); write names differ from read names (``BirthDate`` vs
  ``Birthdate``, ``Race1Code`` vs ``RaceCode1``, ``NextSchool`` vs ``NextSchoolCode``);
  a property the API does not know is ignored without an error, as ASP.NET model binding
  does (so a read name sent on a write is silently dropped); omitted fields keep their
  value (update) or get Aeries' default (insert); no duplicate detection;
- contacts keyed by StudentID + SequenceNumber: ``InsertContact``, ``UpdateContact``,
  ``DeleteContact`` (DELETE or GET), ``/schools/{sc}/contacts[/{id}]``; write name
  ``AddressZip`` vs read name ``AddressZipCode``;
- errors are ``{"Message": ...}``: 400 for a broken rule on a write, 404 for a missing
  single object, 401 for the certificate or a missing security area, 501 for endpoints
  behind the "v5 Enhancements" feature flag (``not_implemented`` paths);
- per-field write permission: a field whose Insert or Update permission is off is
  **silently ignored** (configurable per field: ``no_insert_permission`` /
  ``no_update_permission``).

Only the sandbox has ``/sandbox/*``: ``GET/POST /sandbox/faults`` (alias
``/sandbox/config``: faults and configuration), ``GET /sandbox/dump``,
``GET /sandbox/requests``, ``POST /sandbox/reset`` (back to the start state: seeded
students, start faults), ``POST /sandbox/empty`` (no students or contacts; faults
kept), ``POST /sandbox/renumber`` (same students, new StudentIDs: a restored backup),
``POST /sandbox/seed`` (``{"students": n, "seed": s}``), ``POST /sandbox/students/{id}/change``
(a student edited by hand in Aeries).

Start it from the command line (``enroll-sync sandbox aeries --port 5003``) or, in
tests, with ``serve_in_thread(port=0)``. It answers at ``/api/...`` and, as districts host
Aeries under a path, at ``/aeries/api/...`` too.
"""
from __future__ import annotations

import collections
import copy
import datetime as dt
import json
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["DEFAULT_CERT", "DEFAULT_FAULTS", "DEFAULT_YEAR", "AVAILABLE_YEARS", "MALFORMED_KINDS",
           "SCHOOLS", "CODE_SETS", "STUDENT_FIELDS", "CONTACT_FIELDS", "SandboxHandle",
           "SandboxStore", "create_app", "make_sandbox_server", "serve_in_thread", "seed_students"]

#: The certificate the sandbox accepts unless told otherwise (a demo value, not a secret).
DEFAULT_CERT = "5e1d7c0a9b3f4d2e8a6c1b0f9e7d3a25"
DEFAULT_YEAR = 2025
AVAILABLE_YEARS = (2024, 2025)
AERIES_VERSION = "10.25.410.1 (sandbox)"
FIRST_STUDENT_ID = 99400001

SCHOOLS = [
    {"SchoolCode": 990, "Name": "Eagle Rock Elementary School", "LowGradeLevel": -1,
     "HighGradeLevel": 5, "InactiveStatusCode": ""},
    {"SchoolCode": 991, "Name": "Eagle Rock Middle School", "LowGradeLevel": 6,
     "HighGradeLevel": 8, "InactiveStatusCode": ""},
    {"SchoolCode": 994, "Name": "Aeries High School", "LowGradeLevel": 9,
     "HighGradeLevel": 12, "InactiveStatusCode": ""},
    {"SchoolCode": 997, "Name": "Oak Street Annex (closed)", "LowGradeLevel": 0,
     "HighGradeLevel": 5, "InactiveStatusCode": "I"},
]
for _i, _s in enumerate(SCHOOLS):
    _s.update({"Address": f"{100 + _i} Colorado Blvd", "AddressCity": "Eagle Rock",
               "AddressState": "CA", "AddressZipCode": "99999", "AddressZipExt": "",
               "DoNotReport": False, "StateCountyID": "19", "StateDistrictID": "64733",
               "StateSchoolID": f"60{_s['SchoolCode']}0", "PrincipalName": "Pat Principal",
               "PrincipalEmailAddress": "principal@example.org", "AttendancePeriod": 0,
               "Tracks": 1, "ScheduleType": "", "SessionType": "", "AttendanceType": "",
               "AttendanceReporting": "", "ScheduleBasis": "", "Terms": []})


def _code(code: str, description: str, sort: int, aeries: str = "", status: str = "",
          numeric: float = 0) -> dict:
    return {"Code": code, "Description": description, "AeriesCode": aeries, "Category": "",
            "SortOrder": sort, "Status": status, "NumericValue": numeric,
            **{f"DescriptionForLanguage{i}": "" for i in range(1, 7)}}


_LANGUAGES = [_code("00", "English", 1), _code("01", "Spanish", 2), _code("02", "Vietnamese", 3),
              _code("03", "Cantonese", 4), _code("04", "Korean", 5), _code("05", "Filipino (Tagalog)", 6),
              _code("08", "Mandarin", 7), _code("12", "Armenian", 8),
              _code("06", "Pilipino (old code)", 9, status="I"), _code("99", "Other", 10)]
#: code sets by (table, field code)
CODE_SETS: dict[tuple[str, str], list[dict]] = {
    ("STU", "GR"): [_code("PS", "Preschool", 1, "-2", status="I", numeric=-2),
                    _code("TK", "Transitional Kindergarten", 2, "-1", numeric=-1),
                    _code("K", "Kindergarten", 3, "0", numeric=0),
                    *[_code(str(n), f"Grade {n}", 3 + n, str(n), numeric=n) for n in range(1, 13)]],
    ("STU", "GN"): [_code("M", "Male", 1), _code("F", "Female", 2), _code("X", "Nonbinary", 3)],
    ("STU", "HL"): _LANGUAGES,
    ("STU", "CL"): _LANGUAGES,
    ("STU", "LF"): [_code("E", "English Only", 1), _code("I", "Initial Fluent English Proficient", 2),
                    _code("L", "English Learner", 3), _code("R", "Reclassified Fluent", 4),
                    _code("T", "To Be Determined", 5)],
    ("STU", "RC"): [_code(c, d, i) for i, (c, d) in enumerate([
        ("100", "American Indian or Alaska Native"), ("201", "Chinese"), ("202", "Japanese"),
        ("203", "Korean"), ("204", "Vietnamese"), ("205", "Asian Indian"), ("299", "Other Asian"),
        ("301", "Native Hawaiian"), ("399", "Other Pacific Islander"), ("400", "Filipino"),
        ("600", "Black or African American"), ("700", "White")], 1)]
        + [_code("500", "Hispanic (retired race code)", 13, status="I")],
    ("STU", "PED"): [_code("10", "Graduate school/post graduate", 1), _code("11", "College graduate", 2),
                     _code("12", "Some college", 3), _code("13", "High school graduate", 4),
                     _code("14", "Not a high school graduate", 5), _code("15", "Declined to state", 6)],
    ("STU", "TG"): [_code("I", "Inactive", 1), _code("N", "No show", 2), _code("P", "Pre-enrolled", 3)],
    ("STU", "ETH"): [_code("Y", "Hispanic or Latino", 1), _code("N", "Not Hispanic or Latino", 2)],
    ("CON", "RL"): [_code(c, d, i) for i, (c, d) in enumerate([
        ("10", "Father"), ("11", "Mother"), ("12", "Stepfather"), ("13", "Stepmother"),
        ("14", "Grandparent"), ("15", "Legal guardian"), ("16", "Aunt or uncle"), ("17", "Sibling"),
        ("20", "Foster parent"), ("30", "Family friend"), ("40", "Other")], 1)]
        + [_code("41", "Caseworker (retired)", 12, status="I")],
    ("CON", "MT"): [_code("A", "All mail", 1), _code("R", "Report cards only", 2), _code("N", "No mail", 3)],
    ("CON", "CD"): [_code("E", "Emergency contact", 1), _code("P", "Parent/guardian", 2),
                    _code("D", "Doctor", 3)],
    ("CON", "CL"): _LANGUAGES,
    ("CON", "NP"): [_code("E", "Email", 1), _code("T", "Text message", 2), _code("P", "Phone call", 3)],
}
TABLE_ALIASES = {"stu": "STU", "student": "STU", "students": "STU",
                 "con": "CON", "contact": "CON", "contacts": "CON"}
#: property name (lower case, without a trailing "code") -> field code
FIELD_ALIASES = {
    "STU": {"grade": "GR", "gr": "GR", "gender": "GN", "gn": "GN", "homelanguage": "HL", "hl": "HL",
            "correspondencelanguage": "CL", "cl": "CL", "languagefluency": "LF", "lf": "LF",
            "parentedlevel": "PED", "ped": "PED", "inactivestatus": "TG", "tg": "TG",
            "ethnicity": "ETH", "eth": "ETH", "race": "RC", "rc": "RC",
            **{f"race{i}": "RC" for i in range(1, 6)}, **{f"racecode{i}": "RC" for i in range(1, 6)},
            **{f"rc{i}": "RC" for i in range(1, 6)}},
    "CON": {"relationshiptostudent": "RL", "rl": "RL", "mailtag": "MT", "mt": "MT", "misc": "CD",
            "cd": "CD", "correspondencelanguage": "CL", "cl": "CL", "notificationpreference": "NP",
            "np": "NP"},
}


@dataclass(frozen=True)
class FieldSpec:
    """One writable field as Aeries binds it: ``write`` is the property name in an
    Insert/Update body, ``read`` the one in answers; ``kind`` drives validation."""

    write: str
    read: str
    kind: str                 # str, int16, grade, date, phone, yn, ynblank, order
    limit: int | None = None  # max length of a str
    extended: bool = False    # returned only by /students/{id}/extended


def _s(write, limit, read=None, ext=False):
    return FieldSpec(write, read or write, "str", limit, ext)


STUDENT_FIELDS: tuple[FieldSpec, ...] = (
    _s("LastName", 100), _s("FirstName", 100), _s("MiddleName", 100), _s("NameSuffix", 10),
    _s("Gender", 1), FieldSpec("Grade", "Grade", "grade"), FieldSpec("NextGrade", "NextGrade", "grade"),
    FieldSpec("NextSchool", "NextSchoolCode", "int16"), FieldSpec("BirthDate", "Birthdate", "date"),
    _s("InactiveStatusCode", 1), FieldSpec("HomePhone", "HomePhone", "phone"),
    _s("HomeLanguageCode", 2), _s("CorrespondenceLanguageCode", 2), _s("LanguageFluencyCode", 1),
    FieldSpec("EthnicityCode", "EthnicityCode", "yn"),
    *[_s(f"Race{i}Code", 3, read=f"RaceCode{i}") for i in range(1, 6)],
    FieldSpec("LastSchool", "LastSchool", "int16", extended=True),
    FieldSpec("ResidenceSchool", "ResidenceSchool", "int16", extended=True),
    FieldSpec("NextResidenceSchool", "NextResidenceSchool", "int16", extended=True),
    FieldSpec("SchoolEnterDate", "SchoolEnterDate", "date"),
    FieldSpec("DistrictEnterDate", "DistrictEnterDate", "date"),
    _s("BirthCity", 30, ext=True), _s("BirthStateCode", 3, ext=True), _s("BirthCountryCode", 2, ext=True),
    _s("ParentEdLevelCode", 2), _s("ParentGuardianName", 50),
    _s("MailingAddress", 55), _s("MailingAddressCity", 30), _s("MailingAddressState", 2),
    _s("MailingAddressZipCode", 5), _s("MailingAddressZipExt", 4),
    _s("ResidenceAddress", 55), _s("ResidenceAddressCity", 30), _s("ResidenceAddressState", 2),
    _s("ResidenceAddressZipCode", 5), _s("ResidenceAddressZipExt", 4),
    *[_s(f"HomeLanguageSurvey{k}LanguageCode", 2, ext=True) for k in ("First", "Primary", "Home", "Adult")],
    FieldSpec("USEnterDate", "USEnterDate", "date", extended=True),
    FieldSpec("USSchoolEnterDate", "USSchoolEnterDate", "date", extended=True),
    *[_s(f"UserCode{i}", 1 if i <= 8 else 2) for i in range(1, 14)],
)
#: read-only properties of a student (base object, then extended)
STUDENT_READ_ONLY = ("StudentID", "SchoolCode", "StudentNumber", "StateStudentID", "LastNameAlias",
                     "FirstNameAlias", "MiddleNameAlias", "StudentMobilePhone",
                     "StudentEmailAddress", "ParentEmailAddress", "SchoolLeaveDate", "FamilyKey")
STUDENT_EXTENDED_READ_ONLY = ("RecordAddedDateTime", "RecordAddedSystem")

CONTACT_FIELDS: tuple[FieldSpec, ...] = (
    _s("MailingName", 50), _s("NamePrefix", 5), _s("FirstName", 20), _s("LastName", 50),
    _s("MiddleName", 20), _s("NameSuffix", 10), _s("Address", 50), _s("AddressCity", 24),
    _s("AddressState", 2), _s("AddressZip", 5, read="AddressZipCode"), _s("AddressZipExt", 4),
    _s("RelationshipToStudentCode", 2), FieldSpec("HomePhone", "HomePhone", "phone"),
    FieldSpec("WorkPhone", "WorkPhone", "phone"), _s("WorkPhoneExt", 5),
    FieldSpec("CellPhone", "CellPhone", "phone"), FieldSpec("Pager", "Pager", "phone"),
    _s("EmailAddress", 50), FieldSpec("ContactOrder", "ContactOrder", "order"), _s("MiscCode", 2),
    FieldSpec("PrimaryContact", "PrimaryContact", "yn"), _s("MailTagCode", 1),
    FieldSpec("AccessToPortal", "AccessToPortal", "yn"),
    FieldSpec("LivesWithStudentIndicator", "LivesWithStudentIndicator", "ynblank"),
    FieldSpec("EducationalRightsHolder", "EducationalRightsHolder", "ynblank"),
    FieldSpec("EnrolledTheStudentIndicator", "EnrolledTheStudentIndicator", "ynblank"),
    _s("CorrespondenceLanguageCode", 2), _s("NotificationPreferenceCode", 1),
    _s("EmployerName", 50), _s("Occupation", 30),
)
CONTACT_READ_ONLY = ("StudentID", "SequenceNumber", "Comments", "PortalAccountID")

DEFAULT_FAULTS: dict[str, Any] = {
    # -- configuration of the simulated district
    "cert": DEFAULT_CERT,            # the AERIES-CERT value accepted (case sensitive)
    "default_year": DEFAULT_YEAR,    # the database a request without a usable year gets
    "available_years": list(AVAILABLE_YEARS),  # year databases that exist
    "no_insert_permission": [],      # fields silently ignored on insert ("BirthDate", "contact.EmailAddress")
    "no_update_permission": [],      # fields silently ignored on update
    "denied_areas": [],              # security areas not granted: "Student Data", "Contacts",
                                     # "School Information", or "Area:Insert" / "Area:Update"
    "not_implemented": [],           # path prefixes answering 501 (v5 Enhancements flag off)
    "reject_last_names": [],         # insert/update of a student or contact with this last name: 400
    # -- faults
    "latency_ms": 0,                 # added to every API request
    "error_rate": 0.0,               # share of API requests answered 500 (random)
    "timeout_rate": 0.0,             # share of API requests that hang ``hang_s`` (random)
    "hang_s": 5.0,                   # how long a "timeout" hangs before answering 500
    "fail_500": 0,                   # the next N API requests answer 500
    "timeouts": 0,                   # the next N API requests hang ``hang_s`` (not processed)
    "burst_429": 0,                  # the next N API requests answer 429
    "burst_503": 0,                  # the next N API requests answer 503
    "retry_after": None,             # Retry-After sent with 429/503 (None: no header)
    "malformed": 0,                  # the next N API requests answer 200 with a broken body
    "malformed_kind": "truncated",   # which broken body: see MALFORMED_KINDS
    "malformed_body": None,          # or exactly this text (JSON content type)
    "busy_writes": 0,                # the next N writes (Insert*/Update*) answer 503 "busy"
    "lost_answers": 0,               # the next N writes under fault_path are SAVED, then answered 500
    "drip": 0,                       # the next N API answers trickle out in small chunks
    "drip_ms": 50,                   # pause between two chunks of a dripped answer
    "drip_bytes": 16,                # size of a chunk of a dripped answer
    "page_error_at": 0,              # a student list starting at record N answers 500 once (0: off)
    "fault_path": "/",               # counted faults hit only paths starting with this
    "min_interval_ms": 0,            # a request throttle (0: off); throttled requests get 429
}
#: what the ``malformed`` fault answers (HTTP 200); the request is not processed
MALFORMED_KINDS = {
    "truncated": "JSON cut off in the middle",
    "disconnect": "Content-Length promises more than is sent, then the connection closes",
    "html": "an HTML page (text/html), as a proxy or a login page sends",
    "not_json": "plain text labelled application/json",
    "empty": "an empty body labelled application/json",
    "wrong_shape": "a JSON object where Aeries answers an array, and a string for an object",
    "missing_keys": "objects without any of Aeries' properties ({} or [{}])",
}
AREA_STUDENT, AREA_CONTACTS, AREA_SCHOOLS = "Student Data", "Contacts", "School Information"
UNAUTHORIZED = "Authorization has been denied for this request."
INT_RE = re.compile(r"^-?\d+$")
DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T00:00:00(?:\.0+)?)?$")


class BadRequest(ValueError):
    """A write Aeries refuses with 400 and this message."""


# ----------------------------------------------------------------------------- values

def _blank_doc(fields: Iterable[FieldSpec], read_only: Iterable[str]) -> dict:
    doc: dict[str, Any] = {}
    for f in fields:
        doc[f.read] = _default(f)
    for name in read_only:
        doc[name] = 0 if name in ("StudentID", "SchoolCode", "StudentNumber", "FamilyKey",
                                  "SequenceNumber") else ("" if not name.endswith("Date") else None)
    return doc


def _default(f: FieldSpec) -> Any:
    if f.kind in ("int16", "grade"):
        return 0
    if f.kind == "order":
        return 0
    if f.kind == "date":
        return None
    return ""


def _coerce(f: FieldSpec, value: Any) -> Any:
    """Bind one posted value as Aeries would, or raise BadRequest."""
    name = f.write
    if value is None:
        return _default(f)
    if f.kind == "str":
        if isinstance(value, (dict, list)):
            raise BadRequest(f"The request is invalid: {name} must be a string.")
        text = value if isinstance(value, str) else (str(value).lower() if isinstance(value, bool) else str(value))
        if f.limit is not None and len(text) > f.limit:
            raise BadRequest(f"The field {name} must be a string with a maximum length of {f.limit}.")
        return text
    if f.kind in ("int16", "grade", "order"):
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            raise BadRequest(f"The request is invalid: {name} must be a number.")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str):
            if value.strip() == "":
                return _default(f)
            if not INT_RE.match(value.strip()):
                raise BadRequest(f"The request is invalid: could not convert '{value}' to {name}.")
            value = int(value.strip())
        if not isinstance(value, int):
            raise BadRequest(f"The request is invalid: {name} must be a whole number.")
        if f.kind == "grade" and not -2 <= value <= 18:
            raise BadRequest(f"The field {name} must be between -2 and 18.")
        if f.kind == "int16" and not -32768 <= value <= 32767:
            raise BadRequest(f"The request is invalid: {name} is outside the range of an Int16.")
        if f.kind == "order" and value < 1:
            raise BadRequest(f"The field {name} must be 1 or more.")
        return value
    if f.kind == "date":
        if value == "":
            return None
        m = DATE_RE.match(str(value).strip()) if isinstance(value, str) else None
        try:
            if not m:
                raise ValueError
            day = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            raise BadRequest(f"The request is invalid: could not convert '{value}' to a date "
                             f"for {name}.") from None
        return day.isoformat() + "T00:00:00"
    if f.kind == "phone":
        if isinstance(value, (dict, list, bool)):
            raise BadRequest(f"The request is invalid: {name} must be a string.")
        digits = re.sub(r"\D", "", str(value))
        if len(digits) > 10:
            raise BadRequest(f"The field {name} must be a phone number of at most 10 digits.")
        return digits
    if f.kind in ("yn", "ynblank"):
        text = str(value).strip().upper()
        allowed = ("Y", "N") if f.kind == "yn" else ("Y", "N", "")
        if text not in allowed:
            raise BadRequest(f"The field {name} must be {' or '.join(a or 'blank' for a in allowed)}.")
        return text
    raise AssertionError(f.kind)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and INT_RE.match(value.strip()):
        return int(value.strip())
    return None


def _permission_names(names: Iterable[str], contact: bool) -> set[str]:
    """Permission lists name fields by write or read name; contacts with "contact."."""
    out = set()
    for n in names or ():
        n = str(n)
        if n.lower().startswith(("contact.", "con.")):
            if contact:
                out.add(n.split(".", 1)[1].lower())
        elif n.lower().startswith(("student.", "stu.")):
            if not contact:
                out.add(n.split(".", 1)[1].lower())
        elif not contact:
            out.add(n.lower())
    return out


def apply_write(doc: dict, body: dict, fields: tuple[FieldSpec, ...], ignored: set[str]) -> dict:
    """Bind a posted body onto a stored document (read names). Unknown properties and
    fields without permission are ignored silently; a bad value raises BadRequest."""
    doc = dict(doc)
    by_write = {f.write: f for f in fields}
    for key, value in body.items():
        f = by_write.get(key)
        if f is None:
            continue  # not a property of the write model: ASP.NET ignores it
        bound = _coerce(f, value)
        if f.write.lower() in ignored or f.read.lower() in ignored:
            continue  # no field permission: silently not written
        doc[f.read] = bound
    return doc


# ----------------------------------------------------------------------------- storage

class SandboxStore:
    """Year databases of students and contacts in SQLite (a file or ``:memory:``),
    plus faults and a request log."""

    def __init__(self, db: str = ":memory:", *, faults: dict | None = None,
                 seed: int | None = None, seed_count: int = 0):
        self.db_path = db
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        if db != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript("""
            CREATE TABLE IF NOT EXISTS students (
                year INTEGER NOT NULL, student_id INTEGER NOT NULL, school_code INTEGER NOT NULL,
                student_number INTEGER NOT NULL, doc TEXT NOT NULL,
                PRIMARY KEY (year, school_code, student_number));
            CREATE INDEX IF NOT EXISTS students_id ON students(year, student_id);
            CREATE TABLE IF NOT EXISTS contacts (
                year INTEGER NOT NULL, student_id INTEGER NOT NULL, seq INTEGER NOT NULL,
                doc TEXT NOT NULL, PRIMARY KEY (year, student_id, seq));
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        """)
        self.base_faults = {**copy.deepcopy(DEFAULT_FAULTS), **copy.deepcopy(faults or {})}
        self.faults = copy.deepcopy(self.base_faults)
        self.seed = seed
        self.seed_count = seed_count
        self.rng = random.Random(seed)
        self.requests: collections.deque = collections.deque(maxlen=20000)
        self.generation = 0
        self._last_api_request = 0.0

    # -- faults and configuration
    def set_faults(self, **changes: Any) -> dict:
        unknown = [k for k in changes if k not in DEFAULT_FAULTS]
        if unknown:
            raise KeyError(unknown[0])
        if "malformed_kind" in changes and changes["malformed_kind"] not in MALFORMED_KINDS:
            raise ValueError(f"malformed_kind must be one of {', '.join(MALFORMED_KINDS)}")
        if "available_years" in changes:
            years = changes["available_years"]
            if not isinstance(years, list) or any(_as_int(y) is None for y in years):
                raise ValueError("available_years must be a list of years such as [2024, 2025]")
            changes["available_years"] = sorted({_as_int(y) for y in years})
        if "default_year" in changes and _as_int(changes["default_year"]) is None:
            raise ValueError("default_year must be a year such as 2025")
        with self.lock:
            for key, value in changes.items():
                self.faults[key] = copy.deepcopy(value)
            if _as_int(self.faults["default_year"]) not in self.faults["available_years"]:
                self.faults["available_years"] = sorted(
                    {*self.faults["available_years"], _as_int(self.faults["default_year"])})
            return copy.deepcopy(self.faults)

    def take(self, counter: str) -> bool:
        """Consume one unit of a counted fault; True when it applies."""
        with self.lock:
            if self.faults.get(counter, 0) > 0:
                self.faults[counter] -= 1
                return True
            return False

    def throttle_wait(self) -> float:
        interval = float(self.faults.get("min_interval_ms") or 0) / 1000.0
        if interval <= 0:
            return 0.0
        with self.lock:
            now = time.monotonic()
            left = self._last_api_request + interval - now
            if left > 0:
                return left
            self._last_api_request = now
            return 0.0

    def year_for(self, requested: Any) -> int:
        """The year database a request gets: the one it names when the server has it,
        otherwise (missing, invalid or unknown) the default year, silently."""
        default = int(self.faults["default_year"])
        year = _as_int(requested) if requested is not None else None
        if year is not None and year in self.faults["available_years"]:
            return year
        return default

    def empty(self) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM students")
            self.conn.execute("DELETE FROM contacts")
            self.conn.execute("DELETE FROM counters")

    def reset(self) -> None:
        """Back to the start: the seeded students only, start faults, no request log."""
        with self.lock:
            self.empty()
            self.faults = copy.deepcopy(self.base_faults)
            self.requests.clear()
            self._last_api_request = 0.0
            self.generation += 1
            self.rng = random.Random(self.seed)
            if self.seed_count:
                seed_students(self, self.seed_count, seed=self.seed or 0)

    # -- counters
    def next_value(self, name: str, start: int) -> int:
        row = self.conn.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        value = start if row is None else row[0] + 1
        self.conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)", (name, value))
        return value

    def next_student_id(self) -> int:
        row = self.conn.execute("SELECT MAX(student_id) FROM students").fetchone()
        highest = max(row[0] or 0, FIRST_STUDENT_ID - 1)
        counter = self.conn.execute("SELECT value FROM counters WHERE name='student_id'").fetchone()
        value = max(highest, counter[0] if counter else 0) + 1
        self.conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES ('student_id', ?)", (value,))
        return value

    def next_student_number(self, year: int, school: int) -> int:
        row = self.conn.execute("SELECT MAX(student_number) FROM students WHERE year=? AND school_code=?",
                                (year, school)).fetchone()
        return (row[0] or 0) + 1

    # -- students
    def insert_student(self, year: int, doc: dict) -> dict:
        self.conn.execute("INSERT INTO students (year, student_id, school_code, student_number, doc)"
                          " VALUES (?,?,?,?,?)", (year, doc["StudentID"], doc["SchoolCode"],
                                                  doc["StudentNumber"], json.dumps(doc)))
        return doc

    def save_student(self, year: int, doc: dict) -> None:
        self.conn.execute("UPDATE students SET doc=? WHERE year=? AND school_code=? AND student_number=?",
                          (json.dumps(doc), year, doc["SchoolCode"], doc["StudentNumber"]))

    def students(self, year: int, *, school: int | None = None, student_id: int | None = None,
                 grade: int | None = None, number: int | None = None, limit: int | None = None,
                 offset: int = 0) -> list[dict]:
        where, args = ["year=?"], [year]
        if school is not None:
            where.append("school_code=?")
            args.append(school)
        if student_id is not None:
            where.append("student_id=?")
            args.append(student_id)
        if number is not None:
            where.append("student_number=?")
            args.append(number)
        if grade is not None:
            where.append("json_extract(doc, '$.Grade') = ?")
            args.append(grade)
            grade = None
        page = ""
        if limit is not None:
            page = " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self.lock:
            rows = self.conn.execute(f"SELECT doc FROM students WHERE {' AND '.join(where)}"
                                     f" ORDER BY student_id, school_code{page}", args).fetchall()
        docs = [json.loads(r[0]) for r in rows]
        if grade is not None:
            docs = [d for d in docs if d.get("Grade") == grade]
        return docs

    def count(self, year: int | None = None) -> int:
        """Distinct StudentIDs (in one year database, or in all of them)."""
        with self.lock:
            if year is None:
                return self.conn.execute("SELECT COUNT(DISTINCT student_id) FROM students").fetchone()[0]
            return self.conn.execute("SELECT COUNT(DISTINCT student_id) FROM students WHERE year=?",
                                     (year,)).fetchone()[0]

    # -- contacts
    def contacts(self, year: int, student_ids: Iterable[int] | None = None) -> list[dict]:
        with self.lock:
            if student_ids is None:
                rows = self.conn.execute("SELECT doc FROM contacts WHERE year=? ORDER BY student_id, seq",
                                         (year,)).fetchall()
            else:
                ids = list(student_ids)
                if not ids:
                    return []
                marks = ",".join("?" for _ in ids)
                rows = self.conn.execute(f"SELECT doc FROM contacts WHERE year=? AND student_id IN ({marks})"
                                         " ORDER BY student_id, seq", (year, *ids)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def save_contact(self, year: int, doc: dict, *, new: bool) -> None:
        if new:
            self.conn.execute("INSERT INTO contacts (year, student_id, seq, doc) VALUES (?,?,?,?)",
                              (year, doc["StudentID"], doc["SequenceNumber"], json.dumps(doc)))
        else:
            self.conn.execute("UPDATE contacts SET doc=? WHERE year=? AND student_id=? AND seq=?",
                              (json.dumps(doc), year, doc["StudentID"], doc["SequenceNumber"]))

    # -- admin
    def dump(self) -> dict:
        with self.lock:
            years: dict[str, Any] = {}
            for (year,) in self.conn.execute("SELECT DISTINCT year FROM students UNION "
                                             "SELECT DISTINCT year FROM contacts ORDER BY 1").fetchall():
                years[str(year)] = {"students": self.students(year), "contacts": self.contacts(year)}
            return {"default_year": self.faults["default_year"],
                    "available_years": self.faults["available_years"], "years": years}

    def renumber(self, *, mode: str = "shift", offset: int | None = None) -> dict[int, int]:
        """Give every student a new StudentID (all years; contacts follow), as after a
        restore from a backup. ``shift``: new IDs above every old one (``offset`` apart);
        ``shuffle``: the same IDs dealt out to other students, so an old ID now names
        another child."""
        with self.lock:
            ids = [r[0] for r in self.conn.execute(
                "SELECT DISTINCT student_id FROM students ORDER BY student_id").fetchall()]
            if not ids:
                return {}
            if mode == "shuffle":
                new = ids[1:] + ids[:1] if len(ids) > 1 else ids
            elif mode == "shift":
                step = offset if offset is not None else (max(ids) - min(ids) + 1000)
                if step <= 0:
                    raise ValueError("offset must be positive")
                new = [i + step for i in ids]
            else:
                raise ValueError("mode must be shift or shuffle")
            mapping = dict(zip(ids, new))
            self.conn.execute("BEGIN")
            try:
                rows = self.conn.execute("SELECT year, school_code, student_number, doc FROM students").fetchall()
                for year, sc, sn, doc_text in rows:
                    doc = json.loads(doc_text)
                    doc["StudentID"] = mapping[doc["StudentID"]]
                    self.conn.execute("UPDATE students SET student_id=?, doc=? WHERE year=? AND "
                                      "school_code=? AND student_number=?",
                                      (doc["StudentID"], json.dumps(doc), year, sc, sn))
                rows = self.conn.execute("SELECT year, student_id, seq, doc FROM contacts").fetchall()
                self.conn.execute("DELETE FROM contacts")
                for year, sid, seq, doc_text in rows:
                    doc = json.loads(doc_text)
                    doc["StudentID"] = mapping.get(sid, sid)
                    self.conn.execute("INSERT INTO contacts (year, student_id, seq, doc) VALUES (?,?,?,?)",
                                      (year, doc["StudentID"], seq, json.dumps(doc)))
                self.conn.execute("DELETE FROM counters WHERE name='student_id'")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return mapping


# ----------------------------------------------------------------------------- rendering

def render_student(doc: dict, *, extended: bool = False) -> dict:
    """A stored student as Aeries answers it (base object, or with the extended fields)."""
    if extended:
        return dict(doc)
    hidden = {f.read for f in STUDENT_FIELDS if f.extended} | set(STUDENT_EXTENDED_READ_ONLY)
    return {k: v for k, v in doc.items() if k not in hidden}


def malformed_response(kind: str | None, body: str | None, array: bool) -> Response:
    if body is not None:
        return Response(str(body), status=200, content_type="application/json")
    if kind == "disconnect":
        text = '[{"StudentID": 99400001, "LastName"'
        r = Response(text, status=200, content_type="application/json")
        r.headers["Content-Length"] = str(len(text) + 512)
        r.headers["Connection"] = "close"
        return r
    if kind == "html":
        return Response("<!DOCTYPE html><html><head><title>Aeries: Sign In</title></head><body>"
                        "<h1>Sign in to Aeries</h1></body></html>",
                        status=200, content_type="text/html; charset=utf-8")
    if kind == "not_json":
        return Response("Object reference not set to an instance of an object.", status=200,
                        content_type="application/json")
    if kind == "empty":
        return Response("", status=200, content_type="application/json")
    if kind == "wrong_shape":
        text = json.dumps({"Data": []}) if array else json.dumps("unexpected")
        return Response(text, status=200, content_type="application/json")
    if kind == "missing_keys":
        return Response("[{}]" if array else "{}", status=200, content_type="application/json")
    return Response('[{"StudentID": 99400001, "LastName": "Riv', status=200,
                    content_type="application/json")


def _drip(data: bytes, size: int, pause: float):
    for i in range(0, len(data), max(1, size)):
        if i:
            time.sleep(pause)
        yield data[i:i + max(1, size)]


# ----------------------------------------------------------------------------- the app

#: answers that are arrays (for the wrong_shape / missing_keys faults)
_ARRAY_PATH = re.compile(r"^/api/v[45]/(schools/?$|schools/\d+/(students|contacts)|codes/|UpdateStudent/|DeleteContact/)",
                         re.IGNORECASE)


def create_app(store: SandboxStore) -> Flask:
    app = Flask("sis_aeries.sandbox")
    app.config["SANDBOX_STORE"] = store
    app.url_map.strict_slashes = False
    app.json.sort_keys = False  # answer properties in Aeries' order, not sorted

    def fail(status: int, message: str, **extra) -> Response:
        response = jsonify({"Message": message, **extra})
        response.status_code = status
        return response

    def retry_after_headers() -> dict:
        value = store.faults.get("retry_after")
        return {"Retry-After": str(value)} if value is not None else {}

    def year() -> int:
        for key, value in request.args.items():
            if key.lower() == "databaseyear":
                return store.year_for(value)
        return store.year_for(None)

    def arg(name: str) -> str | None:
        for key, value in request.args.items():
            if key.lower() == name.lower():
                return value
        return None

    def area_denied(area: str, access: str | None = None) -> Response | None:
        denied = {str(a).lower() for a in store.faults.get("denied_areas") or ()}
        if area.lower() in denied or (access and f"{area}:{access}".lower() in denied):
            what = f"{access} access to " if access else ""
            return fail(401, f"The certificate does not have {what}the {area} security area.")
        return None

    def lost_answer() -> bool:
        """The ``lost_answers`` fault, for writes under ``fault_path``."""
        return request.path.startswith(store.faults.get("fault_path") or "/") and store.take("lost_answers")

    def body_object() -> dict | Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return fail(400, "The request is invalid: the body must be a JSON object.")
        return body

    @app.before_request
    def _before():
        g.started = time.monotonic()
        g.wall_started = time.time()
        g.generation = store.generation
        path = request.path
        if path.startswith("/sandbox"):
            return None
        faults = store.faults
        if faults["latency_ms"]:
            time.sleep(faults["latency_ms"] / 1000.0)
        if path.startswith(faults.get("fault_path") or "/"):
            if store.take("timeouts"):
                time.sleep(faults["hang_s"])
                return fail(500, "sandbox: simulated timeout (the request was not processed)")
            if store.take("fail_500"):
                return fail(500, "An error has occurred.")
            if store.take("burst_429"):
                r = fail(429, "Too many requests.")
                r.headers.update(retry_after_headers())
                return r
            if store.take("burst_503"):
                r = fail(503, "The service is unavailable.")
                r.headers.update(retry_after_headers())
                return r
            if store.take("malformed"):
                request.get_data()  # read the body first (see the PowerSchool sandbox)
                return malformed_response(faults.get("malformed_kind"), faults.get("malformed_body"),
                                          bool(_ARRAY_PATH.match(path)))
            g.drip = store.take("drip")
        if request.method == "POST" and re.search(r"/(Insert|Update)(Student|Contact)", path) \
                and store.take("busy_writes"):
            request.get_data()
            r = fail(503, "The server is busy processing other requests. Please try again later.")
            r.headers["Retry-After"] = str(store.faults.get("retry_after") or 0)
            return r
        if faults["timeout_rate"] and store.rng.random() < faults["timeout_rate"]:
            time.sleep(faults["hang_s"])
            return fail(500, "sandbox: simulated timeout (the request was not processed)")
        if faults["error_rate"] and store.rng.random() < faults["error_rate"]:
            return fail(500, "An error has occurred.")
        if path.lower().startswith("/api/"):
            wait = store.throttle_wait()
            if wait > 0:
                r = fail(429, "Too many requests.")
                r.headers.update(retry_after_headers())
                return r
            for prefix in store.faults.get("not_implemented") or ():
                if path.lower().startswith(str(prefix).lower()):
                    return fail(501, "This endpoint is not available: the district has not turned "
                                     "on the v5 Enhancements feature flag (Admin > Feature Flags).")
            if path.lower().rstrip("/") not in ("/api/v5/systeminfo", "/api/v4/systeminfo",
                                                "/api/systeminfo"):
                if request.headers.get("AERIES-CERT", "") != store.faults["cert"]:
                    return fail(401, UNAUTHORIZED)
        return None

    @app.after_request
    def _after(response):
        if g.get("drip") and response.status_code < 400 and not response.is_streamed:
            data = response.get_data()
            pause = float(store.faults.get("drip_ms") or 0) / 1000.0
            response.response = _drip(data, int(store.faults.get("drip_bytes") or 16), pause)
            response.headers["Content-Length"] = str(len(data))
        if g.get("generation") == store.generation and not request.path.startswith("/sandbox"):
            store.requests.append({
                "method": request.method, "path": request.path, "mount": request.script_root,
                "query": request.query_string.decode("latin-1"), "status": response.status_code,
                "cert": "valid" if request.headers.get("AERIES-CERT") == store.faults["cert"]
                else ("missing" if not request.headers.get("AERIES-CERT") else "wrong"),
                "ms": round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 1),
                # wall-clock span, for counting requests in flight (benchmarks/aeries_export.py)
                "start": g.get("wall_started"), "end": time.time()})
        return response

    @app.errorhandler(404)
    def _404(e):
        return fail(404, "No HTTP resource was found that matches the request URI.")

    @app.errorhandler(405)
    def _405(e):
        return fail(405, "The requested resource does not support this http method.")

    # -- system
    @app.get("/api/v5/systeminfo")
    @app.get("/api/v4/systeminfo")
    @app.get("/api/systeminfo")
    def systeminfo():
        y = year()
        return jsonify({"AeriesVersion": AERIES_VERSION, "DatabaseYear": f"{y}-{y + 1}",
                        "AvailableDatabaseYears": [f"{a}-{a + 1}" for a in store.faults["available_years"]],
                        "LocalTimeZoneName": "Pacific Standard Time",
                        "CurrentDateTime": dt.datetime.now().replace(microsecond=0).isoformat()})

    # -- schools and codes
    @app.get("/api/<any(v4,v5):v>/schools")
    def schools(v):
        denied = area_denied(AREA_SCHOOLS)
        if denied:
            return denied
        return jsonify(copy.deepcopy(SCHOOLS))

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>")
    def school(v, sc):
        denied = area_denied(AREA_SCHOOLS)
        if denied:
            return denied
        s = next((s for s in SCHOOLS if s["SchoolCode"] == sc), None)
        return jsonify(copy.deepcopy(s)) if s else fail(404, f"School {sc} was not found.")

    @app.get("/api/<any(v4,v5):v>/codes/<table>/<fieldname>")
    def codes(v, table, fieldname):
        t = TABLE_ALIASES.get(table.lower())
        if t is None:
            return fail(404, f"Table {table} was not found.")
        name = fieldname.lower()
        code = FIELD_ALIASES[t].get(name)
        if code is None and name.endswith("code"):
            code = FIELD_ALIASES[t].get(name[:-4])
        rows = CODE_SETS.get((t, code)) if code else None
        if rows is None:
            return fail(404, f"No code set was found for {table}.{fieldname}.")
        return jsonify([{"Table": t, "Field": code, **r} for r in rows])

    # -- students: reading
    def _school_or_404(sc: int) -> Response | None:
        if not any(s["SchoolCode"] == sc for s in SCHOOLS):
            return fail(404, f"School {sc} was not found.")
        return None

    def _list(sc: int, **filters) -> Response:
        denied = area_denied(AREA_STUDENT) or _school_or_404(sc)
        if denied:
            return denied
        # StartingRecord/EndingRecord: 1-based, inclusive record numbers
        start, end = _as_int(arg("StartingRecord")), _as_int(arg("EndingRecord"))
        at = int(store.faults.get("page_error_at") or 0)
        if at and (start or 1) == at:
            with store.lock:
                store.faults["page_error_at"] = 0
            return fail(500, "An error has occurred. (sandbox: page_error_at)")
        limit, offset = None, 0
        if start is not None or end is not None:
            offset = max(1, start or 1) - 1
            limit = max(0, end - offset) if end is not None else -1
        docs = store.students(year(), school=sc, limit=limit, offset=offset, **filters)
        return jsonify([render_student(d) for d in docs])

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/students")
    def school_students(v, sc):
        return _list(sc)

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/students/<int:sid>")
    def one_student(v, sc, sid):
        return _list(sc, student_id=sid)

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/students/grade/<grade>")
    def grade_students(v, sc, grade):
        g_ = _as_int(grade)
        if g_ is None:
            return fail(400, f"The request is invalid: '{grade}' is not a grade level.")
        return _list(sc, grade=g_)

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/students/sn/<int:sn>")
    def number_students(v, sc, sn):
        return _list(sc, number=sn)

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/students/<int:sid>/extended")
    def extended_student(v, sc, sid):
        denied = area_denied(AREA_STUDENT) or _school_or_404(sc)
        if denied:
            return denied
        docs = store.students(year(), school=sc, student_id=sid)
        return jsonify([render_student(d, extended=True) for d in docs])

    # -- students: writing
    def _rejected(body: dict, doc: dict | None = None) -> Response | None:
        last = body.get("LastName", (doc or {}).get("LastName"))
        if isinstance(last, str) and last.lower() in {str(x).lower() for x in store.faults.get("reject_last_names") or ()}:
            return fail(400, f"LastName '{last}' was rejected by a district validation rule (sandbox fault).")
        return None

    @app.post("/api/<any(v4,v5):v>/schools/<int:sc>/InsertStudent")
    def insert_student(v, sc):
        denied = area_denied(AREA_STUDENT, "Insert")
        if denied:
            return denied
        body = body_object()
        if isinstance(body, Response):
            return body
        school = next((s for s in SCHOOLS if s["SchoolCode"] == sc), None)
        if school is None or sc == 0:
            return fail(400, f"Invalid School Code: {sc}.")
        rejected = _rejected(body)
        if rejected:
            return rejected
        y = year()
        ignored = _permission_names(store.faults.get("no_insert_permission"), contact=False)
        with store.lock:
            try:
                doc = apply_write(_blank_doc(STUDENT_FIELDS, (*STUDENT_READ_ONLY, *STUDENT_EXTENDED_READ_ONLY)),
                                  body, STUDENT_FIELDS, ignored)
            except BadRequest as exc:
                return fail(400, str(exc))
            store.conn.execute("BEGIN")
            try:
                doc.update({"StudentID": store.next_student_id(), "SchoolCode": sc,
                            "StudentNumber": store.next_student_number(y, sc),
                            "RecordAddedDateTime": dt.datetime.now().replace(microsecond=0).isoformat(),
                            "RecordAddedSystem": "API"})
                store.insert_student(y, doc)
                store.conn.execute("COMMIT")
            except BaseException:
                store.conn.execute("ROLLBACK")
                raise
        if lost_answer():
            return fail(500, "An error has occurred. (sandbox: saved, answer lost)")
        return jsonify(render_student(doc))

    @app.post("/api/<any(v4,v5):v>/UpdateStudent/<sid>")
    def update_student(v, sid):
        denied = area_denied(AREA_STUDENT, "Update")
        if denied:
            return denied
        body = body_object()
        if isinstance(body, Response):
            return body
        y = year()
        student_id = _as_int(sid)
        with store.lock:
            docs = store.students(y, student_id=student_id) if student_id is not None else []
            if not docs:
                return fail(400, "Invalid Student ID")
            rejected = _rejected(body, docs[0])
            if rejected:
                return rejected
            ignored = _permission_names(store.faults.get("no_update_permission"), contact=False)
            try:
                updated = [apply_write(d, body, STUDENT_FIELDS, ignored) for d in docs]
            except BadRequest as exc:
                return fail(400, str(exc))
            store.conn.execute("BEGIN")
            try:
                for d in updated:
                    store.save_student(y, d)
                store.conn.execute("COMMIT")
            except BaseException:
                store.conn.execute("ROLLBACK")
                raise
        if lost_answer():
            return fail(500, "An error has occurred. (sandbox: saved, answer lost)")
        return jsonify([render_student(d) for d in updated])

    # -- contacts
    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/contacts")
    def school_contacts(v, sc):
        denied = area_denied(AREA_CONTACTS) or _school_or_404(sc)
        if denied:
            return denied
        y = year()
        ids = sorted({d["StudentID"] for d in store.students(y, school=sc)})
        return jsonify(store.contacts(y, ids))

    @app.get("/api/<any(v4,v5):v>/schools/<int:sc>/contacts/<int:sid>")
    def student_contacts(v, sc, sid):
        # With a StudentID the SchoolCode is ignored (FAQ 14000166308): any value works.
        denied = area_denied(AREA_CONTACTS)
        if denied:
            return denied
        return jsonify(store.contacts(year(), [sid]))

    @app.post("/api/<any(v4,v5):v>/InsertContact/<sid>")
    def insert_contact(v, sid):
        denied = area_denied(AREA_CONTACTS, "Insert")
        if denied:
            return denied
        body = body_object()
        if isinstance(body, Response):
            return body
        y = year()
        student_id = _as_int(sid)
        ignored = _permission_names(store.faults.get("no_insert_permission"), contact=True)
        with store.lock:
            if student_id is None or not store.students(y, student_id=student_id):
                return fail(400, "Invalid Student ID")
            rejected = _rejected(body)
            if rejected:
                return rejected
            try:
                doc = apply_write(_blank_doc(CONTACT_FIELDS, CONTACT_READ_ONLY), body, CONTACT_FIELDS, ignored)
            except BadRequest as exc:
                return fail(400, str(exc))
            seqs = [c["SequenceNumber"] for c in store.contacts(y, [student_id])]
            doc["StudentID"] = student_id
            doc["SequenceNumber"] = max(seqs, default=0) + 1
            if not doc.get("ContactOrder"):
                doc["ContactOrder"] = len(seqs) + 1
            store.save_contact(y, doc, new=True)
        if lost_answer():
            return fail(500, "An error has occurred. (sandbox: saved, answer lost)")
        return jsonify(doc)

    @app.post("/api/<any(v4,v5):v>/UpdateContact/<sid>/<sq>")
    def update_contact(v, sid, sq):
        denied = area_denied(AREA_CONTACTS, "Update")
        if denied:
            return denied
        body = body_object()
        if isinstance(body, Response):
            return body
        y = year()
        student_id, seq = _as_int(sid), _as_int(sq)
        ignored = _permission_names(store.faults.get("no_update_permission"), contact=True)
        with store.lock:
            if student_id is None or not store.students(y, student_id=student_id):
                return fail(400, "Invalid Student ID")
            current = next((c for c in store.contacts(y, [student_id]) if c["SequenceNumber"] == seq), None)
            if current is None:
                return fail(400, f"Invalid Sequence Number: contact {sq} of student {student_id} was not found.")
            rejected = _rejected(body, current)
            if rejected:
                return rejected
            try:
                doc = apply_write(current, body, CONTACT_FIELDS, ignored)
            except BadRequest as exc:
                return fail(400, str(exc))
            store.save_contact(y, doc, new=False)
        if lost_answer():
            return fail(500, "An error has occurred. (sandbox: saved, answer lost)")
        return jsonify(doc)

    @app.route("/api/<any(v4,v5):v>/DeleteContact/<sid>/<sq>", methods=["DELETE", "GET"])
    def delete_contact(v, sid, sq):
        denied = area_denied(AREA_CONTACTS, "Delete")
        if denied:
            return denied
        y = year()
        student_id, seq = _as_int(sid), _as_int(sq)
        with store.lock:
            current = [c for c in store.contacts(y, [student_id])] if student_id is not None else []
            if not any(c["SequenceNumber"] == seq for c in current):
                return fail(404, f"Contact {sq} of student {sid} was not found.")
            store.conn.execute("DELETE FROM contacts WHERE year=? AND student_id=? AND seq=?",
                               (y, student_id, seq))
            return jsonify(store.contacts(y, [student_id]))

    # -- sandbox admin (only the sandbox has these)
    @app.get("/sandbox/faults")
    @app.get("/sandbox/config")
    def get_faults():
        return jsonify(store.faults)

    @app.post("/sandbox/faults")
    @app.post("/sandbox/config")
    def post_faults():
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict):
            return fail(400, "Send a JSON object of faults.")
        unknown = sorted(k for k in changes if k not in DEFAULT_FAULTS)
        if unknown:
            return fail(400, f"Unknown faults: {', '.join(unknown)}", known=sorted(DEFAULT_FAULTS))
        try:
            return jsonify(store.set_faults(**changes))
        except ValueError as exc:
            return fail(400, str(exc), kinds=sorted(MALFORMED_KINDS))

    @app.get("/sandbox/dump")
    def dump():
        return jsonify(store.dump())

    @app.get("/sandbox/requests")
    def requests_log():
        return jsonify({"requests": list(store.requests)})

    @app.post("/sandbox/reset")
    def reset():
        store.reset()
        return jsonify({"ok": True})

    @app.post("/sandbox/empty")
    def empty():
        store.empty()
        return jsonify({"ok": True})

    @app.post("/sandbox/renumber")
    def renumber():
        body = request.get_json(silent=True) or {}
        try:
            mapping = store.renumber(mode=str(body.get("mode", "shift")), offset=_as_int(body.get("offset")))
        except ValueError as exc:
            return fail(400, str(exc))
        return jsonify({"renumbered": len(mapping), "ids": {str(k): v for k, v in mapping.items()}})

    @app.post("/sandbox/students/<int:sid>/change")
    def change_student(sid):
        """Edit a student as staff would in Aeries (read names; every school record;
        no permission checks): ``{"fields": {"LastName": "..."}, "year": 2025}``."""
        body = request.get_json(silent=True) or {}
        fields_ = body.get("fields")
        if not isinstance(fields_, dict) or not fields_:
            return fail(400, 'Send {"fields": {ReadName: value, ...}}.')
        y = store.year_for(body.get("year"))
        with store.lock:
            docs = store.students(y, student_id=sid)
            if not docs:
                return fail(404, f"Student {sid} was not found in {y}.")
            for d in docs:
                d.update({k: v for k, v in fields_.items() if k not in ("StudentID", "SchoolCode", "StudentNumber")})
                store.save_student(y, d)
        return jsonify([render_student(d, extended=True) for d in docs])

    @app.post("/sandbox/seed")
    def seed():
        body = request.get_json(silent=True) or {}
        n, s = _as_int(body.get("students")), _as_int(body.get("seed", 0))
        if n is None or n < 0 or s is None:
            return fail(400, 'Send {"students": n, "seed": s}.')
        return jsonify({"seeded": seed_students(store, n, seed=s, year=_as_int(body.get("year")))})

    return app


# ----------------------------------------------------------------------------- seeding

FIRST_NAMES = ["Ana", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jada",
               "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tomas"]
LAST_NAMES = ["Alvarez", "Brown", "Chen", "Duarte", "Evans", "Fischer", "Garcia", "Huang", "Ibarra",
              "Jones", "Kim", "Lopez", "Martinez", "Nguyen", "Okafor", "Patel", "Rivera", "Smith"]


def seed_students(store: SandboxStore, n: int, *, seed: int = 0, year: int | None = None) -> int:
    """Store ``n`` example students in a year database (the default one), fast and the
    same for the same ``seed``: names, birth dates in line with the grade, one record
    at a school that teaches the grade; about one in twenty also has an inactive record
    at another school (a transfer), and most have one or two contacts."""
    rng = random.Random(seed)
    y = year if year is not None else int(store.faults["default_year"])
    active = [s for s in SCHOOLS if not s["InactiveStatusCode"]]
    student_rows, contact_rows = [], []
    with store.lock:
        next_id = store.next_student_id()
        numbers: dict[int, int] = {}
        for i in range(n):
            sid = next_id + i
            school = active[rng.randrange(len(active))]
            grade = rng.randint(max(school["LowGradeLevel"], -1), school["HighGradeLevel"])
            birth = dt.date(y - 5 - grade, 1, 1) + dt.timedelta(days=rng.randrange(365))
            first, last = FIRST_NAMES[rng.randrange(len(FIRST_NAMES))], LAST_NAMES[rng.randrange(len(LAST_NAMES))]
            base = _blank_doc(STUDENT_FIELDS, (*STUDENT_READ_ONLY, *STUDENT_EXTENDED_READ_ONLY))
            base.update({"StudentID": sid, "LastName": last, "FirstName": first,
                         "Gender": "MF"[rng.randrange(2)], "Grade": grade, "NextGrade": min(grade + 1, 12),
                         "Birthdate": birth.isoformat() + "T00:00:00",
                         "HomePhone": f"555{rng.randrange(10**7):07d}",
                         "HomeLanguageCode": ["00", "00", "01", "02"][rng.randrange(4)],
                         "EthnicityCode": "YN"[rng.randrange(2)], "RaceCode1": "700",
                         "ParentGuardianName": f"{FIRST_NAMES[rng.randrange(len(FIRST_NAMES))]} {last}",
                         "MailingAddress": f"{rng.randint(1, 9999)} Oak St", "MailingAddressCity": "Eagle Rock",
                         "MailingAddressState": "CA", "MailingAddressZipCode": "99999",
                         "SchoolEnterDate": f"{y}-08-20T00:00:00", "DistrictEnterDate": f"{y - grade}-08-20T00:00:00",
                         "StateStudentID": f"{rng.randrange(10**9, 10**10)}",
                         "RecordAddedDateTime": f"{y}-06-01T08:00:00", "RecordAddedSystem": "Seed"})
            records = [(school, "")]
            if rng.random() < 0.05:
                other = [s for s in active if s is not school]
                records.append((other[rng.randrange(len(other))], "I"))
            for s, inactive in records:
                sc = s["SchoolCode"]
                if sc not in numbers:
                    numbers[sc] = store.next_student_number(y, sc)
                doc = dict(base, SchoolCode=sc, StudentNumber=numbers[sc], InactiveStatusCode=inactive)
                numbers[sc] += 1
                student_rows.append((y, sid, sc, doc["StudentNumber"], json.dumps(doc)))
            for seq in range(1, 1 + rng.choice((0, 1, 1, 2))):
                c = _blank_doc(CONTACT_FIELDS, CONTACT_READ_ONLY)
                c.update({"StudentID": sid, "SequenceNumber": seq, "ContactOrder": seq,
                          "FirstName": FIRST_NAMES[rng.randrange(len(FIRST_NAMES))], "LastName": last,
                          "RelationshipToStudentCode": ("11", "10")[seq - 1],
                          "CellPhone": f"555{rng.randrange(10**7):07d}", "PrimaryContact": "Y" if seq == 1 else "N",
                          "LivesWithStudentIndicator": "Y", "MailTagCode": "A", "AccessToPortal": "Y"})
                c["MailingName"] = f"{c['FirstName']} {last}"
                contact_rows.append((y, sid, seq, json.dumps(c)))
        store.conn.execute("BEGIN")
        try:
            store.conn.executemany("INSERT INTO students (year, student_id, school_code, student_number, doc)"
                                   " VALUES (?,?,?,?,?)", student_rows)
            store.conn.executemany("INSERT INTO contacts (year, student_id, seq, doc) VALUES (?,?,?,?)",
                                   contact_rows)
            if n:
                store.conn.execute("INSERT OR REPLACE INTO counters (name, value) VALUES ('student_id', ?)",
                                   (next_id + n - 1,))
            store.conn.execute("COMMIT")
        except BaseException:
            store.conn.execute("ROLLBACK")
            raise
    return n


# ----------------------------------------------------------------------------- running it

class QuietRequestHandler(WSGIRequestHandler):
    """No access log line per request (tests send thousands)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class SandboxHandle:
    """A sandbox running in a background thread (see ``serve_in_thread``)."""

    url: str
    store: SandboxStore
    server: Any
    thread: threading.Thread
    extra: dict = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.server_port

    @property
    def cert(self) -> str:
        return self.store.faults["cert"]

    def set_faults(self, **faults: Any) -> dict:
        """Change faults and configuration now (see DEFAULT_FAULTS)."""
        return self.store.set_faults(**faults)

    @property
    def faults(self) -> dict:
        return copy.deepcopy(self.store.faults)

    def dump(self) -> dict:
        return self.store.dump()

    def students(self, year: int | None = None) -> list[dict]:
        """Every student record (one per school) of a year database (default: the default year)."""
        return self.store.students(year if year is not None else int(self.store.faults["default_year"]))

    def contacts(self, year: int | None = None) -> list[dict]:
        return self.store.contacts(year if year is not None else int(self.store.faults["default_year"]))

    def count(self) -> int:
        """Distinct StudentIDs in every year database."""
        return self.store.count()

    def requests(self) -> list[dict]:
        return list(self.store.requests)

    def clear_requests(self) -> None:
        self.store.requests.clear()

    def reset(self) -> None:
        self.store.reset()

    def empty(self) -> None:
        self.store.empty()

    def renumber(self, mode: str = "shift", offset: int | None = None) -> dict[int, int]:
        return self.store.renumber(mode=mode, offset=offset)

    def seed(self, n: int, seed: int = 0, year: int | None = None) -> int:
        return seed_students(self.store, n, seed=seed, year=year)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        with self.store.lock:
            self.store.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def make_sandbox_server(*, host: str = "127.0.0.1", port: int = 0, db: str = ":memory:",
                        seed: int | None = None, seed_count: int = 0, quiet: bool = True,
                        **faults: Any):
    unknown = sorted(k for k in faults if k not in DEFAULT_FAULTS)
    if unknown:
        raise TypeError(f"unknown sandbox faults: {', '.join(unknown)}")
    if faults.get("malformed_kind", "truncated") not in MALFORMED_KINDS:
        raise ValueError(f"malformed_kind must be one of {', '.join(MALFORMED_KINDS)}")
    store = SandboxStore(db, seed=seed, seed_count=seed_count)
    if faults:
        store.set_faults(**faults)
        store.base_faults = copy.deepcopy(store.faults)
    if seed_count and store.count() == 0:
        seed_students(store, seed_count, seed=seed or 0)
    app = create_app(store)
    server = make_server(host, port, _MountedToo(app, "/aeries"), threaded=True,
                         request_handler=QuietRequestHandler if quiet else None)
    return store, server


class _MountedToo:
    """Serve the app at ``/`` and under ``prefix`` too, as districts host Aeries under a path
    (``https://demo.aeries.net/aeries/api/v5/...``)."""

    def __init__(self, app, prefix: str):
        self.app, self.prefix = app, prefix

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ = dict(environ, PATH_INFO=path[len(self.prefix):] or "/",
                           SCRIPT_NAME=environ.get("SCRIPT_NAME", "") + self.prefix)
        return self.app(environ, start_response)


def serve_in_thread(*, port: int = 0, host: str = "127.0.0.1", db: str = ":memory:",
                    seed: int | None = None, seed_count: int = 0, **faults: Any) -> SandboxHandle:
    """Start a sandbox on ``host:port`` (0: any free port) in a daemon thread."""
    store, server = make_sandbox_server(host=host, port=port, db=db, seed=seed,
                                        seed_count=seed_count, **faults)
    thread = threading.Thread(target=server.serve_forever, name="aeries-sandbox", daemon=True)
    thread.start()
    return SandboxHandle(url=f"http://{host}:{server.server_port}", store=store, server=server,
                         thread=thread)
