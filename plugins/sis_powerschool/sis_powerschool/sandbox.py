"""A PowerSchool-compatible sandbox SIS.

No public PowerSchool mock exists, so this server follows what is written in
``shared/reference/powerschool-api.md``: OAuth2 client credentials with
``expires_in`` as a string, ``/ws/v1/metadata``, the district and its code
expansions, schools, students (paging, the ``q`` search subset, ``/count``,
expansions and extensions), ``POST /ws/v1/student`` with PowerSchool's validation
rules and its quirks (per-record errors with HTTP 200; ``result`` and
``error_message.error`` are an object when there is one and an array when there
are several), extension-table metadata, and the per-plugin request throttle.

Only the sandbox has ``/sandbox/*``: ``GET/POST /sandbox/faults`` (fault
injection), ``GET /sandbox/dump`` (every stored student, read-only),
``GET /sandbox/requests`` (what was asked, without credentials) and
``POST /sandbox/reset``.

Start it from the command line (``enroll-sync sandbox powerschool --port 5001``)
or, in tests, with ``serve_in_thread(port=0)``.
"""
from __future__ import annotations

import base64
import collections
import copy
import datetime as dt
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

class SandboxStore:
    """Students in SQLite (a file or ``:memory:``), plus tokens, faults and a request log."""

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
        """)
        self.base_faults = {**copy.deepcopy(DEFAULT_FAULTS), **(faults or {})}
        self.faults = copy.deepcopy(self.base_faults)
        self.tokens: dict[str, float] = {}   # token -> expiry (time.time())
        self.requests: collections.deque = collections.deque(maxlen=20000)
        self.rng = random.Random(seed)
        self._last_api_request = 0.0
        self._authorised = 0  # API requests with a valid token (revoke_tokens_every)
        self.generation = 0  # bumped by reset(): requests begun before it are not logged

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
                self.faults[key] = copy.deepcopy(value)
            return copy.deepcopy(self.faults)

    def authorised(self) -> None:
        """Count an API request that had a valid token (``revoke_tokens_every``)."""
        with self.lock:
            every = int(self.faults.get("revoke_tokens_every") or 0)
            if every <= 0:
                return
            self._authorised += 1
            if self._authorised % every == 0:
                self.tokens.clear()

    def take(self, counter: str) -> bool:
        """Consume one unit of a counted fault; True when it applies."""
        with self.lock:
            if self.faults.get(counter, 0) > 0:
                self.faults[counter] -= 1
                return True
            return False

    def reset(self) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM students")
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
            self.generation += 1

    # -- tokens
    def issue_token(self) -> tuple[str, int]:
        with self.lock:
            lifetime = int(self.faults["token_lifetime"])
            token = str(uuid.uuid4())
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


def _s(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def _where(q: str | None, school_number: str | None) -> tuple[str, list]:
    clauses, args = [], []
    if school_number is not None:
        clauses.append("school_number = ?")
        args.append(str(school_number))
    for part in (q or "").split(";"):
        part = part.strip()
        if not part:
            continue
        m = Q_CLAUSE.match(part)
        if not m:
            raise BadQuery(f"Invalid search expression: {part}")
        name, op, value = m.groups()
        column = Q_COLUMNS.get(name.lower())
        if column is None:
            raise BadQuery(f"Invalid search field: {name}")
        if op in ("==", "!=") and "*" in value:
            pattern = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = pattern.replace("*", "%")
            clauses.append(f"{column} {'NOT ' if op == '!=' else ''}LIKE ? ESCAPE '\\'")
            args.append(pattern)
        elif column in NUMERIC_COLUMNS and INT_RE.match(value):
            expr = column if column == "dcid" else f"CAST({column} AS INTEGER)"
            guard = "" if column == "dcid" else f"{column} GLOB '[0-9-]*' AND "
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
        if exp == "demographics":
            out[exp] = doc.get("demographics") or {}
        elif exp == "addresses":
            out[exp] = doc.get("addresses") or {}
        elif exp == "phones":
            out[exp] = doc.get("phones") or {}
        elif exp == "school_enrollment":
            out[exp] = doc.get("school_enrollment") or {}
        elif exp in ("contact", "contact_info", "initial_enrollment", "schedule_setup"):
            out[exp] = doc.get(exp) or {}
        elif exp in ("alerts", "ethnicity_race", "fees", "lunch"):
            out[exp] = {}
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
            if not auth.startswith("Bearer ") or not store.token_valid(auth[7:].strip()):
                r = fail(401, "Invalid or expired access token")
                r.headers["WWW-Authenticate"] = 'Bearer realm="PowerSchool"'
                return r
            store.authorised()
        return None

    @app.after_request
    def _after(response):
        if g.get("generation") != store.generation:
            return response  # began before a reset: not part of the current log
        store.requests.append({"method": request.method, "path": request.path,
                               "query": request.query_string.decode("latin-1"),
                               "status": response.status_code,
                               "ms": round((time.monotonic() - g.get("started", time.monotonic())) * 1000, 1)})
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
        out = {"@expansions": "entry_codes, exit_codes, ethnicity_race_codes", **DISTRICT}
        if "entry_codes" in exps:
            out["entry_codes"] = {"entry_code": _one_or_many(ENTRY_CODES)}
        if "exit_codes" in exps:
            out["exit_codes"] = {"exit_code": _one_or_many(EXIT_CODES)}
        if "ethnicity_race_codes" in exps:
            out["ethnicity_race_codes"] = {"ethnicity_race_code": _one_or_many(ETHNICITY_CODES)}
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
    def _paging(default_size: int) -> tuple[int, int]:
        try:
            page = max(1, int(request.args.get("page", 1)))
            size = int(request.args.get("pagesize", default_size))
        except ValueError:
            page, size = 1, default_size
        size = max(1, min(size, int(store.faults["student_max_page_size"])))
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
        page, size = _paging(100)
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
        """Forget students, tokens, the request log; faults back to their start values."""
        self.store.reset()

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
