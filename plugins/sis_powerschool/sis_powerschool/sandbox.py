"""A PowerSchool-compatible sandbox SIS.

No public PowerSchool mock exists, so this server follows what is written in
``shared/reference/powerschool-api.md``, ``contacts.md`` and ``import-direction.md``.
Where they are silent it does what a real PowerSchool plausibly does; those places say
"(inferred)".

PowerSchool's API (every ``/ws/`` call needs a bearer token):

- OAuth2 client credentials (``POST /oauth/access_token``, ``expires_in`` a string).
- Discovery: ``/ws/v1/metadata``, ``/ws/v1/district`` with the ``entry_codes``,
  ``exit_codes``, ``ethnicity_race_codes`` and ``race_codes`` expansions, schools,
  ``/ws/schema/table/{extension table}/metadata``.
- Students: ``GET /ws/v1/district/student`` and ``/ws/v1/school/{id}/student`` (``page``
  from 1, ``pagesize`` defaulting to and capped by ``student_max_page_size``, stable order
  by id, the ``q`` search subset, ``expansions``, ``extensions``), their ``/count``,
  ``GET /ws/v1/student/{id}``; ``POST /ws/v1/student`` with PowerSchool's validation rules
  and quirks (per-record errors with HTTP 200; ``result`` and ``error_message.error`` are an
  object when there is one and an array when there are several).
- Contacts (the contacts plugin API): ``POST /ws/contacts/contact`` (emails, phones,
  addresses and ``contactStudents`` inline), ``GET /ws/contacts/contact/{id}``,
  ``GET /ws/contacts/contacts?contactids=``, ``DELETE /ws/contacts/{id}``,
  ``GET|PUT /ws/contacts/{id}/demographics``, ``/ws/contacts/{id}/emails|phones|addresses``
  (``GET|POST``, and ``GET|PUT|DELETE .../{itemid}``), ``/ws/contacts/{id}/students`` and
  ``.../students/{studentcontactid}/studentdetails`` (links to students with relationship,
  custodial, lives with, receives mail, emergency, school pickup, dates; ``sequence`` is
  the student's priority), ``GET /ws/contacts/student/{dcid}`` (204 when none) and
  ``.../student/original_contact_types/in_use/{dcid}``. Saves answer
  ``{"status", "action", "_success_message", "_warning_message", "savedObject"}``; refusals
  are HTTP 400 with ``_error_message._warning``.
- Schema tables a plugin reads beside the contacts API: ``GET /ws/schema/table/codeset``
  (code sets ``Relationship``, ``Phone``, ``Email``, ``Address``, ``Gender``, ``State``...)
  and ``GET /ws/schema/table/person`` (search contacts by name), each with ``/count``.
- The per-plugin request throttle.

Only the sandbox has ``/sandbox/*``: ``GET/POST /sandbox/faults`` (fault injection, see
``DEFAULT_FAULTS``: latency, random and counted 500s, hangs, 429/503 bursts, broken bodies
(``MALFORMED_KINDS``), lost answers, throttle, token expiry and revocation including
``revoke_new_tokens_every``, dripping answers, busy records in a batch, a failing list
page, per-record rejections, "No access to the field"), ``GET /sandbox/dump`` (every stored
student), ``GET /sandbox/contacts`` (every contact and contact-student link),
``GET /sandbox/requests`` (what was asked, without credentials), ``POST /sandbox/reset``,
``POST /sandbox/seed`` (realistic students, ``SandboxStore.seed_students``), and the SIS's
own life: ``POST /sandbox/empty`` (every student and contact deleted),
``POST /sandbox/renumber`` (restored from a backup: the same records under new ids) and
``POST /sandbox/students/{id}/change`` (a student edited by hand; ``null`` clears a field).

Start it from the command line (``enroll-sync sandbox powerschool --port 5001``, see
``--help``; ``--seed-students N`` seeds N realistic students) or, in tests, with
``serve_in_thread(port=0)``.
"""
from __future__ import annotations

import base64
import bisect
import collections
import copy
import datetime as dt
import itertools
import json
import random
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

__all__ = ["DEFAULT_CLIENT_ID", "DEFAULT_CLIENT_SECRET", "DEFAULT_FAULTS", "MALFORMED_KINDS",
           "SandboxHandle", "SandboxStore", "create_app", "serve_in_thread", "SCHOOLS",
           "ENTRY_CODES", "EXIT_CODES", "EXTENSION_TABLES"]

#: Credentials the sandbox accepts unless told otherwise (documented; demo only).
DEFAULT_CLIENT_ID = "enroll-sync-demo"
DEFAULT_CLIENT_SECRET = "sandbox-secret-change-me"
DEFAULT_TOKEN_LIFETIME = 2504956  # PowerSchool's default: about 29 days

DISTRICT = {"id": 1, "name": "Sandbox Unified School District", "district_number": "9999",
            "state_province": "CA", "district_uuid": "5f0b8a2e-6c1d-4f7e-9a3b-sandbox0001"}
SCHOOLS = [
    {"id": 1, "school_number": 100, "name": "Lincoln Elementary School", "low_grade": -1,
     "high_grade": 5},
    {"id": 2, "school_number": 200, "name": "Washington Middle School", "low_grade": 6,
     "high_grade": 8},
    {"id": 3, "school_number": 300, "name": "Roosevelt High School", "low_grade": 9,
     "high_grade": 12},
]
ENTRY_CODES = [
    {"id": 1, "code": "E1", "description": "New to the district", "sort_order": 1},
    {"id": 2, "code": "E2", "description": "Transfer from an in-state public school", "sort_order": 2},
    {"id": 3, "code": "E3", "description": "Transfer from out of state", "sort_order": 3},
    {"id": 4, "code": "R1", "description": "Re-entry after withdrawal", "sort_order": 4},
]
EXIT_CODES = [
    {"id": 1, "code": "T1", "description": "Transferred in state", "sort_order": 1},
    {"id": 2, "code": "T2", "description": "Transferred out of state", "sort_order": 2},
    {"id": 3, "code": "G", "description": "Graduated", "sort_order": 3},
    {"id": 4, "code": "W1", "description": "Withdrawn", "sort_order": 4},
]
ETHNICITY_CODES = [
    {"id": 1, "code": "H", "description": "Hispanic or Latino", "sort_order": 1},
    {"id": 2, "code": "N", "description": "Not Hispanic or Latino", "sort_order": 2},
]
#: district race codes (``ethnicity_race.races[].district_race_code``); offered as the
#: district expansion ``race_codes`` like the entry codes (inferred)
RACE_CODES = [
    {"id": 1, "code": "AI", "description": "American Indian or Alaska Native", "sort_order": 1},
    {"id": 2, "code": "AS", "description": "Asian", "sort_order": 2},
    {"id": 3, "code": "BL", "description": "Black or African American", "sort_order": 3},
    {"id": 4, "code": "PI", "description": "Native Hawaiian or Other Pacific Islander",
     "sort_order": 4},
    {"id": 5, "code": "WH", "description": "White", "sort_order": 5},
]
#: PowerSchool's CodeSet table: code type -> [(code, display value)]. The contacts API names
#: its codes "CodeSet code where CodeType = 'Relationship'" (and 'Phone', 'Email', 'Address',
#: 'Gender', 'Prefix', 'Suffix', 'State', 'Country'); a plugin reads them with
#: ``GET /ws/schema/table/codeset?q=codetype==Relationship``. The code values are a typical
#: district's (inferred: every district edits its own list).
_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE "
           "NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY").split()
CODE_SETS: dict[str, list[tuple[str, str]]] = {
    "Relationship": [(c, c) for c in (
        "Mother", "Father", "Guardian", "Stepmother", "Stepfather", "Foster Mother",
        "Foster Father", "Grandmother", "Grandfather", "Aunt", "Uncle", "Sister", "Brother",
        "Friend", "Neighbor", "Doctor", "Other")],
    "Phone": [("Home", "Home"), ("Mobile", "Mobile"), ("Work", "Work"), ("Daytime", "Daytime"),
              ("Other", "Other")],
    "Email": [("Current", "Current"), ("Personal", "Personal"), ("Work", "Work")],
    "Address": [("Home", "Home"), ("Mailing", "Mailing"), ("Work", "Work")],
    "Gender": [("M", "Male"), ("F", "Female"), ("X", "Non-binary")],
    "Prefix": [("Mr.", "Mr."), ("Mrs.", "Mrs."), ("Ms.", "Ms."), ("Dr.", "Dr.")],
    "Suffix": [("Jr.", "Jr."), ("Sr.", "Sr."), ("II", "II"), ("III", "III")],
    "State": [(c, c) for c in _STATES],
    "Country": [("US", "United States"), ("MX", "Mexico"), ("CA", "Canada")],
}
#: the rows of the codeset table, ids from 1001 in the order above
CODESET_ROWS: list[dict] = []
for _type, _codes in CODE_SETS.items():
    for _order, (_code, _display) in enumerate(_codes, 1):
        CODESET_ROWS.append({"codesetid": 1001 + len(CODESET_ROWS), "codetype": _type,
                             "code": _code, "displayvalue": _display, "description": _display,
                             "uidisplayorder": _order, "isvisible": 1})
#: extension tables of STUDENTS (name -> columns); ``access`` as PowerSchool reports it
EXTENSION_TABLES = {
    "u_students_extension": {
        "comment": "District student extension",
        "columns": [
            {"name": "studentsdcid", "type": "Integer", "length": 10, "access": "ViewOnly",
             "description": "Students.DCID"},
            {"name": "bus_route", "type": "String", "length": 20, "access": "FullAccess",
             "description": "Bus route"},
            {"name": "allergies", "type": "String", "length": 200, "access": "FullAccess",
             "description": "Allergies"},
            {"name": "photo_release", "type": "Boolean", "length": 1, "access": "FullAccess",
             "description": "Photo release signed"},
            {"name": "enrollment_source", "type": "String", "length": 40, "access": "FullAccess",
             "description": "Where the enrollment came from"},
            {"name": "locker_combination", "type": "String", "length": 20, "access": "NoAccess",
             "description": "Locker combination"},
            {"name": "discipline_notes", "type": "String", "length": 400,
             "access": "BlackListNoAccess", "description": "Discipline notes"},
        ],
    },
    "u_studentsuserfields": {
        "comment": "Student user fields",
        "columns": [
            {"name": "studentsdcid", "type": "Integer", "length": 10, "access": "ViewOnly",
             "description": "Students.DCID"},
            {"name": "home_language", "type": "String", "length": 40, "access": "FullAccess",
             "description": "Home language"},
            {"name": "previous_school", "type": "String", "length": 80, "access": "FullAccess",
             "description": "Previous school"},
            {"name": "siblings_enrolled", "type": "Integer", "length": 3, "access": "FullAccess",
             "description": "Siblings enrolled in the district"},
        ],
    },
}
EXPANSIONS = ["demographics", "addresses", "alerts", "phones", "school_enrollment",
              "ethnicity_race", "contact", "contact_info", "initial_enrollment",
              "schedule_setup", "fees", "lunch"]
DEFAULT_FAULTS: dict[str, Any] = {
    "latency_ms": 0,          # added to every API request
    "error_rate": 0.0,        # share of API requests answered 500 (random)
    "timeout_rate": 0.0,      # share of API requests that hang ``hang_s`` (random)
    "hang_s": 5.0,            # how long a "timeout" hangs before answering 500
    "fail_500": 0,            # the next N API requests answer 500
    "timeouts": 0,            # the next N API requests hang ``hang_s``
    "burst_429": 0,           # the next N API requests answer 429
    "burst_503": 0,           # the next N API requests answer 503
    "retry_after": None,      # Retry-After sent with bursts and throttle (None: no header)
    "malformed": 0,           # the next N API requests answer 200 with a broken body
    "malformed_kind": "truncated",  # which broken body: see MALFORMED_KINDS
    "malformed_body": None,   # or exactly this text (JSON content type) instead of a kind
    "lost_answers": 0,        # the next N POST /ws/v1/student are SAVED, then answered 500
    "fault_path": "/",        # counted faults hit only paths starting with this
    "min_interval_ms": 0,     # PowerSchool's per-plugin throttle (0: off)
    "throttle_status": 429,   # status of a throttled request (429 or 503)
    "token_lifetime": DEFAULT_TOKEN_LIFETIME,  # expires_in of new tokens, seconds
    "revoke_tokens_every": 0,  # revoke every token after each N-th authorised API request
    "revoke_new_tokens_every": 0,  # each N-th authorised request revokes its token, and the
                              # next token issued after that is already revoked
    "drip_bytes_per_s": 0,    # API answers under fault_path are sent this slowly (0: off)
    "drip_answers": 0,        # with drip_bytes_per_s: only the next N answers, then drip
                              # is off again (0: every answer while drip_bytes_per_s is set)
    "busy_records": 0,        # the next N records of POST /ws/v1/student: "busy, try again"
    "page_error_at": 0,       # page N of a student list answers 500 once (0: off)
    "page_error_times": 1,    # ... that many times in a row (its retries fail too)
    "reject_local_ids": [],   # per-record error for these local_ids
    "reject_last_names": [],  # per-record error for these last names (case-insensitive)
    "drop_results_for": [],   # process but leave these local_ids out of the answer
    "denied_fields": [],      # "No access to the field" (e.g. "students.dob")
    "student_max_page_size": 500,
}
ACTIONS = ("revoke_tokens", "expire_tokens")
#: what the ``malformed`` fault answers (HTTP 200 unless said otherwise); the request is
#: not processed
MALFORMED_KINDS = {
    "truncated": "JSON cut off in the middle",
    "disconnect": "Content-Length promises more than is sent, then the connection closes",
    "html": "an HTML error page (text/html), as a proxy or login page sends",
    "not_json": "plain text labelled application/json",
    "empty": "an empty body labelled application/json",
    "array": "a JSON array where an object is expected",
    "wrong_shape": "every top-level object the API uses is a list of strings instead",
    "missing_keys": "every top-level object the API uses is there but empty",
}
#: the top-level keys of the API's answers (for wrong_shape and missing_keys)
ANSWER_KEYS = ("results", "metadata", "district", "resource", "students", "schools", "student",
               "columns", "access_token")

# ----------------------------------------------------------------------------- rules

REQUIRED_ON_INSERT = [("name", "first_name"), ("name", "last_name"),
                      ("school_enrollment", "grade_level"), ("school_enrollment", "entry_date"),
                      ("school_enrollment", "exit_date"), ("school_enrollment", "school_number"),
                      ("local_id",)]
MAX_LENGTHS = {
    ("name", "first_name"): 50, ("name", "middle_name"): 30, ("name", "last_name"): 50,
    ("state_province_id",): 32, ("student_username",): 20,
    ("contact", "emergency_contact_name1"): 60, ("contact", "emergency_contact_name2"): 60,
    ("contact", "emergency_phone1"): 30, ("contact", "emergency_phone2"): 30,
    ("contact", "doctor_phone"): 30, ("phones", "main", "number"): 30,
    ("school_enrollment", "entry_code"): 10, ("school_enrollment", "exit_code"): 10,
}
for _kind in ("physical", "mailing"):
    MAX_LENGTHS.update({("addresses", _kind, "street"): 60, ("addresses", _kind, "city"): 50,
                        ("addresses", _kind, "state_province"): 2,
                        ("addresses", _kind, "postal_code"): 10})
DATES = [("demographics", "birth_date"), ("demographics", "district_entry_date"),
         ("school_enrollment", "entry_date"), ("school_enrollment", "exit_date"),
         ("initial_enrollment", "district_entry_date"), ("initial_enrollment", "school_entry_date")]
INTEGERS = [("school_enrollment", "grade_level"), ("demographics", "projected_graduation_year"),
            ("initial_enrollment", "district_entry_grade_level"),
            ("initial_enrollment", "school_entry_grade_level"),
            ("schedule_setup", "sched_next_year_grade"), ("schedule_setup", "next_school")]
CODES = {("demographics", "gender"): ("M", "F"),
         ("school_enrollment", "enroll_status"): ("A", "I", "P", "H"),
         ("school_enrollment", "entry_code"): tuple(c["code"] for c in ENTRY_CODES),
         ("school_enrollment", "exit_code"): tuple(c["code"] for c in EXIT_CODES)}
ADDRESS_FIELDS = ("street", "city", "state_province", "postal_code")
PAIRS = [("emergency_contact_name1", "emergency_phone1"),
         ("emergency_contact_name2", "emergency_phone2"),
         ("doctor_name", "doctor_phone")]
UPDATE_LOCKED = ("entry_date", "exit_date", "school_number", "grade_level")
#: students-table column names for "No access to the field"
FIELD_COLUMNS = {("name", "first_name"): "students.first_name",
                 ("name", "middle_name"): "students.middle_name",
                 ("name", "last_name"): "students.last_name",
                 ("demographics", "birth_date"): "students.dob",
                 ("demographics", "gender"): "students.gender",
                 ("state_province_id",): "students.state_studentnumber",
                 ("student_username",): "students.student_web_id",
                 ("contact", "mother"): "students.mother",
                 ("contact", "father"): "students.father",
                 ("contact", "guardian_email"): "students.guardianemail",
                 ("phones", "main", "number"): "students.home_phone"}

Q_COLUMNS = {"id": "dcid", "local_id": "local_id", "state_province_id": "state_province_id",
             "student_username": "student_username", "name.first_name": "first_name",
             "name.last_name": "last_name", "school_enrollment.school_number": "school_number",
             "school_enrollment.enroll_status": "enroll_status",
             "school_enrollment.grade_level": "grade_level"}
NUMERIC_COLUMNS = {"dcid", "local_id", "school_number", "grade_level"}
Q_OPS = {"==": "=", "!=": "!=", "=gt=": ">", "=ge=": ">=", "=lt=": "<", "=le=": "<="}
Q_CLAUSE = re.compile(r"^([A-Za-z_][\w.]*)(==|!=|=gt=|=ge=|=lt=|=le=)(.*)$")
INT_RE = re.compile(r"^-?\d+$")


class BadQuery(ValueError):
    pass


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def _present(value: Any) -> bool:
    return value is not None and value != ""


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _one_or_many(items: list) -> Any:
    """PowerSchool's quirk: one item is an object, several are an array."""
    return items[0] if len(items) == 1 else items


def _valid_date(value: Any) -> bool:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        dt.date.fromisoformat(value)
        return True
    except ValueError:
        return False


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and INT_RE.match(value.strip()):
        return int(value.strip())
    return None


def _err(path: tuple | str, code: str, description: str) -> dict:
    field = path if isinstance(path, str) else "student/" + "/".join(path)
    return {"field": field, "error_code": code, "error_description": description}


# ----------------------------------------------------------------------------- storage

#: where each kind of id starts (distinct ranges, so an id used as the wrong kind fails;
#: PowerSchool's real ids come from separate sequences too, inferred)
ID_BASES = {"person": 5001, "studentcontact": 30001, "studentcontactdetail": 40001,
            "email": 50001, "phone": 60001, "address": 70001}


class SandboxStore:
    """Students and contacts in SQLite (a file or ``:memory:``), plus tokens, faults and a
    request log."""

    def __init__(self, db: str = ":memory:", *, client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str = DEFAULT_CLIENT_SECRET, faults: dict | None = None,
                 seed: int | None = None):
        self.db_path = db
        self.client_id = self.base_client_id = client_id
        self.client_secret = self.base_client_secret = client_secret
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(db, check_same_thread=False, isolation_level=None)
        if db != ":memory:":
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript("""
            CREATE TABLE IF NOT EXISTS students (
                dcid INTEGER PRIMARY KEY AUTOINCREMENT,
                local_id TEXT UNIQUE,
                state_province_id TEXT, student_username TEXT,
                first_name TEXT, last_name TEXT,
                school_number TEXT, enroll_status TEXT, grade_level TEXT,
                doc TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS students_state_id ON students(state_province_id);
            CREATE INDEX IF NOT EXISTS students_last_name ON students(last_name);
            CREATE TABLE IF NOT EXISTS contacts (
                id INTEGER PRIMARY KEY,
                first_name TEXT, middle_name TEXT, last_name TEXT, active INTEGER,
                doc TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS contacts_name ON contacts(last_name, first_name);
            CREATE TABLE IF NOT EXISTS contact_students (
                id INTEGER PRIMARY KEY,
                contact_id INTEGER NOT NULL, student_dcid INTEGER NOT NULL,
                doc TEXT NOT NULL);
            CREATE INDEX IF NOT EXISTS contact_students_student ON contact_students(student_dcid);
            CREATE INDEX IF NOT EXISTS contact_students_contact ON contact_students(contact_id);
            CREATE TABLE IF NOT EXISTS id_sequences (kind TEXT PRIMARY KEY, next INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS codesets (
                codesetid INTEGER PRIMARY KEY, codetype TEXT, code TEXT, displayvalue TEXT,
                description TEXT, uidisplayorder INTEGER, isvisible INTEGER);
        """)
        self.conn.executemany("INSERT OR REPLACE INTO codesets VALUES (?,?,?,?,?,?,?)",
                              [tuple(r[c] for c in CODESET_COLUMNS) for r in CODESET_ROWS])
        self.base_faults = {**copy.deepcopy(DEFAULT_FAULTS), **(faults or {})}
        self.faults = copy.deepcopy(self.base_faults)
        self.tokens: dict[str, float] = {}   # token -> expiry (time.time())
        self.requests: collections.deque = collections.deque(maxlen=20000)
        self.rng = random.Random(seed)
        self._last_api_request = 0.0
        self._authorised = 0  # API requests with a valid token (revoke_tokens_every)
        self._authorised_new = 0  # the same for revoke_new_tokens_every
        self._next_token_dead = False  # revoke_new_tokens_every: the next token is revoked
        self.generation = 0  # bumped by reset(): requests begun before it are not logged
        self.drip_version = 0  # bumped when drip_bytes_per_s is set

    # -- faults
    def set_faults(self, **changes: Any) -> dict:
        unknown = [k for k in changes if k not in DEFAULT_FAULTS and k not in ACTIONS]
        if unknown:
            raise KeyError(unknown[0])
        if "malformed_kind" in changes and changes["malformed_kind"] not in MALFORMED_KINDS:
            raise ValueError(f"malformed_kind must be one of {', '.join(MALFORMED_KINDS)}")
        with self.lock:
            for key, value in changes.items():
                if key in ACTIONS:
                    if value:
                        self.tokens.clear()
                    continue
                if key == "revoke_tokens_every":
                    self._authorised = 0
                if key == "revoke_new_tokens_every":
                    self._authorised_new = 0
                    self._next_token_dead = False
                if key == "drip_bytes_per_s":
                    self.drip_version += 1  # answers dripping now send the rest at once
                self.faults[key] = copy.deepcopy(value)
            return copy.deepcopy(self.faults)

    def authorised(self, token: str | None = None) -> None:
        """Count an API request that had a valid token (``revoke_tokens_every`` and
        ``revoke_new_tokens_every``)."""
        with self.lock:
            every = int(self.faults.get("revoke_tokens_every") or 0)
            if every > 0:
                self._authorised += 1
                if self._authorised % every == 0:
                    self.tokens.clear()
            every_new = int(self.faults.get("revoke_new_tokens_every") or 0)
            if every_new > 0:
                self._authorised_new += 1
                if self._authorised_new % every_new == 0:
                    # "Workers sharing a token the SIS revokes early": the token this request
                    # used dies after it, and so does the first token issued after that, so a
                    # client must be ready to fetch a token more than once for one request.
                    if token is not None:
                        self.tokens.pop(token, None)
                    self._next_token_dead = True

    def take(self, counter: str) -> bool:
        """Consume one unit of a counted fault; True when it applies."""
        with self.lock:
            if self.faults.get(counter, 0) > 0:
                self.faults[counter] -= 1
                return True
            return False

    def take_drip(self) -> float:
        """The bytes per second this answer drips at (0: it does not). With
        ``drip_answers`` N > 0 only N answers drip; after the last, dripping is off."""
        with self.lock:
            rate = float(self.faults.get("drip_bytes_per_s") or 0)
            left = int(self.faults.get("drip_answers") or 0)
            if rate > 0 and left > 0:
                self.faults["drip_answers"] = left - 1
                if left == 1:
                    self.faults["drip_bytes_per_s"] = 0
            return rate

    def take_page_error(self, page: int) -> bool:
        """``page_error_at``: True (``page_error_times`` times, default once) when this is
        the page that fails."""
        with self.lock:
            at = int(self.faults.get("page_error_at") or 0)
            if at > 0 and page == at:
                left = int(self.faults.get("page_error_times") or 1) - 1
                if left <= 0:
                    self.faults["page_error_at"] = 0
                    self.faults["page_error_times"] = 1
                else:
                    self.faults["page_error_times"] = left
                return True
            return False

    def reset(self) -> None:
        with self.lock:
            for table in ("students", "contacts", "contact_students", "id_sequences"):
                self.conn.execute(f"DELETE FROM {table}")
            try:
                self.conn.execute("DELETE FROM sqlite_sequence WHERE name='students'")
            except sqlite3.OperationalError:
                pass
            self.faults = copy.deepcopy(self.base_faults)
            self.client_id, self.client_secret = self.base_client_id, self.base_client_secret
            self.tokens.clear()
            self.requests.clear()
            self._last_api_request = 0.0
            self._authorised = 0
            self._authorised_new = 0
            self._next_token_dead = False
            self.generation += 1

    # -- tokens
    def issue_token(self) -> tuple[str, int]:
        with self.lock:
            lifetime = int(self.faults["token_lifetime"])
            token = str(uuid.uuid4())
            if self._next_token_dead:
                self._next_token_dead = False  # issued, but revoked before it is used
            else:
                self.tokens[token] = time.time() + lifetime
            return token, lifetime

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and time.time() < expiry

    def throttle_wait(self) -> float:
        """0 when the request may go on, else the seconds left in the window."""
        interval = self.faults["min_interval_ms"] / 1000.0
        if interval <= 0:
            return 0.0
        with self.lock:
            now = time.monotonic()
            left = self._last_api_request + interval - now
            if left > 0:
                return left
            self._last_api_request = now
            return 0.0

    # -- students
    def _row_values(self, doc: dict) -> tuple:
        se = doc.get("school_enrollment") or {}
        name = doc.get("name") or {}
        return (_s(doc.get("local_id")), _s(doc.get("state_province_id")),
                _s(doc.get("student_username")), _s(name.get("first_name")),
                _s(name.get("last_name")), _s(se.get("school_number")),
                _s(se.get("enroll_status")), _s(se.get("grade_level")))

    def insert(self, doc: dict) -> int:
        cur = self.conn.execute(
            "INSERT INTO students (local_id, state_province_id, student_username, first_name,"
            " last_name, school_number, enroll_status, grade_level, doc)"
            " VALUES (?,?,?,?,?,?,?,?,?)", (*self._row_values(doc), json.dumps(doc)))
        return cur.lastrowid

    def update(self, dcid: int, doc: dict) -> None:
        self.conn.execute(
            "UPDATE students SET local_id=?, state_province_id=?, student_username=?,"
            " first_name=?, last_name=?, school_number=?, enroll_status=?, grade_level=?,"
            " doc=? WHERE dcid=?", (*self._row_values(doc), json.dumps(doc), dcid))

    def get(self, dcid: int) -> dict | None:
        row = self.conn.execute("SELECT doc FROM students WHERE dcid=?", (dcid,)).fetchone()
        return json.loads(row[0]) if row else None

    def dcid_for_local_id(self, local_id: str) -> int | None:
        row = self.conn.execute("SELECT dcid FROM students WHERE local_id=?", (local_id,)).fetchone()
        return row[0] if row else None

    def search(self, q: str | None, *, school_number: str | None = None,
               limit: int | None = None, offset: int = 0) -> list[tuple[int, dict]]:
        where, args = _where(q, school_number)
        sql = f"SELECT dcid, doc FROM students{where} ORDER BY dcid"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        with self.lock:
            rows = self.conn.execute(sql, args).fetchall()
        return [(dcid, json.loads(doc)) for dcid, doc in rows]

    def count(self, q: str | None, *, school_number: str | None = None) -> int:
        where, args = _where(q, school_number)
        with self.lock:
            return self.conn.execute(f"SELECT COUNT(*) FROM students{where}", args).fetchone()[0]

    def dump(self) -> list[dict]:
        return [{"id": dcid, **doc} for dcid, doc in self.search(None)]

    def seed_students(self, n: int, *, seed: int | None = 0, contacts: bool = False,
                      start_local_id: int = 100001) -> list[int]:
        """Store ``n`` realistic students quickly (one transaction) and return their new ids.

        Names, birth dates that fit the grade, grades within each school's range, addresses,
        phones, gender and ethnicity/race codes, state student numbers, usernames, guardian
        fields, extension rows. Siblings share a last name, an address and guardians. The
        same ``seed`` on the same store gives the same students. ``local_id`` counts up from
        ``start_local_id``, skipping ids already taken. ``contacts=True`` also creates each
        family's guardians in the contacts API, linked to every child."""
        families = generate_families(n, seed=seed)
        with self.lock:
            taken = {row[0] for row in self.conn.execute("SELECT local_id FROM students")}
            local_ids, candidate = [], start_local_id
            while len(local_ids) < n:
                if str(candidate) not in taken:
                    local_ids.append(candidate)
                candidate += 1
            docs, owner = [], []  # owner: index of each student's family
            for fi, family in enumerate(families):
                for child in family["children"]:
                    doc = finish_seeded_student(child, local_ids[len(docs)], seed)
                    docs.append(doc)
                    owner.append(fi)
            self.conn.execute("BEGIN")
            try:
                before = self.conn.execute("SELECT COALESCE(MAX(dcid), 0) FROM students").fetchone()[0]
                self.conn.executemany(
                    "INSERT INTO students (local_id, state_province_id, student_username,"
                    " first_name, last_name, school_number, enroll_status, grade_level, doc)"
                    " VALUES (?,?,?,?,?,?,?,?,?)",
                    [(*self._row_values(d), _fast_dumps(d)) for d in docs])
                dcids = [r[0] for r in self.conn.execute(
                    "SELECT dcid FROM students WHERE dcid > ? ORDER BY dcid", (before,))]
                if contacts:
                    kids: dict[int, list[tuple[int, dict]]] = collections.defaultdict(list)
                    for dcid, doc, fi in zip(dcids, docs, owner):
                        kids[fi].append((dcid, doc))
                    for fi, family in enumerate(families):
                        for priority, guardian in enumerate(family["guardians"], 1):
                            self._seed_contact(guardian, priority, kids[fi])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return dcids

    def _seed_contact(self, guardian: dict, priority: int, kids: list[tuple[int, dict]]) -> None:
        doc = {k: v for k, v in guardian.items() if k != "relationship"}
        for item, kind, key in ((doc["emails"], "email", "contactEmailId"),
                                (doc["phones"], "phone", "contactsPhoneId"),
                                (doc["addresses"], "address", "contactsAddressId")):
            for sub in item:
                sub[key] = self.next_id(kind)
        cid = self.contact_insert(doc)
        for dcid, _ in kids:
            self.link_insert(cid, dcid, {
                "sequence": priority, "originalContactType": None,
                "studentDetails": [{
                    "studentContactDetailId": self.next_id("studentcontactdetail"),
                    "relationship": guardian["relationship"], "relationshipNote": None,
                    "custodial": True, "emergency": True, "livesWith": True,
                    "schoolPickup": True, "receivesMail": priority == 1,
                    "startDate": "2025-08-20", "endDate": None,
                    "excludeFromStateReporting": False, "active": True}]})

    # -- contacts (the contacts plugin API)
    def next_id(self, kind: str) -> int:
        row = self.conn.execute("SELECT next FROM id_sequences WHERE kind=?", (kind,)).fetchone()
        value = row[0] if row else ID_BASES[kind]
        self.conn.execute("INSERT OR REPLACE INTO id_sequences (kind, next) VALUES (?, ?)",
                          (kind, value + 1))
        return value

    def _bump_sequence(self, kind: str, at_least: int) -> None:
        row = self.conn.execute("SELECT next FROM id_sequences WHERE kind=?", (kind,)).fetchone()
        value = max(row[0] if row else ID_BASES[kind], at_least)
        self.conn.execute("INSERT OR REPLACE INTO id_sequences (kind, next) VALUES (?, ?)",
                          (kind, value))

    @staticmethod
    def _contact_row(doc: dict) -> tuple:
        return (doc.get("firstName"), doc.get("middleName"), doc.get("lastName"),
                0 if doc.get("active") is False else 1, json.dumps(doc))

    def contact_insert(self, doc: dict) -> int:
        cid = self.next_id("person")
        self.conn.execute("INSERT INTO contacts (id, first_name, middle_name, last_name, active,"
                          " doc) VALUES (?,?,?,?,?,?)", (cid, *self._contact_row(doc)))
        return cid

    def contact_update(self, cid: int, doc: dict) -> None:
        self.conn.execute("UPDATE contacts SET first_name=?, middle_name=?, last_name=?,"
                          " active=?, doc=? WHERE id=?", (*self._contact_row(doc), cid))

    def contact_get(self, cid: int) -> dict | None:
        row = self.conn.execute("SELECT doc FROM contacts WHERE id=?", (cid,)).fetchone()
        return json.loads(row[0]) if row else None

    def contact_delete(self, cid: int) -> None:
        self.conn.execute("DELETE FROM contact_students WHERE contact_id=?", (cid,))
        self.conn.execute("DELETE FROM contacts WHERE id=?", (cid,))

    def link_insert(self, cid: int, dcid: int, doc: dict) -> int:
        scid = self.next_id("studentcontact")
        self.conn.execute("INSERT INTO contact_students (id, contact_id, student_dcid, doc)"
                          " VALUES (?,?,?,?)", (scid, cid, dcid, json.dumps(doc)))
        return scid

    def link_update(self, scid: int, doc: dict) -> None:
        self.conn.execute("UPDATE contact_students SET doc=? WHERE id=?", (json.dumps(doc), scid))

    def link_delete(self, scid: int) -> None:
        self.conn.execute("DELETE FROM contact_students WHERE id=?", (scid,))

    def links(self, *, contact_id: int | None = None, student_dcid: int | None = None,
              link_id: int | None = None) -> list[tuple[int, int, int, dict]]:
        """(studentContactId, contact id, student dcid, doc), by student priority."""
        clauses, args = [], []
        for column, value in (("contact_id", contact_id), ("student_dcid", student_dcid),
                              ("id", link_id)):
            if value is not None:
                clauses.append(f"{column}=?")
                args.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.conn.execute(f"SELECT id, contact_id, student_dcid, doc FROM contact_students"
                                 f"{where} ORDER BY student_dcid, id", args).fetchall()
        out = [(scid, cid, dcid, json.loads(doc)) for scid, cid, dcid, doc in rows]
        out.sort(key=lambda r: (r[2], _as_int(r[3].get("sequence")) or 0, r[0]))
        return out

    def people(self, q: str | None, *, limit: int | None = None,
               offset: int = 0) -> list[tuple[int, dict]]:
        where, args = _fiql_where(q, PERSON_COLUMNS)
        sql = f"SELECT id, doc FROM contacts{where} ORDER BY id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            args += [limit, offset]
        return [(cid, json.loads(doc)) for cid, doc in self.conn.execute(sql, args).fetchall()]

    def people_count(self, q: str | None) -> int:
        where, args = _fiql_where(q, PERSON_COLUMNS)
        return self.conn.execute(f"SELECT COUNT(*) FROM contacts{where}", args).fetchone()[0]

    def dump_contacts(self) -> dict:
        """Every stored contact (as GET /ws/contacts/contact renders it) and every
        contact-student link."""
        with self.lock:
            contacts = [render_contact(self, cid, doc) for cid, doc in self.people(None)]
            links = [{"studentContactId": scid, "contactId": cid, "studentDcid": dcid,
                      "studentNumber": _s((self.get(dcid) or {}).get("local_id")), **doc}
                     for scid, cid, dcid, doc in self.links()]
        return {"contacts": contacts, "links": links}

    # -- the SIS's life: emptied, restored under new ids, changed by hand
    def empty(self) -> dict:
        """Delete every student and contact ("SIS emptied"). Ids are not reused."""
        with self.lock:
            students = self.conn.execute("SELECT COUNT(*) FROM students").fetchone()[0]
            contacts = self.conn.execute("SELECT COUNT(*) FROM contacts").fetchone()[0]
            for table in ("students", "contacts", "contact_students"):
                self.conn.execute(f"DELETE FROM {table}")
        return {"students_deleted": students, "contacts_deleted": contacts}

    def renumber(self) -> dict:
        """Restore from a backup: the same students and contacts under NEW internal ids.

        Every student's ``id`` (DCID) and every contact id, contact-student link id, detail,
        email, phone and address id changes; everything else stays the same, in the same
        order. Returns the old -> new id maps."""
        with self.lock:
            self.conn.execute("BEGIN")
            try:
                seq = self.conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name='students'").fetchone()
                top = max(seq[0] if seq else 0, self.conn.execute(
                    "SELECT COALESCE(MAX(dcid), 0) FROM students").fetchone()[0])
                offset = (top // 1000 + 1) * 1000  # new ids above every id ever given
                old = [r[0] for r in self.conn.execute("SELECT dcid FROM students ORDER BY dcid")]
                self.conn.execute("UPDATE students SET dcid = dcid + ?", (offset,))
                student_ids = {d: d + offset for d in old}
                contacts = self.people(None)
                links = self.links()
                self.conn.execute("DELETE FROM contacts")
                self.conn.execute("DELETE FROM contact_students")
                contact_ids: dict[int, int] = {}
                sub_keys = (("emails", "email", "contactEmailId"),
                            ("phones", "phone", "contactsPhoneId"),
                            ("addresses", "address", "contactsAddressId"))
                for cid, doc in contacts:
                    for key, kind, id_key in sub_keys:
                        for item in doc.get(key) or []:
                            item[id_key] = self.next_id(kind)
                    contact_ids[cid] = self.contact_insert(doc)
                for _scid, cid, dcid, doc in sorted(links, key=lambda r: r[0]):
                    for detail in doc.get("studentDetails") or []:
                        detail["studentContactDetailId"] = self.next_id("studentcontactdetail")
                    self.link_insert(contact_ids[cid], student_ids.get(dcid, dcid), doc)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return {"students": student_ids, "contacts": contact_ids}

    def change_student(self, dcid: int, changes: dict) -> dict | None:
        """Change a student directly in the SIS (as staff would, no API rules). ``changes``
        is nested like the API (``{"name": {"first_name": "B"}}``) or dotted
        (``{"name.first_name": "B"}``); ``None`` clears the field. Returns the stored
        student, or None when there is no such student."""
        with self.lock:
            doc = self.get(dcid)
            if doc is None:
                return None
            for path, value in _flatten(changes):
                if path[0] == "id":
                    raise ValueError("id cannot be changed (see /sandbox/renumber)")
                if path == ("local_id",) and value is not None:
                    if _as_int(value) is None:
                        raise ValueError("local_id must be a whole number")
                    value = _as_int(value)
                    holder = self.dcid_for_local_id(str(value))
                    if holder is not None and holder != dcid:
                        raise ValueError(f"local_id {value} belongs to student {holder}")
                node = doc
                for part in path[:-1]:
                    if not isinstance(node.get(part), dict):
                        if value is None:
                            break
                        node[part] = {}
                    node = node[part]
                else:
                    if value is None:
                        node.pop(path[-1], None)
                    else:
                        node[path[-1]] = value
            self.update(dcid, doc)
            return {"id": dcid, **doc}


def _fast_dumps(doc: dict) -> str:
    """json.dumps, faster for bulk seeding (orjson comes with Enroll Sync)."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency of enroll-sync
        return json.dumps(doc)
    return orjson.dumps(doc).decode()


def _flatten(changes: dict, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    out: list[tuple[tuple, Any]] = []
    for key, value in changes.items():
        path = prefix + tuple(str(key).split("."))
        if isinstance(value, dict) and value:
            out.extend(_flatten(value, path))
        else:
            out.append((path, value))
    return out


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def _where(q: str | None, school_number: str | None) -> tuple[str, list]:
    where, args = _fiql_where(q, Q_COLUMNS, NUMERIC_COLUMNS)
    if school_number is None:
        return where, args
    clause = "school_number = ?"
    where = f"{where} AND {clause}" if where else f" WHERE {clause}"
    return where, args + [str(school_number)]


def _fiql_where(q: str | None, columns: dict[str, str],
                numeric: set[str] | frozenset = frozenset()) -> tuple[str, list]:
    """The ``q`` subset PowerSchool documents (``;`` = AND; ``==`` with ``*`` wildcards,
    ``!=``, ``=gt=``, ``=ge=``, ``=lt=``, ``=le=``) as SQL over ``columns``
    (field name -> column); text compares ignore case (inferred)."""
    clauses, args = [], []
    for part in (q or "").split(";"):
        part = part.strip()
        if not part:
            continue
        m = Q_CLAUSE.match(part)
        if not m:
            raise BadQuery(f"Invalid search expression: {part}")
        name, op, value = m.groups()
        column = columns.get(name.lower())
        if column is None:
            raise BadQuery(f"Invalid search field: {name}")
        if op in ("==", "!=") and "*" in value:
            pattern = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = pattern.replace("*", "%")
            clauses.append(f"{column} {'NOT ' if op == '!=' else ''}LIKE ? ESCAPE '\\'")
            args.append(pattern)
        elif column in numeric and INT_RE.match(value):
            expr = column if column in ("dcid", "id") else f"CAST({column} AS INTEGER)"
            guard = "" if column in ("dcid", "id") else f"{column} GLOB '[0-9-]*' AND "
            clauses.append(f"({guard}{expr} {Q_OPS[op]} ?)")
            args.append(int(value))
        else:
            collate = " COLLATE NOCASE" if op in ("==", "!=") else ""
            clauses.append(f"{column}{collate} {Q_OPS[op]} ?")
            args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


# ----------------------------------------------------------------------------- validation

def _walk_denied(student: dict, denied: set[str]) -> list[str]:
    out = []
    for path, column in FIELD_COLUMNS.items():
        if column in denied and _present(_get(student, path)):
            out.append(column)
    for table in _as_list(_get(student, ("_extension_data", "_table_extension"))):
        if isinstance(table, dict):
            for f in _as_list(table.get("_field")):
                if isinstance(f, dict):
                    column = f"{str(table.get('name', '')).lower()}.{str(f.get('name', '')).lower()}"
                    if column in denied:
                        out.append(column)
    return out


def _extension_rows(student: dict, errors: list) -> dict[str, dict]:
    """Validate ``_extension_data`` and return {table: {column: value}}."""
    rows: dict[str, dict] = {}
    ext = student.get("_extension_data")
    if ext is None:
        return rows
    if not isinstance(ext, dict):
        errors.append(_err("student/_extension_data", "INVALID_EXTENSION", "Must be an object."))
        return rows
    for table in _as_list(ext.get("_table_extension")):
        if not isinstance(table, dict):
            errors.append(_err("student/_extension_data", "INVALID_EXTENSION",
                               "Each _table_extension must be an object."))
            continue
        tname = str(table.get("name", "")).lower()
        spec = EXTENSION_TABLES.get(tname)
        if spec is None:
            errors.append(_err(f"student/_extension_data/{tname}", "INVALID_EXTENSION",
                               f"Unknown extension table {tname!r}."))
            continue
        columns = {c["name"]: c for c in spec["columns"]}
        row = rows.setdefault(tname, {})
        for f in _as_list(table.get("_field")):
            if not isinstance(f, dict):
                errors.append(_err(f"student/_extension_data/{tname}", "INVALID_EXTENSION",
                                   "Each _field must be an object."))
                continue
            cname = str(f.get("name", "")).lower()
            where = f"student/_extension_data/{tname}/{cname}"
            col = columns.get(cname)
            if col is None:
                errors.append(_err(where, "INVALID_EXTENSION", f"Unknown column {cname!r}."))
                continue
            if col["access"] != "FullAccess":
                errors.append(_err(where, "No access to the field",
                                   f"The plugin cannot write {tname}.{cname}."))
                continue
            value = f.get("value")
            if value is None or value == "":
                row[cname] = None
                continue
            text = str(value)
            if col["type"] == "Boolean":
                if text.lower() not in ("true", "false", "1", "0"):
                    errors.append(_err(where, "INVALID_VALUE", "Must be true or false."))
                    continue
                row[cname] = text.lower() in ("true", "1")
            elif col["type"] == "Integer":
                if _as_int(value) is None:
                    errors.append(_err(where, "INVALID_VALUE", "Must be a whole number."))
                    continue
                row[cname] = _as_int(value)
            else:
                if len(text) > col["length"]:
                    errors.append(_err(where, "INVALID_LENGTH",
                                       f"Exceeds the maximum length of {col['length']}."))
                    continue
                row[cname] = text
    return rows


def validate_student(student: dict, action: str, existing: dict | None,
                     faults: dict) -> list[dict]:
    """PowerSchool's rules for one student of POST /ws/v1/student."""
    errors: list[dict] = []
    insert = action == "INSERT"
    for section in ("name", "demographics", "addresses", "contact", "contact_info", "phones",
                    "school_enrollment", "initial_enrollment", "schedule_setup"):
        if section in student and not isinstance(student[section], dict):
            errors.append(_err((section,), "INVALID_VALUE", f"{section} must be an object."))
    if errors:
        return errors
    if insert:
        for path in REQUIRED_ON_INSERT:
            if not _present(_get(student, path)):
                errors.append(_err(path, "REQUIRED_FIELD_MISSING",
                                   f"{path[-1]} is required when inserting a student."))
    for path, limit in MAX_LENGTHS.items():
        value = _get(student, path)
        if _present(value) and len(str(value)) > limit:
            errors.append(_err(path, "INVALID_LENGTH",
                               f"{path[-1]} exceeds the maximum length of {limit}."))
    for path in DATES:
        value = _get(student, path)
        if _present(value) and not _valid_date(value):
            errors.append(_err(path, "INVALID_DATE", f"{path[-1]} must be a date as YYYY-MM-DD."))
    for path in INTEGERS:
        value = _get(student, path)
        if _present(value) and _as_int(value) is None:
            errors.append(_err(path, "INVALID_VALUE", f"{path[-1]} must be a whole number."))
    for path, allowed in CODES.items():
        value = _get(student, path)
        if _present(value) and str(value) not in allowed:
            errors.append(_err(path, "INVALID_VALUE",
                               f"{path[-1]} must be one of {', '.join(allowed)}."))
    local_id = student.get("local_id")
    if _present(local_id) and (_as_int(local_id) is None or _as_int(local_id) <= 0):
        errors.append(_err(("local_id",), "INVALID_LOCAL_ID", "Local ID must be a positive number."))
    se = student.get("school_enrollment") or {}
    if _present(se.get("enroll_status")) and _present(se.get("enroll_status_code")):
        errors.append(_err(("school_enrollment", "enroll_status_code"), "CONFLICTING_FIELDS",
                           "Send enroll_status or enroll_status_code, not both."))
    addresses = student.get("addresses") or {}
    for kind in ("physical", "mailing"):
        block = addresses.get(kind)
        if block is None:
            continue
        if not isinstance(block, dict):
            errors.append(_err(("addresses", kind), "INVALID_VALUE", "Must be an object."))
            continue
        if any(_present(block.get(k)) for k in (*ADDRESS_FIELDS, "grid_location")):
            for k in ADDRESS_FIELDS:
                if not _present(block.get(k)):
                    errors.append(_err(("addresses", kind, k), "INCOMPLETE_ADDRESS",
                                       f"A {kind} address needs street, city, state_province "
                                       f"and postal_code; {k} is missing."))
    contact = student.get("contact") or {}
    for a, b in PAIRS:
        has_a, has_b = _present(contact.get(a)), _present(contact.get(b))
        if has_a != has_b:
            missing = b if has_a else a
            errors.append(_err(("contact", missing), "INCOMPLETE_CONTACT",
                               f"{a} and {b} must be sent together; {missing} is missing."))
    entry, exit_ = se.get("entry_date"), se.get("exit_date")
    if insert and _valid_date(entry) and _valid_date(exit_) and exit_ <= entry:
        errors.append(_err(("school_enrollment", "exit_date"), "INVALID_DATE",
                           "exit_date must be after entry_date."))
    if insert and _present(se.get("school_number")):
        school = next((s for s in SCHOOLS if str(s["school_number"]) == str(se["school_number"])), None)
        if school is None:
            errors.append(_err(("school_enrollment", "school_number"), "INVALID_SCHOOL_NUMBER",
                               f"No school has number {se['school_number']}."))
        else:
            grade = _as_int(se.get("grade_level"))
            if grade is not None and not school["low_grade"] <= grade <= school["high_grade"]:
                errors.append(_err(("school_enrollment", "grade_level"), "INVALID_GRADE_LEVEL",
                                   f"{school['name']} has grades {school['low_grade']} to "
                                   f"{school['high_grade']}."))
    if not insert and existing is not None:
        old = existing.get("school_enrollment") or {}
        for k in UPDATE_LOCKED:
            if k in se and _present(se[k]) and str(se[k]) != str(old.get(k)):
                errors.append(_err(("school_enrollment", k), "UPDATE_NOT_ALLOWED",
                                   f"{k} cannot be changed by an update."))
    last = _get(student, ("name", "last_name"))
    if _present(local_id) and str(local_id) in {str(x) for x in faults.get("reject_local_ids") or ()}:
        errors.append(_err(("local_id",), "INVALID_FIELD_VALUE",
                           "Rejected by a district validation rule (sandbox fault)."))
    if _present(last) and str(last).lower() in {str(x).lower() for x in faults.get("reject_last_names") or ()}:
        errors.append(_err(("name", "last_name"), "INVALID_FIELD_VALUE",
                           "Rejected by a district validation rule (sandbox fault)."))
    return errors


STORED_SECTIONS = ("name", "demographics", "contact", "contact_info", "initial_enrollment",
                   "schedule_setup")


def apply_student(doc: dict, student: dict, ext_rows: dict, insert: bool) -> dict:
    """Merge a posted student into a stored document."""
    doc = copy.deepcopy(doc)
    for key in ("local_id", "student_username", "state_province_id"):
        if key in student and student[key] is not None:
            value = student[key]
            doc[key] = _as_int(value) if key == "local_id" else value
    for section in STORED_SECTIONS:
        if isinstance(student.get(section), dict):
            doc.setdefault(section, {}).update(
                {k: v for k, v in student[section].items() if v is not None})
    for kind in ("physical", "mailing"):
        block = _get(student, ("addresses", kind))
        if isinstance(block, dict):
            doc.setdefault("addresses", {}).setdefault(kind, {}).update(
                {k: v for k, v in block.items() if v is not None})
    number = _get(student, ("phones", "main", "number"))
    if number is not None:
        doc.setdefault("phones", {}).setdefault("main", {})["number"] = number
    if insert and isinstance(student.get("school_enrollment"), dict):
        se = {k: v for k, v in student["school_enrollment"].items() if v is not None}
        if "grade_level" in se:
            se["grade_level"] = _as_int(se["grade_level"])
        if "school_number" in se:
            se["school_number"] = _as_int(se["school_number"]) or se["school_number"]
            school = next((s for s in SCHOOLS if s["school_number"] == se["school_number"]), None)
            if school:
                se["school_id"] = school["id"]
        se.setdefault("enroll_status", "A")
        doc["school_enrollment"] = se
    for table, row in ext_rows.items():
        doc.setdefault("extensions", {}).setdefault(table, {}).update(row)
    return doc


# ----------------------------------------------------------------------------- rendering

def render_student(dcid: int, doc: dict, expansions: list[str], extensions: list[str],
                   base_url: str) -> dict:
    out: dict[str, Any] = {"@expansions": ", ".join(EXPANSIONS),
                           "@extensions": ",".join(EXTENSION_TABLES),
                           "id": dcid, "local_id": doc.get("local_id"),
                           "student_username": doc.get("student_username"),
                           "state_province_id": doc.get("state_province_id"),
                           "name": doc.get("name") or {}}
    out = {k: v for k, v in out.items() if v is not None}
    for exp in expansions:
        if exp in EXPANSIONS:  # what is stored, or an empty object
            out[exp] = doc.get(exp) or {}
    tables = []
    for t in extensions:
        if t in EXTENSION_TABLES:
            row = (doc.get("extensions") or {}).get(t)
            if row is None:
                continue
            cols = {c["name"]: c for c in EXTENSION_TABLES[t]["columns"]}
            fields = [{"name": k, "type": cols[k]["type"],
                       "value": "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))}
                      for k, v in row.items() if k in cols]
            tables.append({"recordFound": True, "name": t, "_field": _one_or_many(fields)})
    if tables:
        out["_extension_data"] = {"_table_extension": _one_or_many(tables)}
    return out


def _split_param(name: str) -> list[str]:
    raw = request.args.get(name, "")
    return [p.strip().lower() for p in raw.split(",") if p.strip()]


# ----------------------------------------------------------------------------- contacts

#: ``GET /ws/schema/table/person?q=...``: the PERSON columns a plugin can search contacts by
#: (field -> SQL column). Which PERSON columns the table API exposes is not in the reference
#: (inferred); first and last name are what every matching rule starts from.
PERSON_COLUMNS = {"id": "id", "firstname": "first_name", "middlename": "middle_name",
                  "lastname": "last_name", "isactive": "active"}
PERSON_COLUMNS.update({f"person.{k}": v for k, v in list(PERSON_COLUMNS.items())})
PERSON_NUMERIC = {"id", "active"}
CODESET_COLUMNS = ("codesetid", "codetype", "code", "displayvalue", "description",
                   "uidisplayorder", "isvisible")
CODESET_NUMERIC = {"codesetid", "uidisplayorder", "isvisible"}
#: the six legacy contact types of GET /ws/contacts/student/original_contact_types/in_use
#: (the reference names "mother, father…"; the rest inferred)
ORIGINAL_CONTACT_TYPES = ("mother", "father", "guardian", "emergency1", "emergency2",
                          "emergency3")
#: Field rules of each contacts-API object. Lengths are not in the reference (inferred: the
#: student's where there is one); codes come from CODE_SETS.
PERSON_SPEC = {
    "fields": ("firstName", "middleName", "lastName", "prefix", "suffix", "gender", "employer",
               "stateContactNumber", "contactNumber", "stateExcludeFromReporting", "active"),
    "required": ("firstName", "lastName"),
    "lengths": {"firstName": 50, "middleName": 30, "lastName": 50, "employer": 60,
                "stateContactNumber": 32, "contactNumber": 32},
    "codes": {"prefix": "Prefix", "suffix": "Suffix", "gender": "Gender"},
    "bools": ("stateExcludeFromReporting", "active"),
}
SUB_SPECS: dict[str, dict] = {
    "emails": {"id": "contactEmailId", "kind": "email", "flag": "primary",
               "fields": ("primary", "type", "address"), "required": ("address",),
               "lengths": {"address": 100}, "codes": {"type": "Email"}, "bools": ("primary",)},
    "phones": {"id": "contactsPhoneId", "kind": "phone", "flag": "preferred",
               "fields": ("sequence", "preferred", "phoneType", "phoneNumber", "extension",
                          "sms"),
               "required": ("phoneType", "phoneNumber"),
               "lengths": {"phoneNumber": 30, "extension": 10}, "codes": {"phoneType": "Phone"},
               "bools": ("preferred", "sms"), "ints": ("sequence",)},
    "addresses": {"id": "contactsAddressId", "kind": "address",
                  "fields": ("sequence", "addressType", "street", "linetwo", "unit", "city",
                             "state", "country", "postalcode", "startDate", "endDate"),
                  "required": ("addressType", "street", "city"),
                  "lengths": {"street": 60, "linetwo": 60, "unit": 10, "city": 50,
                              "postalcode": 10},
                  "codes": {"addressType": "Address", "state": "State", "country": "Country"},
                  "dates": ("startDate", "endDate"), "ints": ("sequence",)},
}
LINK_SPEC = {
    "fields": ("sequence", "originalContactType", "autosendHowOften", "emailSummary",
               "assignmentDetails", "attendanceDetails", "schoolAnnouncements", "balanceAlert"),
    "bools": ("emailSummary", "assignmentDetails", "attendanceDetails", "schoolAnnouncements",
              "balanceAlert"),
    "ints": ("sequence", "autosendHowOften"),
    "choices": {"originalContactType": ORIGINAL_CONTACT_TYPES, "autosendHowOften": (0, 1, 7, 30)},
}
DETAIL_SPEC = {
    "fields": ("relationship", "relationshipNote", "custodial", "emergency", "livesWith",
               "schoolPickup", "receivesMail", "startDate", "endDate",
               "excludeFromStateReporting", "active"),
    "lengths": {"relationshipNote": 200},
    "codes": {"relationship": "Relationship"},
    "bools": ("custodial", "emergency", "livesWith", "schoolPickup", "receivesMail",
              "excludeFromStateReporting", "active"),
    "dates": ("startDate", "endDate"),
}
#: a detail PowerSchool creates when a link is posted without one (values inferred)
DETAIL_DEFAULTS = {"relationship": None, "relationshipNote": None, "custodial": False,
                   "emergency": False, "livesWith": False, "schoolPickup": False,
                   "receivesMail": False, "endDate": None, "excludeFromStateReporting": False,
                   "active": True}
CONTACT_REF = "/ws/contacts/insertUpdateContact"


def _cerr(field: str, code: str, description: str) -> dict:
    return {"field": field, "error_code": code, "error_description": description}


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def check_fields(obj: Any, spec: dict, prefix: str, errors: list, *,
                 partial: bool = False) -> dict:
    """Validate one contacts-API object against ``spec``; return its known fields, cleaned.
    ``partial`` (PUT): only what is sent is checked, but required fields cannot be blanked."""
    if not isinstance(obj, dict):
        errors.append(_cerr(prefix.rstrip(".") or "body", "INVALID_VALUE", "Must be an object."))
        return {}
    out: dict[str, Any] = {}
    for name in spec["fields"]:
        if name not in obj:
            continue
        value, field = obj[name], prefix + name
        if value is None or value == "":
            out[name] = None
            continue
        if name in spec.get("bools", ()):
            if _bool(value) is None:
                errors.append(_cerr(field, "INVALID_VALUE", f"{name} must be true or false."))
                continue
            value = _bool(value)
        elif name in spec.get("ints", ()):
            if _as_int(value) is None:
                errors.append(_cerr(field, "INVALID_VALUE", f"{name} must be a whole number."))
                continue
            value = _as_int(value)
        elif name in spec.get("dates", ()):
            if not _valid_date(value):
                errors.append(_cerr(field, "INVALID_DATE", f"{name} must be a date as YYYY-MM-DD."))
                continue
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            errors.append(_cerr(field, "INVALID_VALUE", f"{name} must be text."))
            continue
        else:
            value = str(value)
        limit = spec.get("lengths", {}).get(name)
        if limit and len(str(value)) > limit:
            errors.append(_cerr(field, "INVALID_LENGTH",
                                f"{name} exceeds the maximum length of {limit}."))
            continue
        code_type = spec.get("codes", {}).get(name)
        if code_type:
            codes = [c for c, _ in CODE_SETS[code_type]]
            if value not in codes:
                errors.append(_cerr(field, "INVALID_CODESET_VALUE",
                                    f"{name} must be a code of the code set '{code_type}': "
                                    + ", ".join(codes) + "."))
                continue
        choices = spec.get("choices", {}).get(name)
        if choices and value not in choices:
            errors.append(_cerr(field, "INVALID_VALUE",
                                f"{name} must be one of {', '.join(map(str, choices))}."))
            continue
        out[name] = value
    for name in spec.get("required", ()):
        if (not partial and not _present(obj.get(name))) or (partial and name in obj
                                                              and not _present(obj[name])):
            errors.append(_cerr(prefix + name, "REQUIRED_FIELD_MISSING", f"{name} is required."))
    if "address" in spec["fields"] and _present(out.get("address")) \
            and "@" not in str(out["address"]):
        errors.append(_cerr(prefix + "address", "INVALID_VALUE", "Not an email address."))
    if "phoneNumber" in out and out["phoneNumber"] and not 7 <= len(_digits(out["phoneNumber"])) <= 15:
        errors.append(_cerr(prefix + "phoneNumber", "INVALID_VALUE",
                            "A phone number needs 7 to 15 digits."))
    if spec.get("dates") and out.get("startDate") and out.get("endDate") \
            and out["endDate"] < out["startDate"]:
        errors.append(_cerr(prefix + "endDate", "INVALID_DATE", "endDate is before startDate."))
    return out


def _digits(value: Any) -> str:
    return re.sub(r"\D", "", str(value or ""))


def _objects(body: dict, key: str, prefix: str, errors: list) -> list:
    """``body[key]`` as a list (an object alone counts as one)."""
    value = body.get(key)
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if not isinstance(value, list):
        errors.append(_cerr(prefix + key, "INVALID_VALUE", f"{key} must be a list."))
        return []
    return value


def _overlaps(details: list[dict]) -> bool:
    spans = sorted((d.get("startDate") or "0000-01-01", d.get("endDate") or "9999-12-31")
                   for d in details if d.get("active", True) is not False)
    return any(b[0] <= a[1] for a, b in zip(spans, spans[1:]))


def check_details(items: list, prefix: str, errors: list, existing: list[dict] = ()) -> list[dict]:
    details = []
    for i, item in enumerate(items):
        detail = check_fields(item, DETAIL_SPEC, f"{prefix}studentDetails[{i}].", errors)
        details.append({**DETAIL_DEFAULTS, "startDate": dt.date.today().isoformat(), **detail})
    if _overlaps([*existing, *details]):
        errors.append(_cerr(f"{prefix}studentDetails", "OVERLAPPING_DATES",
                            "The date ranges of a contact's details for one student must not "
                            "overlap."))
    return details


def check_link(store: "SandboxStore", item: Any, prefix: str,
               errors: list) -> tuple[int | None, dict]:
    """A new contact-student association: (student dcid, stored link)."""
    link = check_fields(item, LINK_SPEC, prefix, errors)
    if not isinstance(item, dict):
        return None, link
    dcid = None
    number = item.get("studentNumber")
    if not _present(number):
        errors.append(_cerr(prefix + "studentNumber", "REQUIRED_FIELD_MISSING",
                            "studentNumber is required when adding a student to a contact."))
    else:
        dcid = store.dcid_for_local_id(str(number).strip())
        if dcid is None:
            errors.append(_cerr(prefix + "studentNumber", "INVALID_STUDENT_NUMBER",
                                f"No student has student number {number}."))
    if link.get("sequence") is not None and link["sequence"] < 1:
        errors.append(_cerr(prefix + "sequence", "INVALID_VALUE", "sequence starts at 1."))
    items = _objects(item, "studentDetails", prefix, errors)
    details = check_details(items, prefix, errors)
    if not details:  # PowerSchool adds one with defaults
        details = [{**DETAIL_DEFAULTS, "startDate": dt.date.today().isoformat()}]
    link["studentDetails"] = details
    return dcid, link


def _with_sub_ids(store: "SandboxStore", key: str, items: list[dict], current: list[dict]) -> None:
    """Give new emails/phones/addresses their ids, a sequence and one primary/preferred."""
    spec = SUB_SPECS[key]
    for item in items:
        item.setdefault(spec["id"], store.next_id(spec["kind"]))
        if "sequence" in spec["fields"] and item.get("sequence") is None:
            item["sequence"] = 1 + max([_as_int(x.get("sequence")) or 0 for x in current] or [0])
        flag = spec.get("flag")
        if flag:
            if item.get(flag):
                for other in current:
                    other[flag] = False
            item.setdefault(flag, not any(x.get(flag) for x in current))
        current.append(item)


def _link_sequence(store: "SandboxStore", dcid: int) -> int:
    return 1 + max([_as_int(doc.get("sequence")) or 0
                    for _, _, _, doc in store.links(student_dcid=dcid)] or [0])


def _save_details(store: "SandboxStore", details: list[dict]) -> None:
    for d in details:
        d.setdefault("studentContactDetailId", store.next_id("studentcontactdetail"))


def possible_duplicates(store: "SandboxStore", doc: dict, exclude: int | None = None) -> list[int]:
    """Contacts with the same first and last name and a shared phone or email (the
    matching rule contacts.md describes)."""
    same_name = [(cid, json.loads(other)) for cid, other in store.conn.execute(
        "SELECT id, doc FROM contacts WHERE first_name = ? COLLATE NOCASE"
        " AND last_name = ? COLLATE NOCASE", (doc.get("firstName"), doc.get("lastName")))]
    phones = {_digits(p.get("phoneNumber")) for p in doc.get("phones") or []} - {""}
    emails = {str(e.get("address") or "").lower() for e in doc.get("emails") or []} - {""}
    hits = []
    for cid, other in same_name:
        if cid == exclude:
            continue
        if phones & {_digits(p.get("phoneNumber")) for p in other.get("phones") or []} or \
                emails & {str(e.get("address") or "").lower() for e in other.get("emails") or []}:
            hits.append(cid)
    return hits


def render_link(store: "SandboxStore", scid: int, dcid: int, doc: dict) -> dict:
    student = store.get(dcid) or {}
    name = student.get("name") or {}
    se = student.get("school_enrollment") or {}
    school = next((s for s in SCHOOLS if s["school_number"] == _as_int(se.get("school_number"))),
                  None)
    out = {"studentContactId": scid, "sequence": doc.get("sequence"), "dcid": dcid,
           "studentNumber": _s(student.get("local_id")), "firstName": name.get("first_name"),
           "middleName": name.get("middle_name"), "lastName": name.get("last_name"),
           "schoolAbbr": "".join(w[0] for w in school["name"].split()) if school else None,
           "schoolNumber": school["school_number"] if school else None}
    for key in LINK_SPEC["fields"]:
        if key != "sequence":
            out[key] = doc.get(key)
    out["canAccessData"] = False
    out["studentDetails"] = [{"studentContactDetailId": d.get("studentContactDetailId"),
                              "studentContactId": scid,
                              **{k: d.get(k) for k in DETAIL_SPEC["fields"]}}
                             for d in doc.get("studentDetails") or []]
    return out


def render_contact(store: "SandboxStore", cid: int, doc: dict, *, children: bool = True) -> dict:
    out: dict[str, Any] = {"contactId": cid}
    out.update({k: doc.get(k) for k in PERSON_SPEC["fields"]})
    if out.get("active") is None:
        out["active"] = True
    if not children:
        return out
    for key, spec in SUB_SPECS.items():
        items = [{spec["id"]: x.get(spec["id"]), **{k: x.get(k) for k in spec["fields"]}}
                 for x in doc.get(key) or []]
        if "sequence" in spec["fields"]:
            items.sort(key=lambda x: (x.get("sequence") or 0, x[spec["id"]]))
        out[key] = items
    out["contactStudents"] = [render_link(store, scid, dcid, ldoc)
                              for scid, _, dcid, ldoc in store.links(contact_id=cid)]
    out["@extensions"] = ""
    return out


def saved(action: str, cid: int, saved_object: Any, warnings: list | None = None) -> dict:
    """The contacts API's save answer (reference: contacts.md)."""
    body: dict[str, Any] = {"status": "VALID", "action": action,
                            "_success_message": {"id": cid, "ref": CONTACT_REF}}
    if warnings:
        body["_warning_message"] = {"_warning": warnings}
    body["savedObject"] = saved_object
    return body


def register_contacts_api(app: Flask, store: "SandboxStore", fail) -> None:
    """The contacts plugin API (``/ws/contacts/...``) and the schema-table reads a plugin
    uses next to it (``codeset``, ``person``)."""

    def invalid(action: str, errors: list, status: int = 400) -> Response:
        # Errors sit under _error_message._warning (reference); HTTP 400 and status
        # "INVALID" are inferred (the reference lists 400 for these calls).
        r = jsonify({"status": "INVALID", "action": action,
                     "_error_message": {"_warning": errors}})
        r.status_code = status
        return r

    def body_object() -> dict | None:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None

    def not_an_object(action: str) -> Response:
        return invalid(action, [_cerr("body", "INVALID_VALUE", "Send a JSON object.")])

    def contact_or_404(cid: int):
        doc = store.contact_get(cid)
        return doc, (None if doc is not None else fail(404, f"Contact {cid} not found"))

    def deleted(cid: int) -> Response:
        return jsonify({"status": "VALID", "action": "DELETE",
                        "_success_message": {"Id": cid, "ref": "/ws/contacts/"}})

    def add(rule: str, view, methods: list[str]) -> None:
        app.add_url_rule(rule, endpoint=f"{methods[0]} {rule}", view_func=view, methods=methods)

    # -- the contact itself
    def create_contact():
        body = body_object()
        if body is None:
            return not_an_object("INSERT")
        errors: list[dict] = []
        with store.lock:
            doc = check_fields(body, PERSON_SPEC, "", errors)
            subs = {key: [check_fields(x, spec, f"{key}[{i}].", errors)
                          for i, x in enumerate(_objects(body, key, "", errors))]
                    for key, spec in SUB_SPECS.items()}
            # contactStudents inline in the create body: the GET shape carries them, so a
            # create probably may too (inferred, contacts.md)
            links, seen = [], set()
            for i, item in enumerate(_objects(body, "contactStudents", "", errors)):
                dcid, link = check_link(store, item, f"contactStudents[{i}].", errors)
                if dcid is not None and dcid in seen:
                    errors.append(_cerr(f"contactStudents[{i}].studentNumber",
                                        "DUPLICATE_ASSOCIATION",
                                        "The contact is already associated with this student."))
                seen.add(dcid)
                links.append((dcid, link))
            if errors:
                return invalid("INSERT", errors)
            for key, items in subs.items():
                doc[key] = []
                _with_sub_ids(store, key, items, doc[key])
            warnings = [{"field": "contact", "warning_code": "POSSIBLE_DUPLICATE_CONTACT",
                         "warning_description": f"Contact {other} has the same name and a "
                                                f"shared phone or email (inferred warning)."}
                        for other in possible_duplicates(store, doc)]
            store.conn.execute("BEGIN")
            try:
                cid = store.contact_insert(doc)
                for dcid, link in links:
                    if link.get("sequence") is None:
                        link["sequence"] = _link_sequence(store, dcid)
                    _save_details(store, link["studentDetails"])
                    store.link_insert(cid, dcid, link)
                store.conn.execute("COMMIT")
            except BaseException:
                store.conn.execute("ROLLBACK")
                raise
            return jsonify(saved("INSERT", cid, render_contact(store, cid, doc), warnings))

    add("/ws/contacts/contact", create_contact, ["POST"])

    def get_contact(cid):
        with store.lock:
            doc, missing = contact_or_404(cid)
            return missing or jsonify(render_contact(store, cid, doc))

    add("/ws/contacts/contact/<int:cid>", get_contact, ["GET"])

    def get_contacts():
        raw = ",".join(request.args.getlist("contactids"))
        ids = [_as_int(x) for x in raw.split(",") if x.strip()]
        if not ids or any(i is None for i in ids):
            return fail(400, "contactids must be a comma-separated list of contact ids")
        with store.lock:
            found = [(i, store.contact_get(i)) for i in dict.fromkeys(ids)]
            return jsonify([render_contact(store, i, d) for i, d in found if d is not None])

    add("/ws/contacts/contacts", get_contacts, ["GET"])

    def delete_contact(cid):
        with store.lock:
            _, missing = contact_or_404(cid)
            if missing:
                return missing
            store.contact_delete(cid)
        return deleted(cid)

    add("/ws/contacts/<int:cid>", delete_contact, ["DELETE"])

    def demographics(cid):
        with store.lock:
            doc, missing = contact_or_404(cid)
            if missing:
                return missing
            if request.method == "GET":
                return jsonify(render_contact(store, cid, doc, children=False))
            body = body_object()
            if body is None:
                return not_an_object("UPDATE")
            errors: list[dict] = []
            changes = check_fields(body, PERSON_SPEC, "", errors, partial=True)
            if errors:
                return invalid("UPDATE", errors)
            doc.update(changes)
            store.contact_update(cid, doc)
            return jsonify(saved("UPDATE", cid, render_contact(store, cid, doc, children=False)))

    add("/ws/contacts/<int:cid>/demographics", demographics, ["GET", "PUT"])

    # -- emails, phones, addresses
    for key, spec in SUB_SPECS.items():
        def sub_list(cid, key=key, spec=spec):
            with store.lock:
                doc, missing = contact_or_404(cid)
                if missing:
                    return missing
                if request.method == "GET":
                    return jsonify(render_contact(store, cid, doc)[key])
                body = body_object()
                if body is None:
                    return not_an_object("INSERT")
                errors: list[dict] = []
                item = check_fields(body, spec, "", errors)
                if errors:
                    return invalid("INSERT", errors)
                current = doc.setdefault(key, [])
                _with_sub_ids(store, key, [item], current)
                store.contact_update(cid, doc)
                shown = next(x for x in render_contact(store, cid, doc)[key]
                             if x[spec["id"]] == item[spec["id"]])
                return jsonify(saved("INSERT", cid, shown))

        def sub_one(cid, item_id, key=key, spec=spec):
            with store.lock:
                doc, missing = contact_or_404(cid)
                if missing:
                    return missing
                current = doc.setdefault(key, [])
                item = next((x for x in current if x.get(spec["id"]) == item_id), None)
                if item is None:
                    return fail(404, f"{key[:-1] if key != 'addresses' else 'address'} "
                                     f"{item_id} not found for contact {cid}")
                if request.method == "DELETE":
                    current.remove(item)
                    store.contact_update(cid, doc)
                    return deleted(cid)
                if request.method == "PUT":
                    body = body_object()
                    if body is None:
                        return not_an_object("UPDATE")
                    errors: list[dict] = []
                    changes = check_fields(body, spec, "", errors, partial=True)
                    if errors:
                        return invalid("UPDATE", errors)
                    flag = spec.get("flag")
                    if flag and changes.get(flag):
                        for other in current:
                            other[flag] = False
                    item.update(changes)
                    store.contact_update(cid, doc)
                shown = next(x for x in render_contact(store, cid, doc)[key]
                             if x[spec["id"]] == item_id)
                return jsonify(saved("UPDATE", cid, shown) if request.method == "PUT" else shown)

        add(f"/ws/contacts/<int:cid>/{key}", sub_list, ["GET", "POST"])
        add(f"/ws/contacts/<int:cid>/{key}/<int:item_id>", sub_one, ["GET", "PUT", "DELETE"])

    # -- contact <-> student associations and their dated details
    def link_or_404(cid: int, scid: int):
        rows = store.links(contact_id=cid, link_id=scid)
        if not rows:
            return None, fail(404, f"Student contact {scid} not found for contact {cid}")
        return rows[0], None

    def students(cid):
        with store.lock:
            _, missing = contact_or_404(cid)
            if missing:
                return missing
            if request.method == "GET":
                return jsonify([render_link(store, scid, dcid, doc)
                                for scid, _, dcid, doc in store.links(contact_id=cid)])
            body = body_object()
            if body is None:
                return not_an_object("INSERT")
            errors: list[dict] = []
            dcid, link = check_link(store, body, "", errors)
            if dcid is not None and store.links(contact_id=cid, student_dcid=dcid):
                errors.append(_cerr("studentNumber", "DUPLICATE_ASSOCIATION",
                                    "The contact is already associated with this student."))
            if errors:
                return invalid("INSERT", errors)
            if link.get("sequence") is None:
                link["sequence"] = _link_sequence(store, dcid)
            _save_details(store, link["studentDetails"])
            scid = store.link_insert(cid, dcid, link)
            return jsonify(saved("INSERT", cid, render_link(store, scid, dcid, link)))

    add("/ws/contacts/<int:cid>/students", students, ["GET", "POST"])

    def student(cid, scid):
        with store.lock:
            row, missing = link_or_404(cid, scid)
            if missing:
                return missing
            _, _, dcid, doc = row
            if request.method == "DELETE":
                store.link_delete(scid)
                return deleted(cid)
            if request.method == "PUT":  # details in the body are ignored (reference)
                body = body_object()
                if body is None:
                    return not_an_object("UPDATE")
                errors: list[dict] = []
                changes = check_fields(body, LINK_SPEC, "", errors, partial=True)
                if changes.get("sequence") is not None and changes["sequence"] < 1:
                    errors.append(_cerr("sequence", "INVALID_VALUE", "sequence starts at 1."))
                if errors:
                    return invalid("UPDATE", errors)
                doc.update(changes)
                store.link_update(scid, doc)
                return jsonify(saved("UPDATE", cid, render_link(store, scid, dcid, doc)))
            return jsonify(render_link(store, scid, dcid, doc))

    add("/ws/contacts/<int:cid>/students/<int:scid>", student, ["GET", "PUT", "DELETE"])

    def details(cid, scid):
        with store.lock:
            row, missing = link_or_404(cid, scid)
            if missing:
                return missing
            _, _, dcid, doc = row
            if request.method == "GET":
                return jsonify(render_link(store, scid, dcid, doc)["studentDetails"])
            body = body_object()
            if body is None:
                return not_an_object("INSERT")
            errors: list[dict] = []
            existing = doc.setdefault("studentDetails", [])
            [detail] = check_details([body], "", errors, existing)
            if errors:
                for e in errors:
                    e["field"] = e["field"].replace("studentDetails[0].", "")
                return invalid("INSERT", errors)
            _save_details(store, [detail])
            existing.append(detail)
            store.link_update(scid, doc)
            shown = next(d for d in render_link(store, scid, dcid, doc)["studentDetails"]
                         if d["studentContactDetailId"] == detail["studentContactDetailId"])
            return jsonify(saved("INSERT", cid, shown))

    add("/ws/contacts/<int:cid>/students/<int:scid>/studentdetails", details, ["GET", "POST"])

    def detail(cid, scid, did):
        with store.lock:
            row, missing = link_or_404(cid, scid)
            if missing:
                return missing
            _, _, dcid, doc = row
            existing = doc.setdefault("studentDetails", [])
            item = next((d for d in existing if d.get("studentContactDetailId") == did), None)
            if item is None:
                return fail(404, f"Student contact detail {did} not found")
            if request.method == "DELETE":
                existing.remove(item)
                store.link_update(scid, doc)
                return deleted(cid)
            if request.method == "PUT":
                body = body_object()
                if body is None:
                    return not_an_object("UPDATE")
                errors: list[dict] = []
                changes = check_fields(body, DETAIL_SPEC, "", errors, partial=True)
                others = [d for d in existing if d is not item]
                if not errors and _overlaps([*others, {**item, **changes}]):
                    errors.append(_cerr("startDate", "OVERLAPPING_DATES",
                                        "The date ranges of a contact's details for one "
                                        "student must not overlap."))
                if errors:
                    return invalid("UPDATE", errors)
                item.update(changes)
                store.link_update(scid, doc)
            shown = next(d for d in render_link(store, scid, dcid, doc)["studentDetails"]
                         if d["studentContactDetailId"] == did)
            return jsonify(saved("UPDATE", cid, shown) if request.method == "PUT" else shown)

    add("/ws/contacts/<int:cid>/students/<int:scid>/studentdetails/<int:did>", detail,
        ["GET", "PUT", "DELETE"])

    # -- a student's contacts
    def student_contacts(dcid):
        with store.lock:
            if store.get(dcid) is None:
                return fail(404, f"Student {dcid} not found")
            ids = list(dict.fromkeys(cid for _, cid, _, _ in store.links(student_dcid=dcid)))
            if not ids:
                return Response(status=204)
            return jsonify([render_contact(store, cid, store.contact_get(cid)) for cid in ids
                            if store.contact_get(cid) is not None])

    add("/ws/contacts/student/<int:dcid>", student_contacts, ["GET"])

    def types_in_use(dcid):
        with store.lock:
            if store.get(dcid) is None:
                return fail(404, f"Student {dcid} not found")
            used = [doc.get("originalContactType") for _, _, _, doc in
                    store.links(student_dcid=dcid) if doc.get("originalContactType")]
            return jsonify(list(dict.fromkeys(used)))

    add("/ws/contacts/student/original_contact_types/in_use/<int:dcid>", types_in_use, ["GET"])

    # -- schema tables next to the contacts API: code sets and a search of people
    def table_rows(table: str, count_only: bool):
        name = table.lower()
        q = request.args.get("q")
        if name == "codeset":
            columns = {c: c for c in CODESET_COLUMNS}
            columns.update({f"codeset.{c}": c for c in CODESET_COLUMNS})
            sql_table, numeric, order = "codesets", CODESET_NUMERIC, "codesetid"
            key_column, shown = "codesetid", CODESET_COLUMNS
        elif name == "person":
            columns, sql_table, numeric, order = PERSON_COLUMNS, "contacts", PERSON_NUMERIC, "id"
            key_column = "id"
            shown = ("id", "firstname", "middlename", "lastname", "isactive")
        else:
            return fail(404, f"Table {table} not found")
        try:
            where, args = _fiql_where(q, columns, numeric)
        except BadQuery as exc:
            return fail(400, str(exc))
        with store.lock:
            if count_only:
                # {"count": N}: the shape of the named-query count (inferred for tables)
                n = store.conn.execute(f"SELECT COUNT(*) FROM {sql_table}{where}", args).fetchone()[0]
                return jsonify({"count": n})
            projection = [p.strip().lower().removeprefix(f"{name}.")
                          for p in request.args.get("projection", "*").split(",") if p.strip()]
            if projection in ([], ["*"]):
                projection = list(shown)
            unknown = [p for p in projection if p not in shown]
            if unknown:
                return fail(400, f"Invalid projection field(s): {', '.join(unknown)}")
            try:
                page = max(1, int(request.args.get("page", 1)))
                size = max(1, min(int(request.args.get("pagesize", 1000)), 1000))
            except ValueError:
                return fail(400, "page and pagesize must be whole numbers")
            sql_columns = [columns[c] if c in columns else c for c in shown]
            rows = store.conn.execute(
                f"SELECT {', '.join(sql_columns)} FROM {sql_table}{where} ORDER BY {order}"
                f" LIMIT ? OFFSET ?", [*args, size, (page - 1) * size]).fetchall()
        records = []
        for row in rows:
            values = dict(zip(shown, row))
            # column values come back as strings (inferred)
            records.append({"id": values[key_column], "name": name, "tables": {name: {
                p: "" if values[p] is None else str(values[p]) for p in projection}}})
        return jsonify({"name": name, "record": records, "@extensions": ""})

    add("/ws/schema/table/<table>", lambda table: table_rows(table, False), ["GET"])
    add("/ws/schema/table/<table>/count", lambda table: table_rows(table, True), ["GET"])


# ----------------------------------------------------------------------------- the app

def create_app(store: SandboxStore) -> Flask:
    app = Flask("sis_powerschool.sandbox")
    app.config["SANDBOX_STORE"] = store

    def fail(status: int, message: str, **extra) -> Response:
        response = jsonify({"message": message, **extra})
        response.status_code = status
        return response

    def retry_after_headers() -> dict:
        value = store.faults.get("retry_after")
        return {"Retry-After": str(value)} if value is not None else {}

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
                return fail(500, "Internal Server Error")
            if store.take("burst_429"):
                r = fail(429, "Too many requests")
                r.headers.update(retry_after_headers())
                return r
            if store.take("burst_503"):
                r = fail(503, "Service temporarily unavailable")
                r.headers.update(retry_after_headers())
                return r
            if store.take("malformed"):
                # Read the request first: werkzeug drains an unread body after answering,
                # which would wait forever for a client that waits for the cut answer.
                request.get_data()
                return malformed_response(faults.get("malformed_kind"), faults.get("malformed_body"))
        if faults["timeout_rate"] and store.rng.random() < faults["timeout_rate"]:
            time.sleep(faults["hang_s"])
            return fail(500, "sandbox: simulated timeout (the request was not processed)")
        if faults["error_rate"] and store.rng.random() < faults["error_rate"]:
            return fail(500, "Internal Server Error")
        if path.startswith("/ws/"):
            wait = store.throttle_wait()
            if wait > 0:
                seconds = max(1, int(wait + 0.999))
                r = fail(int(faults["throttle_status"]),
                         f"Too many requests, wait {seconds} seconds")
                r.headers.update(retry_after_headers())
                return r
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.startswith("Bearer ") else ""
            if not token or not store.token_valid(token):
                r = fail(401, "Invalid or expired access token")
                r.headers["WWW-Authenticate"] = 'Bearer realm="PowerSchool"'
                return r
            store.authorised(token)
        return None

    @app.after_request
    def _after(response):
        if g.get("generation") != store.generation:
            return response  # began before a reset: not part of the current log
        store.requests.append({"method": request.method, "path": request.path,
                               "query": request.query_string.decode("latin-1"),
                               "status": response.status_code,
                               "ms": round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 1),
                               # when it began and ended (wall clock; benchmarks measure how
                               # many requests were in flight at once)
                               "start": g.get("wall_started"), "end": time.time()})
        faults = store.faults
        if (faults.get("drip_bytes_per_s") and not request.path.startswith("/sandbox")
                and request.path.startswith(faults.get("fault_path") or "/")):
            rate = store.take_drip()
            if rate > 0:
                return drip_response(response, store, g.generation, rate)
        return response

    @app.errorhandler(404)
    def _404(e):
        return fail(404, "Not found")

    @app.errorhandler(405)
    def _405(e):
        return fail(405, "Method not allowed")

    # -- OAuth
    @app.post("/oauth/access_token")
    @app.post("/oauth/access_token/")
    def access_token():
        auth = request.headers.get("Authorization", "")
        client_id = secret = None
        if auth.startswith("Basic "):
            try:
                client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                client_id = secret = None
        if request.form.get("grant_type") != "client_credentials":
            return jsonify({"error": "unsupported_grant_type"}), 400
        if client_id != store.client_id or secret != store.client_secret:
            return jsonify({"error": "invalid_client"}), 401
        token, lifetime = store.issue_token()
        return jsonify({"access_token": token, "token_type": "Bearer", "expires_in": str(lifetime)})

    # -- discovery
    @app.get("/ws/v1/metadata")
    def metadata():
        size = int(store.faults["student_max_page_size"])
        return jsonify({"metadata": {
            "powerschool_version": "24.7.0.0.sandbox", "plugin_id": 4242, "state": "CA",
            "district_timezone": "America/Los_Angeles", "district_uuid": DISTRICT["district_uuid"],
            "student_max_page_size": size, "school_max_page_size": 100,
            "staff_max_page_size": 100, "section_max_page_size": 100,
            "course_max_page_size": 100, "term_max_page_size": 100,
            "schema_table_query_max_page_size": 1000}})

    @app.get("/ws/v1/district")
    def district():
        exps = _split_param("expansions")
        out = {"@expansions": "entry_codes, exit_codes, ethnicity_race_codes, race_codes",
               **DISTRICT}
        if "entry_codes" in exps:
            out["entry_codes"] = {"entry_code": _one_or_many(ENTRY_CODES)}
        if "exit_codes" in exps:
            out["exit_codes"] = {"exit_code": _one_or_many(EXIT_CODES)}
        if "ethnicity_race_codes" in exps:
            out["ethnicity_race_codes"] = {"ethnicity_race_code": _one_or_many(ETHNICITY_CODES)}
        if "race_codes" in exps:
            out["race_codes"] = {"race_code": _one_or_many(RACE_CODES)}
        return jsonify({"district": out})

    @app.get("/ws/v1/district/school")
    def schools():
        page, size = _paging(100)
        chosen = SCHOOLS[(page - 1) * size: page * size]
        body: dict = {"@expansions": "school_boundary, full_time_equivalencies, school_fees_setup"}
        if chosen:
            body["school"] = _one_or_many(copy.deepcopy(chosen))
        return jsonify({"schools": body})

    @app.get("/ws/v1/district/school/count")
    def schools_count():
        return jsonify({"resource": {"count": len(SCHOOLS)}})

    @app.get("/ws/schema/table/<table>/metadata")
    def table_metadata(table):
        spec = EXTENSION_TABLES.get(table.lower())
        if spec is None:
            return fail(404, f"Table {table} not found")
        show_access = "access" in _split_param("expansions")
        columns = []
        for c in spec["columns"]:
            col = {k: v for k, v in c.items() if k != "access" or show_access}
            columns.append(col)
        return jsonify({"name": table.upper(), "comment": spec["comment"],
                        "primaryKey": "ID", "columns": columns})

    # -- students: reading
    def _paging(default_size: int | None) -> tuple[int, int]:
        """page (from 1) and pagesize; pagesize is capped by the plugin's maximum, which is
        also its default (import-direction.md)."""
        largest = int(store.faults["student_max_page_size"])
        default_size = largest if default_size is None else default_size
        try:
            page = max(1, int(request.args.get("page", 1)))
            size = int(request.args.get("pagesize", default_size))
        except ValueError:
            page, size = 1, default_size
        size = max(1, min(size, largest))
        return page, size

    def _check_denied_expansions(exps: list[str]) -> Response | None:
        denied = {str(x).lower() for x in store.faults.get("denied_fields") or ()}
        if not denied:
            return None
        sections = {"name", *exps}
        hits = sorted(col for path, col in FIELD_COLUMNS.items()
                      if col in denied and (path[0] in sections or len(path) == 1))
        if not hits:
            return None
        return fail(403, "Validation Failed", errors=[
            {"resource": "student", "field": h, "code": "No access to the field"} for h in hits])

    def _list_students(school_number: str | None):
        exps, exts = _split_param("expansions"), _split_param("extensions")
        denied = _check_denied_expansions(exps)
        if denied is not None:
            return denied
        page, size = _paging(None)
        if store.take_page_error(page):
            return fail(500, "Internal Server Error")
        try:
            rows = store.search(request.args.get("q"), school_number=school_number,
                                limit=size, offset=(page - 1) * size)
        except BadQuery as exc:
            return fail(400, str(exc))
        base = request.host_url.rstrip("/")
        body: dict = {"@expansions": ", ".join(EXPANSIONS), "@extensions": ",".join(EXTENSION_TABLES)}
        if rows:
            body["student"] = _one_or_many([render_student(d, doc, exps, exts, base)
                                            for d, doc in rows])
        return jsonify({"students": body})

    def _count_students(school_number: str | None):
        try:
            return jsonify({"resource": {"count": store.count(request.args.get("q"),
                                                              school_number=school_number)}})
        except BadQuery as exc:
            return fail(400, str(exc))

    def _school_number(school_id: int) -> str | None:
        school = next((s for s in SCHOOLS if s["id"] == school_id), None)
        return str(school["school_number"]) if school else None

    @app.get("/ws/v1/district/student")
    def district_students():
        return _list_students(None)

    @app.get("/ws/v1/district/student/count")
    def district_students_count():
        return _count_students(None)

    @app.get("/ws/v1/school/<int:school_id>/student")
    def school_students(school_id):
        number = _school_number(school_id)
        return fail(404, "School not found") if number is None else _list_students(number)

    @app.get("/ws/v1/school/<int:school_id>/student/count")
    def school_students_count(school_id):
        number = _school_number(school_id)
        return fail(404, "School not found") if number is None else _count_students(number)

    @app.get("/ws/v1/student/<int:dcid>")
    def one_student(dcid):
        exps = _split_param("expansions")
        denied = _check_denied_expansions(exps)
        if denied is not None:
            return denied
        with store.lock:
            doc = store.get(dcid)
        if doc is None:
            return fail(404, "Student not found")
        return jsonify({"student": render_student(dcid, doc, exps, _split_param("extensions"),
                                                  request.host_url.rstrip("/"))})

    # -- students: writing
    @app.post("/ws/v1/student")
    def post_students():
        body = request.get_json(silent=True)
        students = body.get("students") if isinstance(body, dict) else None
        students = students.get("student") if isinstance(students, dict) else None
        if isinstance(students, dict):
            students = [students]
        if not isinstance(students, list) or not students:
            return fail(400, "Invalid request: expected {\"students\": {\"student\": [...]}}")
        denied = {str(x).lower() for x in store.faults.get("denied_fields") or ()}
        if denied:
            hits = sorted({h for s in students if isinstance(s, dict) for h in _walk_denied(s, denied)})
            if hits:
                return fail(403, "Validation Failed", errors=[
                    {"resource": "student", "field": h, "code": "No access to the field"}
                    for h in hits])
        base = request.host_url.rstrip("/")
        results, inserted, updated = [], 0, 0
        drop = {str(x) for x in store.faults.get("drop_results_for") or ()}
        with store.lock:
            store.conn.execute("BEGIN")
            try:
                for student in students:
                    if store.take("busy_records"):
                        results.append(_busy_result(student))
                        continue
                    result = _save_one(store, student, base)
                    if result["status"] == "SUCCESS":
                        if result["action"] == "INSERT":
                            inserted += 1
                        else:
                            updated += 1
                    local_id = student.get("local_id") if isinstance(student, dict) else None
                    if local_id is not None and str(local_id) in drop:
                        continue
                    results.append(result)
                store.conn.execute("COMMIT")
            except BaseException:
                store.conn.execute("ROLLBACK")
                raise
        if store.take("lost_answers"):
            return fail(500, "Internal Server Error (sandbox: saved, answer lost)")
        out: dict = {"insert_count": inserted, "update_count": updated, "delete_count": 0}
        if results:
            out["result"] = _one_or_many(results)
        return jsonify({"results": out})

    # -- sandbox admin (only the sandbox has these)
    @app.get("/sandbox/faults")
    def get_faults():
        return jsonify(store.faults)

    @app.post("/sandbox/faults")
    def post_faults():
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict):
            return fail(400, "Send a JSON object of faults.")
        unknown = sorted(k for k in changes if k not in DEFAULT_FAULTS and k not in ACTIONS)
        if unknown:
            return fail(400, f"Unknown faults: {', '.join(unknown)}", known=sorted(DEFAULT_FAULTS))
        try:
            return jsonify(store.set_faults(**changes))
        except ValueError as exc:
            return fail(400, str(exc), kinds=sorted(MALFORMED_KINDS))

    @app.get("/sandbox/dump")
    def dump():
        with store.lock:
            return jsonify({"students": store.dump()})

    @app.get("/sandbox/requests")
    def requests_log():
        return jsonify({"requests": list(store.requests)})

    @app.post("/sandbox/reset")
    def reset():
        store.reset()
        return jsonify({"ok": True})

    @app.get("/sandbox/contacts")
    def contacts_dump():
        return jsonify(store.dump_contacts())

    @app.post("/sandbox/empty")
    def empty():
        return jsonify({"ok": True, "message": "SIS emptied", **store.empty()})

    @app.post("/sandbox/renumber")
    def renumber():
        maps = store.renumber()
        return jsonify({"ok": True, "message": "SIS restored from a backup under new ids",
                        "students": {str(k): v for k, v in maps["students"].items()},
                        "contacts": {str(k): v for k, v in maps["contacts"].items()}})

    @app.post("/sandbox/students/<int:dcid>/change")
    def change_student(dcid):
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict) or not changes:
            return fail(400, "Send a JSON object of fields to change, e.g. "
                             '{"name.first_name": "Bea", "demographics.birth_date": null}.')
        try:
            student = store.change_student(dcid, changes)
        except ValueError as exc:
            return fail(400, str(exc))
        return fail(404, f"Student {dcid} not found") if student is None \
            else jsonify({"student": student})

    @app.post("/sandbox/seed")
    def seed():
        body = request.get_json(silent=True) or {}
        n = _as_int(body.get("students")) if isinstance(body, dict) else None
        if n is None or n < 0:
            return fail(400, 'Send {"students": N, "seed": S, "contacts": false}.')
        seed_value = body.get("seed", 0)
        ids = store.seed_students(n, seed=None if seed_value is None else int(seed_value),
                                  contacts=bool(body.get("contacts")))
        return jsonify({"ok": True, "created": len(ids),
                        "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None})

    register_contacts_api(app, store, fail)
    return app


def malformed_response(kind: str | None, body: str | None = None) -> Response:
    """The broken answer of the ``malformed`` fault (see MALFORMED_KINDS)."""
    if body is not None:
        return Response(str(body), status=200, content_type="application/json")
    if kind == "disconnect":
        text = '{"results": {"insert_count": 1, "result": [{"client_uid"'
        r = Response(text, status=200, content_type="application/json")
        r.headers["Content-Length"] = str(len(text) + 512)
        r.headers["Connection"] = "close"
        return r
    if kind == "html":
        return Response("<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
                        "<h1>Bad Gateway</h1><p>The proxy server received an invalid response "
                        "from an upstream server.</p></body></html>",
                        status=200, content_type="text/html; charset=utf-8")
    if kind == "not_json":
        return Response("Internal error: NullPointerException at line 1",
                        status=200, content_type="application/json")
    if kind == "empty":
        return Response("", status=200, content_type="application/json")
    if kind == "array":
        return Response("[]", status=200, content_type="application/json")
    if kind == "wrong_shape":
        return Response(json.dumps({k: ["unexpected"] for k in ANSWER_KEYS}), status=200,
                        content_type="application/json")
    if kind == "missing_keys":
        return Response(json.dumps({k: {} for k in ANSWER_KEYS}), status=200,
                        content_type="application/json")
    # "truncated" (the default)
    return Response('{"results": {"insert_count": 1, "result": [{"client_uid"',
                    status=200, content_type="application/json")


def drip_response(response: Response, store: SandboxStore, generation: int,
                  rate: float) -> Response:
    """``drip_bytes_per_s``: the same answer with its full Content-Length, but the body
    goes out a few bytes at a time, so no single read waits long while the whole answer
    takes ages. Stops (cut short) when the sandbox is reset; sends the rest at once when
    drip_bytes_per_s is set again meanwhile."""
    body = response.get_data()
    step = max(1, int(rate // 4))  # about four writes a second
    version = store.drip_version

    def chunks():
        sent = 0
        while sent < len(body):
            if store.generation != generation:
                return
            if store.drip_version != version:
                yield body[sent:]
                return
            yield body[sent:sent + step]
            sent += step
            if sent < len(body):
                time.sleep(step / rate)

    out = Response(chunks(), status=response.status_code, headers=list(response.headers))
    out.headers["Content-Length"] = str(len(body))
    return out


def _busy_result(student: Any) -> dict:
    """``busy_records``: one record of a batch refused for now, HTTP 200 like any
    per-record error; the wording is inferred (the reference does not quote one)."""
    result: dict[str, Any] = {}
    if isinstance(student, dict) and student.get("client_uid") is not None:
        result["client_uid"] = student["client_uid"]
    action = str(student.get("action") or "").upper() if isinstance(student, dict) else ""
    result["action"] = action or None
    return {**result, "status": "ERROR", "error_message": {"error": _err(
        "student", "SERVER_BUSY",
        "The server is busy processing other requests. Please try again later.")}}


def _save_one(store: SandboxStore, student: Any, base: str) -> dict:
    if not isinstance(student, dict):
        return {"status": "ERROR", "action": None,
                "error_message": {"error": _err("student", "INVALID_VALUE",
                                                "Each student must be an object.")}}
    uid = student.get("client_uid")
    action = str(student.get("action") or "").upper()
    result: dict[str, Any] = {}
    if uid is not None:
        result["client_uid"] = uid
    result["action"] = action or None

    def error(errors: list[dict]) -> dict:
        return {**result, "status": "ERROR", "error_message": {"error": _one_or_many(errors)}}

    if action not in ("INSERT", "UPDATE"):
        return error([_err("student/action", "INVALID_ACTION", "action must be INSERT or UPDATE.")])
    existing, dcid = None, None
    if action == "UPDATE":
        dcid = _as_int(student.get("id"))
        if dcid is None:
            return error([_err("student/id", "INVALID_ID", "An update needs the student's id (DCID).")])
        existing = store.get(dcid)
        if existing is None:
            return error([_err("student/id", "INVALID_ID", f"No student has id {dcid}.")])
    errors = validate_student(student, action, existing, store.faults)
    ext_rows = _extension_rows(student, errors)
    local_id = _as_int(student.get("local_id"))
    if not errors and local_id is not None:
        holder = store.dcid_for_local_id(str(local_id))
        if holder is not None and holder != dcid:
            errors.append(_err("student/local_id", "INVALID_LOCAL_ID",
                               "Local ID already exists in the database and can not be used in "
                               + ("an insert." if action == "INSERT" else "an update.")))
    if errors:
        return error(errors)
    if action == "INSERT":
        doc = apply_student({}, student, ext_rows, insert=True)
        dcid = store.insert(doc)
    else:
        doc = apply_student(existing, student, ext_rows, insert=False)
        store.update(dcid, doc)
    return {**result, "status": "SUCCESS",
            "success_message": {"id": dcid, "ref": f"{base}/ws/v1/student/{dcid}"}}


# ----------------------------------------------------------------------------- running it

class QuietRequestHandler(WSGIRequestHandler):
    """No access log line per request (tests and benchmarks send thousands)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class SandboxHandle:
    """A sandbox running in a background thread (see ``serve_in_thread``)."""

    url: str
    store: SandboxStore
    server: Any
    thread: threading.Thread
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    extra: dict = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.server.server_port

    def set_faults(self, **faults: Any) -> dict:
        """Change faults now (see DEFAULT_FAULTS; also ``revoke_tokens=True``)."""
        return self.store.set_faults(**faults)

    @property
    def faults(self) -> dict:
        return copy.deepcopy(self.store.faults)

    def dump(self) -> list[dict]:
        """Every stored student, as stored."""
        with self.store.lock:
            return self.store.dump()

    def count(self) -> int:
        return self.store.count(None)

    def requests(self) -> list[dict]:
        """The requests seen so far: method, path, query, status, ms."""
        return list(self.store.requests)

    def clear_requests(self) -> None:
        self.store.requests.clear()

    def reset(self) -> None:
        """Forget students, contacts, tokens, the request log; faults back to their start
        values."""
        self.store.reset()

    def contacts(self) -> dict:
        """``{"contacts": [...], "links": [...]}``: every stored contact and link."""
        return self.store.dump_contacts()

    def seed_students(self, n: int, *, seed: int | None = 0, contacts: bool = False) -> list[int]:
        """Store ``n`` realistic students (see ``SandboxStore.seed_students``)."""
        return self.store.seed_students(n, seed=seed, contacts=contacts)

    def empty(self) -> dict:
        """Delete every student and contact ("SIS emptied"); faults and tokens stay."""
        return self.store.empty()

    def renumber(self) -> dict:
        """The same students and contacts under new ids; returns the old -> new maps."""
        return self.store.renumber()

    def change_student(self, dcid: int, changes: dict) -> dict | None:
        """Change a student directly in the SIS (``None`` clears a field)."""
        return self.store.change_student(dcid, changes)

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
                        client_id: str = DEFAULT_CLIENT_ID,
                        client_secret: str = DEFAULT_CLIENT_SECRET, seed: int | None = None,
                        quiet: bool = True, **faults: Any):
    unknown = sorted(k for k in faults if k not in DEFAULT_FAULTS)
    if unknown:
        raise TypeError(f"unknown sandbox faults: {', '.join(unknown)}")
    if faults.get("malformed_kind", "truncated") not in MALFORMED_KINDS:
        raise ValueError(f"malformed_kind must be one of {', '.join(MALFORMED_KINDS)}")
    store = SandboxStore(db, client_id=client_id, client_secret=client_secret,
                         faults=faults, seed=seed)
    app = create_app(store)
    server = make_server(host, port, app, threaded=True,
                         request_handler=QuietRequestHandler if quiet else None)
    return store, server


def serve_in_thread(*, port: int = 0, host: str = "127.0.0.1", db: str = ":memory:",
                    client_id: str = DEFAULT_CLIENT_ID, client_secret: str = DEFAULT_CLIENT_SECRET,
                    seed: int | None = None, **faults: Any) -> SandboxHandle:
    """Start a sandbox on ``host:port`` (0: any free port) in a daemon thread."""
    store, server = make_sandbox_server(host=host, port=port, db=db, client_id=client_id,
                                        client_secret=client_secret, seed=seed, **faults)
    thread = threading.Thread(target=server.serve_forever, name="powerschool-sandbox",
                              daemon=True)
    thread.start()
    url = f"http://{host}:{server.server_port}"
    return SandboxHandle(url=url, store=store, server=server, thread=thread,
                         client_id=client_id, client_secret=client_secret)


def seed_students(store: SandboxStore, n: int, *, start_local_id: int = 900001) -> None:
    """Store ``n`` existing example students (for demos: "Student Examples")."""
    first = ["Ana", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jada"]
    last = ["Alvarez", "Brown", "Chen", "Duarte", "Evans", "Fischer", "Garcia", "Huang"]
    with store.lock:
        for i in range(n):
            school = SCHOOLS[i % len(SCHOOLS)]
            grade = school["low_grade"] + 1 + i % (school["high_grade"] - school["low_grade"])
            local_id = start_local_id + i
            if store.dcid_for_local_id(str(local_id)) is not None:
                continue
            doc = {"local_id": local_id, "state_province_id": f"CA{local_id}",
                   "name": {"first_name": first[i % len(first)], "last_name": last[i % len(last)]},
                   "demographics": {"gender": "MF"[i % 2], "birth_date": f"{2020 - grade}-0{1 + i % 9}-15"},
                   "school_enrollment": {"enroll_status": "A", "grade_level": grade,
                                         "entry_date": "2025-08-20", "exit_date": "2026-06-10",
                                         "school_number": school["school_number"],
                                         "school_id": school["id"], "entry_code": "E1"}}
            store.insert(doc)


# ----------------------------------------------------------------------------- realistic students

SEED_FIRST_F = ("Olivia Emma Sophia Isabella Mia Amelia Ava Camila Luna Sofia Valentina Aria Zoe "
                "Layla Chloe Nora Hana Mei Priya Aaliyah Ximena Fatima Grace Lily Harper Maya "
                "Elena Leah Nadia Jasmine Ana Lucia Renata Guadalupe Kiara Abigail Yara Ruby "
                "Naomi Esther").split()
SEED_FIRST_M = ("Liam Noah Mateo Santiago Elijah James Lucas Sebastian Ethan Leo Daniel Jacob "
                "Diego Gabriel Aiden Kai Omar Arjun Minh Jayden Carlos Luis Miguel Angel Isaac "
                "David Samuel Adrian Julian Ezra Hiroshi Malik Andre Tomas Rafael Owen Wyatt "
                "Caleb Joaquin Emiliano").split()
SEED_LAST = ("Garcia Rodriguez Martinez Hernandez Lopez Gonzalez Perez Sanchez Ramirez Torres "
             "Flores Rivera Gomez Diaz Cruz Morales Reyes Gutierrez Ortiz Chavez Ramos Ruiz "
             "Alvarez Mendoza Castillo Jimenez Vasquez Romero Herrera Medina Aguilar Vargas "
             "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas "
             "Moore Jackson Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young "
             "Allen King Wright Scott Nguyen Tran Pham Le Kim Park Chen Wang Li Zhang Singh Patel "
             "Kaur Khan Ali Ahmed Yang Vang Xiong Lor Her Moua O'Brien McDonald Smith-Jones "
             "Garcia-Lopez").split() + ["De La Cruz", "Van Dyke"]
SEED_MIDDLE = "Marie Ann Lynn Rose Grace Jose Luis James Lee Alexander Michael Elizabeth".split()
SEED_STREETS = ("Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Olive Ave", "Shields Ave",
                "Blackstone Ave", "Palm Ave", "Fresno St", "Cherry Ave", "Peach Ave",
                "Clovis Ave", "Herndon Ave", "Ashlan Ave", "Dakota Ave", "Van Ness Blvd",
                "Sierra Vista Way", "Willow Ave", "Kings Canyon Rd", "Tulare St")
SEED_CITIES = (("Fresno", "937", "559"), ("Clovis", "936", "559"), ("Sanger", "936", "559"),
               ("Selma", "936", "559"), ("Madera", "936", "559"), ("Visalia", "932", "559"),
               ("Merced", "953", "209"), ("Hanford", "932", "559"))
SEED_EMPLOYERS = (None, None, "Fresno Unified", "Community Medical Centers", "Amazon",
                  "Valley Farms", "County of Fresno", "Self-employed", "Walmart", "CSU Fresno")
SEED_LANGUAGES = (("English", 62), ("Spanish", 28), ("Hmong", 4), ("Punjabi", 3),
                  ("Vietnamese", 2), ("Arabic", 1))
SEED_RACES = (("WH", 45), ("AS", 14), ("BL", 8), ("AI", 2), ("PI", 1))
_SEED_YEAR = 2025  # the school year the sandbox lives in: 2025-08-20 to 2026-06-10


def _picker(rng: random.Random, weighted: Any) -> Any:
    """A fast weighted choice (``rng.choices`` rebuilds its table on every call)."""
    values = [v for v, _ in weighted]
    cum = list(itertools.accumulate(w for _, w in weighted))
    total, pick = cum[-1], bisect.bisect_right
    return lambda: values[pick(cum, rng.random() * total)]


def _grade_school(grade: int) -> dict:
    return next(s for s in SCHOOLS if s["low_grade"] <= grade <= s["high_grade"])


def generate_families(n: int, *, seed: int | None = 0) -> list[dict]:
    """``n`` students in families of 1 to 3 children sharing a last name, an address, a
    home phone and their guardians. Everything but the local ids (see
    ``finish_seeded_student``). Deterministic for a given seed."""
    rng = random.Random(seed)
    choice, randint, rand = rng.choice, rng.randint, rng.random
    family_size = _picker(rng, ((1, 60), (2, 30), (3, 10)))
    grade_of = _picker(rng, [(-1, 3)] + [(g, 7) for g in range(13)])
    status_of = _picker(rng, (("A", 94), ("P", 3), ("I", 3)))
    race_of = _picker(rng, SEED_RACES)
    language_of = _picker(rng, SEED_LANGUAGES)
    families: list[dict] = []
    count = 0
    while count < n:
        k = min(n - count, family_size())
        number = len(families) + 1
        last = choice(SEED_LAST)
        city, zip3, area = choice(SEED_CITIES)
        street = f"{randint(100, 9899)} {choice(SEED_STREETS)}"
        postal = f"{zip3}{randint(1, 99):02d}"

        def phone() -> str:
            return f"({area}) 555-{randint(0, 9999):04d}"

        home = phone()
        mother = {"first": choice(SEED_FIRST_F), "last": last if rand() < 0.8 else choice(SEED_LAST),
                  "gender": "F", "relationship": "Mother"}
        father = {"first": choice(SEED_FIRST_M), "last": last, "gender": "M",
                  "relationship": "Father"}
        roll = rand()
        parents = [mother, father] if roll < 0.7 else [mother] if roll < 0.9 else [father]
        guardians = []
        for p in parents:
            email = f"{p['first']}.{p['last']}{number}@example.com".lower().replace(" ", "")
            email = email.replace("'", "")
            p["email"], p["mobile"] = email, phone()
            guardians.append({
                "firstName": p["first"], "middleName": None, "lastName": p["last"],
                "prefix": None, "suffix": None, "gender": p["gender"],
                "employer": choice(SEED_EMPLOYERS), "stateContactNumber": None,
                "contactNumber": None, "stateExcludeFromReporting": False, "active": True,
                "relationship": p["relationship"],
                "emails": [{"primary": True, "type": "Current", "address": email}],
                "phones": [{"sequence": 1, "preferred": True, "phoneType": "Mobile",
                            "phoneNumber": p["mobile"], "extension": None, "sms": True},
                           {"sequence": 2, "preferred": False, "phoneType": "Home",
                            "phoneNumber": home, "extension": None, "sms": False}],
                "addresses": [{"sequence": 1, "addressType": "Home", "street": street,
                               "linetwo": None, "unit": None, "city": city, "state": "CA",
                               "country": "US", "postalcode": postal,
                               "startDate": f"{_SEED_YEAR - randint(0, 8)}-07-01",
                               "endDate": None}]})
        emergency = (f"{choice(SEED_FIRST_F + SEED_FIRST_M)} {choice(SEED_LAST)}", phone())
        doctor = (f"Dr. {choice(SEED_LAST)}", phone()) if rand() < 0.4 else None
        language = language_of()
        hispanic = rand() < 0.45
        children = []
        for _ in range(k):
            grade = grade_of()
            school = _grade_school(grade)
            gender = "F" if rand() < 0.5 else "M"
            first = choice(SEED_FIRST_F if gender == "F" else SEED_FIRST_M)
            held_back = 1 if rand() < 0.03 else 0
            born = dt.date(_SEED_YEAR - 6 - grade - held_back, 9, 2) + dt.timedelta(
                days=randint(0, 364))
            entry_grade = randint(-1, grade)
            school_entry_grade = max(entry_grade, school["low_grade"])
            district_entry = f"{_SEED_YEAR - (grade - entry_grade)}-08-20"
            status = status_of()
            races = [race_of()]
            if rand() < 0.08:
                races.append(choice([c for c, _ in SEED_RACES if c != races[0]]))
            physical = {"street": street, "city": city, "state_province": "CA",
                        "postal_code": postal}
            mailing = dict(physical) if rand() < 0.85 else {
                "street": f"PO Box {randint(100, 9999)}", "city": city, "state_province": "CA",
                "postal_code": postal}
            contact = {"mother": f"{mother['first']} {mother['last']}" if mother in parents else None,
                       "father": f"{father['first']} {father['last']}" if father in parents else None,
                       "guardian_email": parents[0]["email"],
                       "emergency_contact_name1": emergency[0], "emergency_phone1": emergency[1]}
            if doctor:
                contact["doctor_name"], contact["doctor_phone"] = doctor
            se = {"enroll_status": status, "grade_level": grade, "entry_date": "2025-08-20",
                  "exit_date": "2026-06-10", "school_number": school["school_number"],
                  "school_id": school["id"]}
            if grade == entry_grade or rand() < 0.1:
                se["entry_code"] = choice(("E1", "E2", "E3")) if grade == entry_grade else "R1"
            ext = {"u_students_extension": {"photo_release": rand() < 0.8,
                                            "enrollment_source": "Returning student"},
                   "u_studentsuserfields": {"home_language": language, "siblings_enrolled": k - 1}}
            if rand() < 0.55:
                ext["u_students_extension"]["bus_route"] = f"R{randint(1, 40)}"
            child = {
                "name": {"first_name": first, "last_name": last},
                "demographics": {"gender": gender, "birth_date": born.isoformat(),
                                 "district_entry_date": district_entry,
                                 "projected_graduation_year": _SEED_YEAR + 1 + 12 - grade},
                "addresses": {"physical": physical, "mailing": mailing},
                "phones": {"main": {"number": home}},
                "contact": {key: v for key, v in contact.items() if v is not None},
                "ethnicity_race": {"federal_ethnicity": "YES" if hispanic else "NO",
                                   "scheduling_reporting_ethnicity": "H" if hispanic else "N",
                                   "races": [{"district_race_code": r} for r in races]},
                "school_enrollment": se,
                "initial_enrollment": {
                    "district_entry_date": district_entry,
                    "district_entry_grade_level": entry_grade,
                    "school_entry_date": f"{_SEED_YEAR - (grade - school_entry_grade)}-08-20",
                    "school_entry_grade_level": school_entry_grade},
                "schedule_setup": {"home_room": str(randint(1, 40))},
                "extensions": ext,
            }
            if rand() < 0.6:
                child["name"]["middle_name"] = choice(SEED_MIDDLE)
            if grade < 12:
                child["schedule_setup"].update({
                    "sched_next_year_grade": grade + 1,
                    "next_school": _grade_school(grade + 1)["school_number"]})
            children.append(child)
        families.append({"children": children, "guardians": guardians})
        count += k
    return families


def finish_seeded_student(child: dict, local_id: int, seed: int | None) -> dict:
    """The parts of a seeded student that follow from its local id: state student number
    (10 digits, unique per local id), username, student email."""
    first, last = child["name"]["first_name"], child["name"]["last_name"]
    slug = re.sub(r"[^a-z]", "", (first[0] + last).lower())
    ssid = 1_000_000_000 + (local_id * 7919 + (seed or 0) * 104729) % 9_000_000_000
    return {"local_id": local_id, "state_province_id": str(ssid),
            "student_username": f"{slug[:12]}{local_id % 1_000_000:06d}", **child,
            "contact_info": {"email": f"{slug[:20]}{local_id}@students.example.org"}}
