"""The PowerSchool adapter: settings, connection check, target fields, export.

What it sends is ``students.student[]`` for ``POST /ws/v1/student`` (see
``shared/reference/powerschool-api.md``). ``preview()`` and ``export()`` build each
student with the same function, so the Send Record preview is what is sent.

Export never creates a duplicate student when a sync is repeated: before an
INSERT it looks the student up by ``local_id`` (then by ``state_province_id``
when that is mapped) and turns the insert into an UPDATE of the match. The
lookups are range searches (``local_id=ge=..;local_id=le=..``) over the whole
export, split only when the range holds many unrelated students, so a sync of
new students costs one extra request, not one per student. A PowerSchool
``INVALID_LOCAL_ID`` answer to an insert (the student appeared meanwhile) is
resolved the same way. A look-up that fails is narrowed down (the range split in
halves) so that only the students it concerns are held back, with the true reason.

Per-record truth: an UPDATE of an id PowerSchool no longer has is ``NOT_FOUND`` (the
core re-sends it without the id); a per-record "busy, try again later" answer, or a
batch refused with 429/503 after the transport's retries, is ``RETRY`` (nothing was
saved); a student found by match-before-insert carries ``matched_by``. Students whose
fate is unknown (answer lost, garbled or too slow) are remembered, and looked up before
any later insert even when matching is off.
"""
from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from enroll_sync import (
    AdapterError, CheckResult, Code, ExportRecord, ExportResult, FieldError, FieldSection,
    OAuth2ClientCredentials, Outcome, SettingField, SISAdapter, SISStudent, StudentPage, TargetField,
    Transport, TransportError, flatten, nest,
)

log = logging.getLogger("sis_powerschool")

TOKEN_PATH = "/oauth/access_token"
STUDENT_PATH = "/ws/v1/student"
SEARCH_PATH = "/ws/v1/district/student"
EXT_PREFIX = "_extension_data."
#: every school_enrollment field is set on INSERT only
INSERT_ONLY_PREFIXES = ("school_enrollment.",)
INTEGER_KEYS = {
    "local_id", "demographics.projected_graduation_year", "school_enrollment.grade_level",
    "school_enrollment.school_number", "school_enrollment.full_time_equivalency.fteid",
    "initial_enrollment.district_entry_grade_level", "initial_enrollment.school_entry_grade_level",
    "schedule_setup.next_school", "schedule_setup.sched_next_year_grade",
}
#: what an import reads of every student
IMPORT_EXPANSIONS = ("demographics", "addresses", "phones", "contact", "contact_info", "school_enrollment",
                     "ethnicity_race", "initial_enrollment", "schedule_setup")
CHECK_EXPANSIONS = ("demographics", "addresses", "phones", "contact", "contact_info",
                    "school_enrollment", "initial_enrollment", "schedule_setup")
HIDDEN_COLUMNS = {"id", "studentsdcid", "whencreated", "whenmodified", "whocreated", "whomodified"}
NO_ACCESS = {"NoAccess", "BlackListNoAccess", "ViewOnly"}
EXT_TYPES = {"string": "string", "text": "string", "clob": "string", "integer": "integer",
             "long": "integer", "double": "number", "number": "number", "float": "number",
             "date": "date", "timestamp": "date", "boolean": "boolean"}
#: after these, sending the rest of an export is no use
FATAL_KINDS = ("unreachable", "tls", "auth")
#: a look-up that failed like this is not narrowed down (it would fail again, or the
#: server is not PowerSchool): every student it concerns is held back
NO_SPLIT_KINDS = (*FATAL_KINDS, "timeout", "malformed")
#: look-ups that may fail in one export while narrowing a failure down
LOOKUP_FAILURE_BUDGET = 8
#: batches in a row that timed out before the rest of an export is held back
SLOW_BATCHES_TO_STOP = 2
#: what match-before-insert reports as ExportResult.matched_by
MATCHED_BY = {"local_id": "local id", "state_province_id": "state student number"}
BUSY_CODES = frozenset({"SERVER_BUSY", "BUSY", "TRY_AGAIN", "TOO_MANY_REQUESTS",
                        "SERVICE_UNAVAILABLE"})
BUSY_RE = re.compile(r"\bbusy\b|try again later|temporarily unavailable|please try again|"
                     r"too many requests", re.IGNORECASE)
NOT_FOUND_CODES = frozenset({"NOT_FOUND", "RECORD_NOT_FOUND", "STUDENT_NOT_FOUND", "INVALID_ID"})
NOT_FOUND_RE = re.compile(r"(does not|doesn't|do not|must|no longer) exists?|not found|"
                          r"no (such )?student|unknown (student|id)", re.IGNORECASE)
#: students whose fate is unknown, remembered per adapter (bounded)
UNCERTAIN_LIMIT = 50000
#: the codes of failures after which PowerSchool may or may not hold the student
UNCERTAIN_CODES = frozenset({"TIMEOUT", "RETRIES", "UNREACHABLE", "MALFORMED",
                             "MALFORMED_RESPONSE", "MISSING_RESULT", "MISSING_ID",
                             "MALFORMED_RESULT"})
SAFE_AGAIN = ("Syncing again is safe: PowerSchool is asked first whether it has the "
              "student (by Student Number), so it is updated, not duplicated.")
UNSAFE_Q = re.compile(r"[;,*()=!<>\"'\s]")
INT_RE = re.compile(r"^-?\d+$")


def _f(key, label, type="string", *, required=False, max_length=None, codes=(), help="",
       format=None, insert_only=False) -> TargetField:
    return TargetField(key=key, label=label, type=type, required=required, max_length=max_length,
                       codes=tuple(codes), help=help, format=format, insert_only=insert_only)


GENDER = (Code("M", "Male"), Code("F", "Female"))
ENROLL_STATUS = (Code("A", "Active"), Code("P", "Pre-registered"), Code("I", "Inactive"),
                 Code("H", "Graduated"))
YMD = "YYYY-MM-DD"


def _address(kind: str, label: str) -> FieldSection:
    p = f"addresses.{kind}."
    block = f"Send all of street, city, state and postal code of the {kind} address, or none."
    return FieldSection(f"addresses.{kind}", label, (
        _f(p + "street", "Street", max_length=60, help=block),
        _f(p + "city", "City", max_length=50, help=block),
        _f(p + "state_province", "State", max_length=2, help=block),
        _f(p + "postal_code", "Postal Code", max_length=10, help=block),
        _f(p + "grid_location", "Grid Location"),
    ))


def core_sections(*, entry_codes=(), exit_codes=(), schools=()) -> list[FieldSection]:
    """PowerSchool's core student fields (lengths and rules from the API reference)."""
    pair = "Send the name and the phone together, or neither."
    school_codes = tuple(schools)
    return [
        FieldSection("student", "Student", (
            _f("local_id", "Student Number (local_id)", "integer", required=True,
               help="Students.Student_Number. Existing students are matched by it."),
            _f("state_province_id", "State Student Number", max_length=32,
               help="Also used to match existing students when mapped."),
            _f("student_username", "Student Username", max_length=20),
        )),
        FieldSection("name", "Name", (
            _f("name.first_name", "First Name", required=True, max_length=50),
            _f("name.middle_name", "Middle Name", max_length=30),
            _f("name.last_name", "Last Name", required=True, max_length=50),
        )),
        FieldSection("demographics", "Demographics", (
            _f("demographics.gender", "Gender", "code", codes=GENDER),
            _f("demographics.birth_date", "Birth Date", "date", format=YMD),
            _f("demographics.district_entry_date", "District Entry Date", "date", format=YMD),
            _f("demographics.projected_graduation_year", "Projected Graduation Year", "integer"),
        )),
        _address("physical", "Physical Address"),
        _address("mailing", "Mailing Address"),
        FieldSection("contact", "Contacts", (
            _f("contact.emergency_contact_name1", "Emergency Contact 1 Name", max_length=60, help=pair),
            _f("contact.emergency_phone1", "Emergency Contact 1 Phone", max_length=30, help=pair),
            _f("contact.emergency_contact_name2", "Emergency Contact 2 Name", max_length=60, help=pair),
            _f("contact.emergency_phone2", "Emergency Contact 2 Phone", max_length=30, help=pair),
            _f("contact.guardian_email", "Guardian Email"),
            _f("contact.mother", "Mother"),
            _f("contact.father", "Father"),
            _f("contact.doctor_name", "Doctor Name", help=pair),
            _f("contact.doctor_phone", "Doctor Phone", max_length=30, help=pair),
        )),
        FieldSection("contact_info", "Contact Info", (
            _f("contact_info.email", "Student Email"),
        )),
        FieldSection("phones", "Phones", (
            _f("phones.main.number", "Home Phone", max_length=30),
        )),
        FieldSection("school_enrollment", "School Enrollment", (
            _f("school_enrollment.school_number", "School", "code" if school_codes else "integer",
               required=True, codes=school_codes, insert_only=True),
            _f("school_enrollment.grade_level", "Grade Level", "integer", required=True,
               insert_only=True, help="-2 to 12; must be within the school's grades."),
            _f("school_enrollment.entry_date", "Entry Date", "date", required=True, format=YMD,
               insert_only=True),
            _f("school_enrollment.exit_date", "Exit Date", "date", required=True, format=YMD,
               insert_only=True, help="After the entry date (usually the last day of school)."),
            _f("school_enrollment.enroll_status", "Enroll Status", "code", codes=ENROLL_STATUS,
               insert_only=True),
            _f("school_enrollment.entry_code", "Entry Code", "code" if entry_codes else "string",
               max_length=10, codes=tuple(entry_codes), insert_only=True),
            _f("school_enrollment.exit_code", "Exit Code", "code" if exit_codes else "string",
               max_length=10, codes=tuple(exit_codes), insert_only=True),
            _f("school_enrollment.district_of_residence", "District of Residence", insert_only=True),
            _f("school_enrollment.track", "Track", insert_only=True),
            _f("school_enrollment.full_time_equivalency.fteid", "FTE ID", "integer", insert_only=True),
        )),
        FieldSection("initial_enrollment", "Initial Enrollment", (
            _f("initial_enrollment.district_entry_date", "District Entry Date", "date", format=YMD),
            _f("initial_enrollment.district_entry_grade_level", "District Entry Grade Level", "integer"),
            _f("initial_enrollment.school_entry_date", "School Entry Date", "date", format=YMD),
            _f("initial_enrollment.school_entry_grade_level", "School Entry Grade Level", "integer"),
        )),
        FieldSection("schedule_setup", "Schedule Setup", (
            _f("schedule_setup.home_room", "Home Room"),
            _f("schedule_setup.next_school", "Next School", "code" if school_codes else "integer",
               codes=school_codes),
            _f("schedule_setup.sched_next_year_grade", "Next Year Grade", "integer"),
        )),
    ]


def as_list(value: Any) -> list:
    """PowerSchool sends one item as an object and several as an array."""
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on", "y")
    return bool(value)


def _number(value: Any, default: float, *, low: float, high: float) -> float:
    try:
        n = float(value)
    except (TypeError, ValueError):
        return default
    if math.isnan(n):
        return default
    return min(max(n, low), high)


def _norm_id(value: Any) -> str | None:
    """A local_id / state id as a comparable string (numbers lose leading zeros)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    text = str(value).strip()
    if INT_RE.match(text):
        return str(int(text))
    return text or None


def _coerce(key: str, value: Any) -> Any:
    if key in INTEGER_KEYS and isinstance(value, str) and INT_RE.match(value.strip()):
        return int(value.strip())
    if key in INTEGER_KEYS and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _ext_value(value: Any) -> tuple[str, str]:
    if isinstance(value, bool):
        return "Boolean", "true" if value else "false"
    if isinstance(value, int):
        return "Integer", str(value)
    if isinstance(value, float):
        return "Double", repr(value)
    return "String", str(value)


def _field_key(field: Any) -> str | None:
    """``student/name/first_name`` -> ``name.first_name``."""
    if not isinstance(field, str) or not field:
        return None
    parts = [p for p in field.replace(".", "/").split("/") if p]
    if parts and parts[0].lower() == "student":
        parts = parts[1:]
    return ".".join(parts) or None


def _errors_of(item: Mapping) -> list[FieldError]:
    em = item.get("error_message")
    raw = []
    if isinstance(em, Mapping):
        raw = as_list(em.get("error"))
        if not raw and em:
            raw = [em]
    elif isinstance(em, str):
        raw = [{"error_description": em}]
    out = []
    for e in raw:
        if isinstance(e, Mapping):
            out.append(FieldError(field=_field_key(e.get("field")),
                                  code=str(e.get("error_code") or e.get("code") or "ERROR"),
                                  message=str(e.get("error_description") or e.get("message")
                                              or e.get("error_code") or "Refused")))
        else:
            out.append(FieldError(field=None, code="ERROR", message=str(e)))
    return out or [FieldError(field=None, code="ERROR", message="PowerSchool refused the record "
                                                                "without saying why.")]


def _students_of(body: Any, *, strict: bool = False) -> list[dict]:
    """The students of a list answer; ``strict``: a body of another shape is an error
    (an unreadable search must not pass for "no such student")."""
    students = body.get("students") if isinstance(body, Mapping) else None
    if students is None or students == "":
        if strict and not (isinstance(body, Mapping) and "students" in body):
            raise _malformed(f"GET {SEARCH_PATH}", "without a students object")
        return []
    if not isinstance(students, Mapping):
        if strict:
            raise _malformed(f"GET {SEARCH_PATH}", "with students that are not an object")
        return []
    return [s for s in as_list(students.get("student")) if isinstance(s, Mapping)]


def _malformed(where: str, what: str) -> TransportError:
    return TransportError(f"{where} answered {what}.", kind="malformed")


def _object_in(body: Any, key: str, where: str) -> Mapping:
    """``body[key]`` when the answer has that shape ({} when it is empty), else an error."""
    if not isinstance(body, Mapping):
        raise _malformed(where, "with JSON that is not an object")
    value = body.get(key)
    if value is None or value == "":
        return {}
    if not isinstance(value, Mapping):
        raise _malformed(where, f"with a {key!r} that is not an object")
    return value


def _positive_int(value: Any, *, zero: bool = False) -> int | None:
    """An int > 0 (>= 0 with ``zero``) from a number or a numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and INT_RE.match(value.strip()):
        value = int(value.strip())
    if isinstance(value, int) and (value > 0 or (zero and value == 0)):
        return value
    return None


RESERVED_KEYS = frozenset({"client_uid", "action", "id"})


@dataclass(frozen=True, slots=True)
class _KeyPlan:
    """What ``build_student`` does with one flat target key (worked out once per key)."""

    parents: tuple[str, ...]     # the objects it nests into ("name.first_name": ("name",))
    leaf: str                    # its own name there ("first_name")
    ext: tuple[str, str] | None  # (table, column) of an extension field; ("", "") when unusable
    integer: bool                # coerce "12" -> 12
    insert_only: bool            # left out of an UPDATE
    plain: bool                  # no numeric segment: nests into objects only


_KEY_PLANS: dict[str, _KeyPlan] = {}


def _key_plan(key: str) -> _KeyPlan:
    if key.startswith(EXT_PREFIX):
        table, _, column = key[len(EXT_PREFIX):].partition(".")
        plan = _KeyPlan((), key, (table, column) if table and column else ("", ""),
                        False, False, True)
    else:
        parts = key.split(".")
        plan = _KeyPlan(tuple(parts[:-1]), parts[-1], None, key in INTEGER_KEYS,
                        key.startswith(INSERT_ONLY_PREFIXES),
                        not any(p.isdigit() for p in parts[1:]))
    if len(_KEY_PLANS) > 10000:  # keys come from target fields: a few hundred at most
        _KEY_PLANS.clear()
    _KEY_PLANS[key] = plan
    return plan


class _Body:
    """A request body (bytes) that says when it has been written to the socket.

    httpx writes an iterable body chunk by chunk; the code after the one ``yield``
    runs once the bytes are handed to the socket. Iterable again for a retry.
    """

    __slots__ = ("data", "sent")

    def __init__(self, data: bytes):
        self.data = data
        self.sent = threading.Event()

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        yield self.data
        self.sent.set()


@dataclass
class Match:
    dcid: str | None = None
    by: str = ""
    local_id: str | None = None
    tables: set = field(default_factory=set)
    error: str | None = None
    code: str = "AMBIGUOUS_MATCH"
    retry: bool = False  # the error is "PowerSchool is busy": RETRY, not FAILED

    @property
    def label(self) -> str:
        return MATCHED_BY.get(self.by, self.by.replace("_", " "))


@dataclass
class _Plan:
    record: ExportRecord
    sis_id: str | None
    match: Match | None = None
    body: dict | None = None


class PowerSchoolAdapter(SISAdapter):
    """Exports students to PowerSchool SIS through its REST API (plugin OAuth)."""

    name = "powerschool"
    label = "PowerSchool"
    version = "0.1.0"

    def __init__(self, settings: Mapping[str, Any]):
        super().__init__(settings)
        s = self.settings
        self.server_url = str(s.get("server_url") or "").strip().rstrip("/")
        self.client_id = str(s.get("client_id") or "").strip()
        self.client_secret = str(s.get("client_secret") or "")
        self.batch_size = int(_number(s.get("batch_size"), 100, low=1, high=1000))
        self.min_interval = _number(s.get("min_interval_ms"), 0, low=0, high=60000) / 1000.0
        self.timeout = _number(s.get("timeout_s"), 30, low=0.05, high=600)
        # blank: the transport's default, a few times the timeout
        self.deadline = _number(s.get("deadline_s"), 0, low=0, high=3600) or None
        self.match_existing = _truthy(s.get("match_existing"), True)
        # advanced, not in the form (tests and benchmarks tune them)
        self.max_attempts = int(_number(s.get("max_attempts"), 5, low=1, high=20))
        self.retry_backoff = _number(s.get("retry_backoff"), 0.5, low=0, high=60)
        self.max_backoff = _number(s.get("max_backoff"), 30, low=0, high=600)
        self._transport: Transport | None = None
        self._page_size: int | None = None
        # record ids whose last export may or may not have saved the student
        self._uncertain: dict[str, None] = {}
        self._uncertain_lock = threading.Lock()
        self._keys = _KeySnapshot()
        self._prepared: dict[str, tuple[float, tuple, Match | None]] = {}
        self._prepared_lock = threading.Lock()

    # ------------------------------------------------------------------ settings
    @classmethod
    def settings_schema(cls) -> list[SettingField]:
        return [
            SettingField("server_url", "Server URL", "url", required=True,
                         help="Your PowerSchool address, e.g. https://district.powerschool.com"),
            SettingField("client_id", "Client ID", "string", required=True,
                         help="From System > System Settings > Plugin Management Dashboard."),
            SettingField("client_secret", "Client Secret", "secret", required=True,
                         help="Stored encrypted and never shown again; leave blank to keep it."),
            SettingField("batch_size", "Batch size", "integer", default=100, min=1, max=1000,
                         help="Students per request to PowerSchool."),
            SettingField("min_interval_ms", "Minimum interval between requests (ms)", "integer",
                         default=0, min=0, max=60000,
                         help="Match the request interval set for the plugin in PowerSchool."),
            SettingField("timeout_s", "Request timeout (seconds)", "number", default=30,
                         min=1, max=600,
                         help="How long one step may take: connecting, or a pause in an answer."),
            SettingField("deadline_s", "Longest wait for one answer (seconds)", "number",
                         min=1, max=3600,
                         help="An answer still not complete after this long is abandoned, "
                              "however steadily it trickles in. Blank: four times the "
                              "request timeout."),
            SettingField("match_existing", "Match existing students before insert", "boolean",
                         default=True,
                         help="Look students up by Student Number (and State ID when mapped) "
                              "and update them instead of inserting a duplicate."),
        ]

    # ------------------------------------------------------------------ transport
    @property
    def transport(self) -> Transport:
        if self._transport is None:
            if not self.server_url:
                raise AdapterError("The PowerSchool server URL is not set.")
            if not self.server_url.lower().startswith(("http://", "https://")):
                raise AdapterError("The server URL must start with https:// (or http:// for a "
                                   "sandbox).")
            auth = OAuth2ClientCredentials(TOKEN_PATH, self.client_id, self.client_secret)
            self._transport = Transport(
                self.server_url, timeout=self.timeout, min_interval=self.min_interval,
                max_attempts=self.max_attempts, backoff=self.retry_backoff,
                max_backoff=self.max_backoff, deadline_s=self.deadline, auth=auth,
                secrets=[self.client_secret], headers={"Accept": "application/json"})
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _get(self, path: str, **params: Any) -> Any:
        return self.transport.json("GET", path, params=params or None)

    # ------------------------------------------------------------------ check
    def check_connection(self) -> CheckResult:
        try:
            meta = _object_in(self._get("/ws/v1/metadata"), "metadata", "GET /ws/v1/metadata")
            district = _object_in(self._get("/ws/v1/district"), "district", "GET /ws/v1/district")
            count = _object_in(self._get(SEARCH_PATH + "/count"), "resource",
                               f"GET {SEARCH_PATH}/count").get("count")
            # Reading one student with every expansion shows missing field access early.
            _students_of(self._get(SEARCH_PATH, pagesize=1, expansions=",".join(CHECK_EXPANSIONS)))
        except TransportError as exc:
            return CheckResult(False, self._explain(exc))
        except AdapterError as exc:
            return CheckResult(False, str(exc))
        if isinstance(count, bool) or not isinstance(count, (int, str)):
            count = None
        details = {
            "PowerSchool version": str(meta.get("powerschool_version", "unknown")),
            "District": str(district.get("name", "unknown")),
            "Students": str(count if count is not None else "unknown"),
            "Students per page (max)": str(meta.get("student_max_page_size", "unknown")),
        }
        size = _positive_int(meta.get("student_max_page_size"))
        if size is not None:
            self._page_size = min(size, 1000)
        message = (f"Connected to PowerSchool {details['PowerSchool version']} "
                   f"({details['District']}): {details['Students']} students, up to "
                   f"{details['Students per page (max)']} per page.")
        return CheckResult(True, message, details)

    def _explain(self, exc: TransportError) -> str:
        if exc.kind == "malformed":
            return (f"{exc} PowerSchool does not answer like that: check the server URL (a "
                    f"proxy, maintenance or login page may be answering instead).")
        if exc.status == 403:
            fields = self._no_access_fields(exc.response)
            if fields:
                return ("The PowerSchool plugin has no access to: " + ", ".join(fields)
                        + ". Grant it in the plugin's access request (plugin.xml).")
            return ("PowerSchool refused access (HTTP 403): the plugin lacks access to "
                    "students. Check the plugin's data access.")
        if exc.status == 404:
            return ("This server does not answer like PowerSchool (HTTP 404 for the API): "
                    "check the server URL.")
        return str(exc)

    @staticmethod
    def _no_access_fields(response: Any) -> list[str]:
        try:
            body = response.json()
        except Exception:
            return []
        out = []
        for e in as_list(body.get("errors") if isinstance(body, Mapping) else None):
            if isinstance(e, Mapping) and e.get("field"):
                out.append(str(e["field"]))
        return out

    # ------------------------------------------------------------------ fields
    def target_fields(self) -> list[FieldSection]:
        try:
            district = self._get("/ws/v1/district", expansions="entry_codes,exit_codes")
            district = district.get("district") or {}
            entry = [self._code(c) for c in as_list((district.get("entry_codes") or {}).get("entry_code"))]
            exit_ = [self._code(c) for c in as_list((district.get("exit_codes") or {}).get("exit_code"))]
            schools = self._schools()
            listing = _object_in(self._get(SEARCH_PATH, pagesize=1), "students",
                                 f"GET {SEARCH_PATH}")
        except TransportError as exc:
            raise AdapterError(self._explain(exc)) from None
        except (AttributeError, TypeError):
            raise AdapterError("PowerSchool answered the field discovery in an unexpected "
                               "shape; check the server URL.") from None
        sections = core_sections(entry_codes=[c for c in entry if c], exit_codes=[c for c in exit_ if c],
                                 schools=schools)
        tables = listing.get("@extensions")
        names = tables if isinstance(tables, list) else str(tables or "").split(",")
        for table in [str(t).strip() for t in names if str(t).strip()]:
            section = self._extension_section(table)
            if section is not None:
                sections.append(section)
        return sections

    @staticmethod
    def _code(c: Any) -> Code | None:
        if not isinstance(c, Mapping) or not c.get("code"):
            return None
        return Code(str(c["code"]), str(c.get("description") or c["code"]))

    def _schools(self) -> list[Code]:
        codes, page = [], 1
        while page <= 50:
            body = self._get("/ws/v1/district/school", page=page, pagesize=100)
            items = as_list((body.get("schools") or {}).get("school"))
            for s in items:
                if isinstance(s, Mapping) and s.get("school_number") is not None:
                    codes.append(Code(str(s["school_number"]), str(s.get("name") or s["school_number"])))
            if len(items) < 100:
                break
            page += 1
        seen, out = set(), []
        for c in codes:
            if c.value not in seen:
                seen.add(c.value)
                out.append(c)
        return out

    def _extension_section(self, table: str) -> FieldSection | None:
        try:
            meta = self._get(f"/ws/schema/table/{table}/metadata", expansions="access")
        except TransportError as exc:
            log.warning("skipping extension table %s: %s", table, exc)
            return None
        fields = []
        for col in as_list(meta.get("columns") if isinstance(meta, Mapping) else None):
            if not isinstance(col, Mapping) or not col.get("name"):
                continue
            name = str(col["name"]).lower()
            if str(col.get("access")) in NO_ACCESS or name in HIDDEN_COLUMNS:
                continue
            kind = EXT_TYPES.get(str(col.get("type", "string")).lower(), "string")
            length = _positive_int(col.get("length"))
            fields.append(_f(f"{EXT_PREFIX}{table}.{name}", str(col.get("description") or name),
                             kind, max_length=length if kind == "string" else None,
                             help=f"{table}.{name}"))
        if not fields:
            return None
        return FieldSection(f"{EXT_PREFIX}{table}", f"Extension: {table}", tuple(fields))

    # ------------------------------------------------------------------ building students
    def preview(self, record: ExportRecord) -> dict:
        """The student object ``export`` sends for ``record`` when no match changes it."""
        return self.build_student(record, record.sis_id)

    def build_student(self, record: ExportRecord, sis_id: str | None, *,
                      match: Match | None = None) -> dict:
        update = sis_id not in (None, "")
        core: dict[str, Any] = {}
        nested: dict[str, Any] | None = {}  # nest(core), built on the way while keys are plain
        tables: dict[str, list] = {}
        plans = _KEY_PLANS
        for key, value in record.payload.items():
            if value is None:
                continue
            plan = plans.get(key)
            if plan is None:
                plan = _key_plan(key)
            if plan.ext is not None:
                table, column = plan.ext
                if table:
                    kind, text = _ext_value(value)
                    tables.setdefault(table, []).append(
                        {"name": column, "type": kind, "value": text})
                continue
            if update and plan.insert_only:
                continue
            if plan.integer:
                value = _coerce(key, value)
            core[key] = value
            if nested is None:
                continue
            if not plan.plain:
                nested = None  # a numeric segment (a list): leave it to nest()
                continue
            node = nested
            for part in plan.parents:  # the same steps as nest() for object-only keys
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[plan.leaf] = value
        if match is not None and match.by == "state_province_id" and match.local_id is not None:
            # Matched by state ID: keep PowerSchool's Student Number, never rewrite it.
            if _norm_id(core.get("local_id")) != match.local_id and "local_id" in core:
                del core["local_id"]
                nested = None
        if nested is None:
            nested = nest(core)
        student: dict[str, Any] = {"client_uid": record.record_id,
                                   "action": "UPDATE" if update else "INSERT"}
        if update:
            student["id"] = int(sis_id) if INT_RE.match(str(sis_id)) else sis_id
        for key, value in nested.items():
            if key not in RESERVED_KEYS:
                student[key] = value
        if tables:
            found = match.tables if match is not None else set()
            student["_extension_data"] = {"_table_extension": [
                {"recordFound": update and t.lower() in found, "name": t, "_field": fields}
                for t, fields in tables.items()]}
        return student

    # ------------------------------------------------------------------ export
    def export(self, records: Sequence[ExportRecord]) -> list[ExportResult]:
        records = list(records)
        if not records:
            return []
        results: dict[str, ExportResult] = {}
        plans = [_Plan(r, r.sis_id or None) for r in records]
        with self._uncertain_lock:
            uncertain = {r.record_id for r in records if r.record_id in self._uncertain}
        # Match before insert (with the look-ups ``prepare`` did while the previous batch
        # was on the wire); a student whose earlier export may have saved it is looked up
        # even when matching is off, so syncing it again never duplicates it.
        to_match = [p.record for p in plans if not p.sis_id
                    and (self.match_existing or p.record.record_id in uncertain)]
        if to_match:
            matches = self._take_prepared(to_match, records)
            for p in plans:
                m = matches.get(p.record.record_id)
                if m is None:
                    continue
                if m.error and m.retry:
                    results[p.record.record_id] = self._retry(p, m.error, code=m.code)
                elif m.error:
                    results[p.record.record_id] = self._failed(p.record, m.error, code=m.code)
                else:
                    p.sis_id, p.match = m.dcid, m
        todo = [p for p in plans if p.record.record_id not in results]
        self._send(todo, results)
        self._resolve_duplicates([p for p in todo if self.match_existing
                                  or p.record.record_id in uncertain], results)
        out = [results[r.record_id] for r in records]
        self._remember_uncertain(out)
        return out

    def _remember_uncertain(self, results: list[ExportResult]) -> None:
        with self._uncertain_lock:
            for r in results:
                if r.outcome == Outcome.FAILED and any(e.code in UNCERTAIN_CODES for e in r.errors):
                    self._uncertain.pop(r.record_id, None)
                    self._uncertain[r.record_id] = None
                elif r.outcome != Outcome.FAILED:
                    self._uncertain.pop(r.record_id, None)
            while len(self._uncertain) > UNCERTAIN_LIMIT:
                self._uncertain.pop(next(iter(self._uncertain)))

    @staticmethod
    def _tables_of(records: Iterable[ExportRecord]) -> list[str]:
        tables = []
        for r in records:
            for key in r.payload:
                if key.startswith(EXT_PREFIX):
                    t = key[len(EXT_PREFIX):].partition(".")[0]
                    if t and t not in tables:
                        tables.append(t)
        return tables

    @staticmethod
    def _failed(record: ExportRecord, message: str, *, code: str = "ERROR",
                errors: list[FieldError] | None = None, sent: Any = None,
                response: Any = None, action: str | None = None) -> ExportResult:
        return ExportResult(record_id=record.record_id, outcome=Outcome.FAILED, action=action,
                            errors=errors or [FieldError(None, code, message)], message=message,
                            sent=sent, response=response)

    @staticmethod
    def _retry(p: _Plan, message: str, *, code: str, errors: list[FieldError] | None = None,
               response: Any = None) -> ExportResult:
        """``Outcome.RETRY``: PowerSchool did not take the student now; nothing was saved."""
        return ExportResult(record_id=p.record.record_id, outcome=Outcome.RETRY,
                            action="update" if p.sis_id else "insert",
                            errors=list(errors or []) + [FieldError(None, code, message)],
                            message=message, sent=p.body, response=response)

    def _send(self, plans: list[_Plan], results: dict[str, ExportResult]) -> None:
        """POST the plans in batches, one request in flight at a time.

        A sender thread posts the batches back to back. This thread builds the next
        body and reads the answers while a batch is on the wire: it waits until the
        sender has written the current batch to the socket (``_Body.sent``), then
        does its work during the round trip, so the two threads do not fight for the
        GIL while the sender is sending or reading (each such fight costs the sender
        up to the interpreter's switch interval, 5 ms, per socket call). After an
        error that makes going on useless (unreachable, TLS, credentials) the rest
        is not sent and fails with the same message.
        """
        chunks = [plans[i:i + self.batch_size] for i in range(0, len(plans), self.batch_size)]
        if len(chunks) <= 1:
            for chunk in chunks:
                for p in chunk:
                    p.body = self.build_student(p.record, p.sis_id, match=p.match)
                self._finish_chunk(chunk, self._post_chunk(chunk), results)
            return
        todo: queue.Queue = queue.Queue()
        done: queue.Queue = queue.Queue()
        fatal: list[str] = []
        slow = [0]  # batches in a row that timed out

        def sender() -> None:
            while True:
                item = todo.get()
                if item is None:
                    return
                chunk, body = item
                if fatal:
                    body.sent.set()
                    done.put((chunk, None))
                    continue
                try:
                    outcome = self._post_chunk(chunk, body)
                except BaseException as exc:  # a bug: hand it to the caller's thread
                    outcome = exc
                finally:
                    body.sent.set()  # also when it never reached the socket
                if isinstance(outcome, TransportError) and outcome.kind in FATAL_KINDS:
                    fatal.append(self._explain(outcome))
                elif isinstance(outcome, httpx.Response) and outcome.status_code == 401:
                    fatal.append(self.transport.token_refused_message(f"POST {STUDENT_PATH}"))
                if isinstance(outcome, TransportError) and outcome.kind == "timeout":
                    slow[0] += 1
                    if slow[0] >= SLOW_BATCHES_TO_STOP and not fatal:
                        fatal.append(f"Not sent: PowerSchool answered {slow[0]} batches in a "
                                     f"row too slowly, so the rest was held back. "
                                     f"{self._explain(outcome)}")
                else:
                    slow[0] = 0
                done.put((chunk, outcome))

        thread = threading.Thread(target=sender, name="powerschool-sender", daemon=True)
        thread.start()
        finished = 0
        error: BaseException | None = None

        def finish(chunk, outcome) -> None:
            nonlocal error
            if outcome is None:
                for p in chunk:
                    results[p.record.record_id] = self._failed(
                        p.record, fatal[0], sent=p.body, action=self._action(p))
            elif isinstance(outcome, BaseException) and not isinstance(outcome, TransportError):
                error = error or outcome
            else:
                self._finish_chunk(chunk, outcome, results)

        try:
            previous: _Body | None = None
            for chunk in chunks:
                if previous is not None:
                    # Work while the previous batch travels, not while it is being sent.
                    while not previous.sent.wait(0.5) and thread.is_alive():
                        pass
                    while True:  # read answers that are already in, without waiting
                        try:
                            finish(*done.get_nowait())
                            finished += 1
                        except queue.Empty:
                            break
                for p in chunk:
                    p.body = self.build_student(p.record, p.sis_id, match=p.match)
                previous = _Body(self._encode_chunk(chunk))
                todo.put((chunk, previous))
        finally:
            todo.put(None)
            while finished < len(chunks) and (thread.is_alive() or not done.empty()):
                try:
                    finish(*done.get(timeout=0.5))
                    finished += 1
                except queue.Empty:
                    continue
            thread.join()
        if error is not None:
            raise error

    @staticmethod
    def _action(p: _Plan) -> str:
        return "update" if p.sis_id else "insert"

    @staticmethod
    def _encode_chunk(chunk: list[_Plan]) -> bytes:
        """The request body of one batch, encoded once."""
        body = {"students": {"student": [p.body for p in chunk]}}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _post_chunk(self, chunk: list[_Plan], content: bytes | _Body | None = None) -> Any:
        """The response to one batch, or the TransportError that replaced it."""
        if content is None:
            content = self._encode_chunk(chunk)
        try:
            return self.transport.request(
                "POST", STUDENT_PATH, content=content,
                headers={"Content-Type": "application/json", "Content-Length": str(len(content))})
        except TransportError as exc:
            return exc

    def _finish_chunk(self, chunk: list[_Plan], response: Any,
                      results: dict[str, ExportResult]) -> str | None:
        """Record a result for each plan of a batch; return a message when it is no use going on."""

        def fail_all(message: str, code: str, errors=None, response=None):
            for p in chunk:
                results[p.record.record_id] = self._failed(
                    p.record, message, code=code, errors=errors, sent=p.body, response=response,
                    action=self._action(p))

        if isinstance(response, TransportError):
            exc = response
            message = self._explain(exc)
            if _busy(exc):
                # "come back later": by HTTP's rules nothing of the batch was taken
                for p in chunk:
                    results[p.record.record_id] = self._retry(
                        p, f"PowerSchool was too busy to take this batch ({message}). Nothing "
                           f"was saved; it will be sent again shortly.", code="SIS_BUSY")
                return None
            if exc.kind in ("timeout", "retries", "unreachable"):
                message += (" PowerSchool may have saved some of these students before the "
                            "answer was lost. " + SAFE_AGAIN)
            fail_all(message, exc.kind.upper())
            return message if exc.kind in FATAL_KINDS else None
        if not response.is_success:
            answer = _json_or_none(response)
            fields = self._no_access_fields(response)
            if fields:
                message = ("The PowerSchool plugin has no access to: " + ", ".join(fields)
                           + ". Grant it in the plugin's access request, or stop mapping them.")
                errors = [FieldError(f, "NO_ACCESS", "No access to the field") for f in fields]
            else:
                detail = answer.get("message") if isinstance(answer, Mapping) else None
                message = f"PowerSchool refused the batch (HTTP {response.status_code})" + (
                    f": {self.transport.redact(str(detail))[:300]}" if detail else ".")
                errors = None
            if response.status_code == 401:
                message = self.transport.token_refused_message(f"POST {STUDENT_PATH}")
            fail_all(message, f"HTTP_{response.status_code}", errors, answer)
            return message if response.status_code == 401 else None
        answer = _json_or_none(response)
        container = answer.get("results") if isinstance(answer, Mapping) else None
        if not isinstance(container, Mapping):
            fail_all("PowerSchool answered with a body that could not be read, so these "
                     "students may or may not have been saved. " + SAFE_AGAIN,
                     "MALFORMED_RESPONSE")
            return None
        by_uid: dict[str, Mapping] = {}
        for item in as_list(container.get("result")):
            if isinstance(item, Mapping) and item.get("client_uid") is not None:
                by_uid[str(item["client_uid"])] = item
        for p in chunk:
            rid = p.record.record_id
            item = by_uid.get(rid)
            if item is None:
                results[rid] = self._failed(
                    p.record, "PowerSchool's answer did not mention this student, so it may or "
                              "may not have been saved. " + SAFE_AGAIN,
                    code="MISSING_RESULT", sent=p.body, action=self._action(p))
                continue
            results[rid] = self._result(p, item)
        return None

    def _result(self, p: _Plan, item: Mapping) -> ExportResult:
        ours = "update" if p.sis_id else "insert"
        action = str(item.get("action") or "").lower()
        action = action if action in ("insert", "update") else ours
        status = str(item.get("status") or "").upper()
        if status == "SUCCESS":
            sm = item.get("success_message")
            sis_id = _norm_id(sm.get("id")) if isinstance(sm, Mapping) else None
            if sis_id is not None and not INT_RE.match(sis_id):
                sis_id = None  # a DCID is a number; anything else cannot be used for updates
            if sis_id is None and not p.sis_id:
                return self._failed(
                    p.record, "PowerSchool said the student was saved but did not give its id, "
                              "so it cannot be linked. " + SAFE_AGAIN,
                    code="MISSING_ID", sent=p.body, response=dict(item), action=action)
            sis_id = sis_id or p.sis_id
            if action == "insert":
                message = f"Inserted as PowerSchool student {sis_id}."
            elif p.match is not None:
                message = (f"Updated PowerSchool student {sis_id}: an existing student, matched "
                           f"by {p.match.label} ({p.match.by}).")
            else:
                message = f"Updated PowerSchool student {sis_id}."
            return ExportResult(record_id=p.record.record_id, outcome=Outcome.SUCCEEDED,
                                sis_id=sis_id, action=action, message=message,
                                sent=p.body, response=dict(item),
                                matched_by=p.match.label if p.match is not None else None)
        if status != "ERROR" and not item.get("error_message"):
            shown = f" {self.transport.redact(status)[:40]!r}" if status else ""
            return self._failed(
                p.record, f"PowerSchool's answer for this student has no usable status{shown}, "
                          f"so it may or may not have been saved. " + SAFE_AGAIN,
                code="MALFORMED_RESULT", sent=p.body, response=dict(item), action=action)
        errors = _errors_of(item)
        message = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)
        message = self.transport.redact(message)
        if any(_is_busy(e) for e in errors):
            return self._retry(p, f"PowerSchool was busy and did not take this student "
                                  f"({message}). Nothing was saved; it will be sent again "
                                  f"shortly.", code="SIS_BUSY", errors=errors,
                               response=dict(item))
        if p.sis_id and p.match is None and any(_is_taken_local_id(e) for e in errors):
            # the linked id now holds a different student, while ours (its Student Number)
            # is elsewhere: a SIS restored from a backup that reused ids. The link is stale.
            return ExportResult(
                record_id=p.record.record_id, outcome=Outcome.NOT_FOUND, action="update",
                errors=errors, sent=p.body, response=dict(item),
                message=(f"PowerSchool's student {p.sis_id} is not this student any more: its Student "
                         f"Number belongs to another PowerSchool student ({message}). PowerSchool was "
                         f"probably restored from a backup. Nothing was saved; the student is sent again "
                         f"without that id, to be matched by Student Number."))
        if p.sis_id and any(_is_missing_id(e, p.sis_id) for e in errors):
            if p.match is None:
                return ExportResult(
                    record_id=p.record.record_id, outcome=Outcome.NOT_FOUND, action="update",
                    errors=errors, sent=p.body, response=dict(item),
                    message=(f"PowerSchool has no student with id {p.sis_id} any more "
                             f"({message}): it was deleted, or PowerSchool was emptied or "
                             f"restored from a backup. Nothing was saved; the student is sent "
                             f"again without that id, to be matched by Student Number or "
                             f"inserted."))
            # found by match-before-insert a moment ago, gone now: look it up afresh
            return self._retry(p, f"PowerSchool student {p.sis_id}, matched by "
                                  f"{p.match.label}, was gone when it was updated ({message}). "
                                  f"Nothing was saved; it will be looked up and sent again.",
                               code="MATCH_GONE", errors=errors, response=dict(item))
        return ExportResult(record_id=p.record.record_id, outcome=Outcome.FAILED,
                            sis_id=p.sis_id, action=action, errors=errors,
                            message=self.transport.redact(message), sent=p.body,
                            response=dict(item))

    def _resolve_duplicates(self, plans: list[_Plan], results: dict[str, ExportResult]) -> None:
        """An insert refused with INVALID_LOCAL_ID: the student exists; update it instead."""
        retry = []
        for p in plans:
            r = results.get(p.record.record_id)
            if (r is not None and not r.ok and not p.sis_id
                    and any(e.code == "INVALID_LOCAL_ID" for e in r.errors)
                    and _norm_id(p.record.payload.get("local_id")) is not None):
                retry.append(p)
        if not retry:
            return
        found, _lost = self._lookup_narrowing(
            "local_id", {_norm_id(p.record.payload["local_id"]) for p in retry},
            self._tables_of(p.record for p in retry), [LOOKUP_FAILURE_BUDGET])
        # where the look-up failed, the INVALID_LOCAL_ID answers stand: they are true
        again = []
        for p in retry:
            studs = found.get(_norm_id(p.record.payload["local_id"]), [])
            if len(studs) == 1 and studs[0].get("id") is not None:
                m = _match_of(studs[0], "local_id")
                again.append(_Plan(p.record, m.dcid, m))
        if again:
            self._send(again, results)

    # ------------------------------------------------------------------ matching
    def prepare(self, records: Sequence[ExportRecord]) -> None:
        """Do the match-before-insert look-ups of ``records`` now (the core calls this while
        the previous batch is on its way); ``export`` of the same records, soon after, uses
        them instead of asking again."""
        if not self.match_existing:
            return
        inserts = [r for r in records if not r.sis_id]
        if not inserts:
            return
        matches = self._find_existing(inserts, self._tables_of(inserts))
        now = time.monotonic()
        with self._prepared_lock:
            if len(self._prepared) > PREPARED_LIMIT:
                self._prepared.clear()
            for r in inserts:
                self._prepared[r.record_id] = (now, _match_keys(r), matches.get(r.record_id))

    def _take_prepared(self, inserts: list[ExportRecord], records: list[ExportRecord]) -> dict[str, Match]:
        """Look-ups ``prepare`` did moments ago for these very keys, and the rest now."""
        matches: dict[str, Match] = {}
        rest = []
        now = time.monotonic()
        with self._prepared_lock:
            for r in inserts:
                got = self._prepared.pop(r.record_id, None)
                if got is not None and now - got[0] <= PREPARED_TTL_S and got[1] == _match_keys(r):
                    if got[2] is not None:
                        matches[r.record_id] = got[2]
                else:
                    rest.append(r)
        if rest:
            matches.update(self._find_existing(rest, self._tables_of(records)))
        return matches

    def _absent(self, wanted: dict[str, set[str]]) -> dict[str, set[str]]:
        """Per key, the values PowerSchool provably holds no student for (see
        ``_KeySnapshot``); none when that cannot be told (every value is then looked up)."""
        if sum(len(v) for v in wanted.values()) <= 2:
            return {}  # one or two exact searches cost less than reading the snapshot
        try:
            return self._keys.absent(self, wanted)
        except TransportError as exc:
            if _busy(exc):
                raise
            return {}  # the snapshot could not be read: every value is looked up (and fails on its own)

    def page_size(self) -> int:
        if self._page_size is None:
            try:
                meta = _object_in(self._get("/ws/v1/metadata"), "metadata", "GET /ws/v1/metadata")
                size = _positive_int(meta.get("student_max_page_size")) or 100
            except TransportError:
                size = 100
            self._page_size = min(size, 1000)
        return self._page_size

    def _find_existing(self, records: list[ExportRecord], tables: list[str]) -> dict[str, Match]:
        """Match before insert: {record_id: Match} for students PowerSchool already has, and
        a Match with ``error`` for each student that cannot be inserted safely (several
        matches, or a look-up that failed for it)."""
        matches: dict[str, Match] = {}
        if not records:
            return matches
        budget = [LOOKUP_FAILURE_BUDGET]
        by_local: dict[str, list[ExportRecord]] = {}
        for r in records:
            lid = _norm_id(r.payload.get("local_id"))
            if lid is not None:
                by_local.setdefault(lid, []).append(r)
        try:
            absent = self._absent({"local_id": set(by_local), "state_province_id": {
                v for v in (_norm_id(r.payload.get("state_province_id")) for r in records) if v is not None}})
        except TransportError as exc:  # busy: asking again key by key would only add to the load
            key = lambda r: _norm_id(r.payload.get("local_id")) or r.record_id  # noqa: E731
            return {r.record_id: self._lookup_failed("Student Number", key(r), exc) for r in records}
        for lid in absent.get("local_id", ()):
            del by_local[lid]  # no such Student Number in PowerSchool: nothing to match
        if by_local:
            found, lost = self._lookup_narrowing("local_id", set(by_local), tables, budget)
            for lid, recs in by_local.items():
                if lid in lost:
                    for r in recs:
                        matches[r.record_id] = self._lookup_failed("Student Number", lid, lost[lid])
                    continue
                studs = [s for s in found.get(lid, []) if s.get("id") is not None]
                if studs:
                    for r in recs:
                        matches[r.record_id] = _match_of(studs[0], "local_id")
        by_state: dict[str, list[ExportRecord]] = {}
        for r in records:
            if r.record_id in matches:
                continue
            sid = _norm_id(r.payload.get("state_province_id"))
            if sid is not None:
                by_state.setdefault(sid, []).append(r)
        for sid in absent.get("state_province_id", set()) & set(by_state):
            del by_state[sid]  # no student has this state ID: nothing to match
        if by_state:
            found, lost = self._lookup_narrowing("state_province_id", set(by_state), tables, budget)
            for sid, recs in by_state.items():
                if sid in lost:
                    for r in recs:
                        matches[r.record_id] = self._lookup_failed("state ID", sid, lost[sid])
                    continue
                studs = [s for s in found.get(sid, []) if s.get("id") is not None]
                for r in recs:
                    if len(studs) == 1:
                        matches[r.record_id] = _match_of(studs[0], "state_province_id")
                    elif len(studs) > 1:
                        ids = ", ".join(str(s["id"]) for s in studs[:5])
                        matches[r.record_id] = Match(error=(
                            f"{len(studs)} PowerSchool students share state ID {sid} (ids {ids}); "
                            f"not guessing which one this is. Fix the duplicate in PowerSchool."))
        return matches

    def _lookup_failed(self, what: str, value: str, exc: TransportError) -> Match:
        if _busy(exc):
            return Match(code="SIS_BUSY", retry=True, error=(
                f"PowerSchool was too busy to look up whether it already has the student with "
                f"{what} {value} ({self._explain(exc)}). Nothing was saved; it will be sent "
                f"again shortly."))
        return Match(code="LOOKUP_FAILED", error=(
            f"Not inserted: could not look up whether PowerSchool already has the student with "
            f"{what} {value}, so it was not inserted (it may already be there, and inserting "
            f"would duplicate it). Could not look up existing students: {self._explain(exc)} "
            f"Syncing it again is safe: it is looked up first."))

    def _lookup_narrowing(self, fieldname: str, values: set[str], tables: list[str],
                          budget: list[int]) -> tuple[dict[str, list[dict]], dict[str, TransportError]]:
        """``_lookup`` that fails only the values it must: (found, {value: error}).

        A failed look-up of many values is split in halves and each half asked again, so
        one value PowerSchool cannot search (or one bad page) holds back only its own
        students, not a whole batch. Errors that would only repeat (unreachable, TLS,
        credentials, too slow, not PowerSchool) are not split, and at most ``budget[0]``
        failures are split in one export before the rest fails with the same reason.
        """
        found: dict[str, list[dict]] = {}
        lost: dict[str, TransportError] = {}
        pending = [sorted(values, key=lambda v: (not INT_RE.match(v), int(v) if INT_RE.match(v) else 0, v))]
        while pending:
            group = pending.pop(0)
            try:
                part = self._lookup(fieldname, set(group), tables)
            except TransportError as exc:
                budget[0] -= 1
                stop = exc.kind in NO_SPLIT_KINDS or _busy(exc) or budget[0] <= 0
                if len(group) == 1 or stop:
                    for v in group:
                        lost[v] = exc
                    if stop:
                        for rest in pending:
                            for v in rest:
                                lost[v] = exc
                        pending = []
                    continue
                mid = len(group) // 2
                pending[:0] = [group[:mid], group[mid:]]
                continue
            for key, studs in part.items():
                found.setdefault(key, []).extend(studs)
        return found, lost

    def _lookup(self, fieldname: str, values: set[str], tables: list[str]) -> dict[str, list[dict]]:
        """Students whose ``fieldname`` is one of ``values``, by normalised value."""
        out: dict[str, list[dict]] = {}
        numeric = sorted(int(v) for v in values if INT_RE.match(v))
        others = [v for v in values if not INT_RE.match(v)]
        if numeric:
            self._range(fieldname, numeric, tables, out, set(str(v) for v in numeric))
        for v in sorted(others):
            if UNSAFE_Q.search(v):
                continue  # cannot be searched exactly; the SIS's own checks still apply
            self._fetch(fieldname, f"{fieldname}=={v}", tables, out, {v}, limit=10)
        return out

    def _range(self, fieldname: str, values: list[int], tables: list[str],
               out: dict[str, list[dict]], wanted: set[str]) -> None:
        if len(values) <= 2:
            for v in values:
                self._fetch(fieldname, f"{fieldname}=={v}", tables, out, wanted, limit=10)
            return
        q = f"{fieldname}=ge={values[0]};{fieldname}=le={values[-1]}"
        where = f"GET {SEARCH_PATH}/count"
        count = _object_in(self._get(SEARCH_PATH + "/count", q=q), "resource", where).get("count")
        count = None if isinstance(count, bool) else _positive_int(count, zero=True)
        if count is None:
            # Splitting the range blindly would cost one request per student: refuse instead.
            raise _malformed(where, "without a readable count")
        if count == 0:
            return
        if count <= max(2 * len(values), self.page_size()):
            self._fetch(fieldname, q, tables, out, wanted, limit=count)
            return
        mid = len(values) // 2
        self._range(fieldname, values[:mid], tables, out, wanted)
        self._range(fieldname, values[mid:], tables, out, wanted)

    def _fetch(self, fieldname: str, q: str, tables: list[str], out: dict[str, list[dict]],
               wanted: set[str], *, limit: int) -> None:
        size = self.page_size()
        pages = max(1, math.ceil(limit / size)) + 1  # one spare page in case it grew
        for page in range(1, pages + 1):
            params: dict[str, Any] = {"q": q, "page": page, "pagesize": size}
            if tables:
                params["extensions"] = ",".join(tables)
            students = _students_of(self._get(SEARCH_PATH, **params), strict=True)
            for s in students:
                key = _norm_id(s.get(fieldname))
                if key is not None and key in wanted:
                    bucket = out.setdefault(key, [])
                    if all(str(x.get("id")) != str(s.get("id")) for x in bucket):
                        bucket.append(s)
            if len(students) < size:
                break

    # ------------------------------------------------------------------ import (PowerSchool -> Enroll)
    def import_fields(self) -> list[FieldSection]:
        """What a student read from PowerSchool carries: its DCID, the core fields and the
        extension tables the plugin can read (the export's fields), and ethnicity/race."""
        sections = self.target_fields()
        identity = FieldSection("powerschool", "PowerSchool record", (
            _f("id", "Student DCID", "integer", help="The id Enroll links the student to."),))
        ethnicity = FieldSection("ethnicity_race", "Ethnicity and Race", (
            _f("ethnicity_race.federal_ethnicity", "Federal Ethnicity (Hispanic or Latino)"),
            _f("ethnicity_race.scheduling_reporting_ethnicity", "Scheduling/Reporting Ethnicity"),
            _f("ethnicity_race.races.0.district_race_code", "Race (first)"),
            _f("ethnicity_race.races.1.district_race_code", "Race (second)"),
        ))
        return [identity, *sections, ethnicity]

    def _import_tables(self) -> list[str]:
        listing = _object_in(self._get(SEARCH_PATH, pagesize=1), "students", f"GET {SEARCH_PATH}")
        tables = listing.get("@extensions")
        names = tables if isinstance(tables, list) else str(tables or "").split(",")
        return [str(t).strip() for t in names if str(t).strip()]

    @staticmethod
    def _sis_student(raw: Mapping) -> "SISStudent":
        body = {k: v for k, v in raw.items() if not str(k).startswith("@") and k != "_extension_data"}
        values = flatten(body)
        ext = raw.get("_extension_data")
        if isinstance(ext, Mapping):
            for table in as_list(ext.get("_table_extension")):
                if not isinstance(table, Mapping) or not table.get("name"):
                    continue
                for fld in as_list(table.get("_field")):
                    if isinstance(fld, Mapping) and fld.get("name"):
                        values[f"{EXT_PREFIX}{str(table['name']).lower()}.{str(fld['name']).lower()}"] = fld.get("value")
        school = (raw.get("school_enrollment") or {}).get("school_number") if isinstance(
            raw.get("school_enrollment"), Mapping) else None
        return SISStudent(str(raw["id"]), values, None if school in (None, "") else str(school))

    def list_students(self, *, since: str | None = None, page_size: int | None = None,
                      cursor: str | None = None):
        """Every student of the district: ``GET /ws/v1/district/student`` with the
        expansions and the district's extension tables, ``page`` from 1 and ``pagesize``
        at the plugin's maximum (``student_max_page_size``); the total from
        ``/district/student/count``. PowerSchool's ``/ws/v1`` has no "changed since"
        filter, so ``since`` is not used: every import reads every student (and the
        core finds the unchanged ones). The cursor is "page:pagesize"."""
        try:
            size = self.page_size()
            if page_size:
                size = max(1, min(int(page_size), size))
            page = 1
            if cursor:
                first, _, second = str(cursor).partition(":")
                page, size = max(1, int(first)), max(1, int(second or size))
            tables = self._import_tables()
            count = _object_in(self._get(SEARCH_PATH + "/count"), "resource",
                               f"GET {SEARCH_PATH}/count").get("count")
            total = None if isinstance(count, bool) else _positive_int(count, zero=True)
        except TransportError as exc:
            raise AdapterError(f"Could not start reading the students: {self._explain(exc)}") from None
        except ValueError:
            raise AdapterError(f"Cannot continue an import from {cursor!r}: start it again.") from None
        params: dict[str, Any] = {"pagesize": size, "expansions": ",".join(IMPORT_EXPANSIONS)}
        if tables:
            params["extensions"] = ",".join(tables)
        while True:
            try:
                body = self._get(SEARCH_PATH, page=page, **params)
                raw = _students_of(body, strict=True)
            except TransportError as exc:
                raise AdapterError(f"Page {page} of the student list (up to {size} students from "
                                   f"{(page - 1) * size + 1:,}) could not be read: {self._explain(exc)}") from None
            students = [self._sis_student(r) for r in raw if r.get("id") is not None]
            last = len(raw) < size or (total is not None and page * size >= total)
            yield StudentPage(students, total, None if last else f"{page + 1}:{size}", None)
            if last:
                return
            page += 1

    def get_student(self, sis_id: str):
        """One student by DCID (``GET /ws/v1/student/{dcid}``), or None."""
        if not INT_RE.match(str(sis_id).strip()):
            return None
        try:
            tables = self._import_tables()
            params: dict[str, Any] = {"expansions": ",".join(IMPORT_EXPANSIONS)}
            if tables:
                params["extensions"] = ",".join(tables)
            response = self.transport.request("GET", f"{STUDENT_PATH}/{int(str(sis_id).strip())}", params=params)
        except TransportError as exc:
            raise AdapterError(self._explain(exc)) from None
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise AdapterError(f"PowerSchool answered HTTP {response.status_code} for student {sis_id}.")
        body = _json_or_none(response)
        raw = body.get("student") if isinstance(body, Mapping) else None
        if not isinstance(raw, Mapping) or raw.get("id") is None:
            raise AdapterError(f"PowerSchool answered student {sis_id} in an unexpected shape.")
        return self._sis_student(raw)


def _busy(exc: TransportError) -> bool:
    """PowerSchool kept answering "later" (429/503) past the retries, or asked to wait
    longer than Enroll Sync waits."""
    return exc.kind == "retries" and exc.status in (429, 503)


def _is_busy(e: FieldError) -> bool:
    """A per-record "busy, try again later" answer."""
    return e.code.upper() in BUSY_CODES or bool(BUSY_RE.search(e.message))


def _is_taken_local_id(e: FieldError) -> bool:
    """A per-record answer that the Student Number sent belongs to another student."""
    return (e.field or "").endswith("local_id") and (e.code.upper() == "INVALID_LOCAL_ID"
                                                      or "already exists" in e.message.lower())


def _is_missing_id(e: FieldError, sis_id: str) -> bool:
    """A per-record answer that the student's id (DCID) does not exist (or "must exist")."""
    if e.field not in (None, "id"):
        return False
    if NOT_FOUND_RE.search(e.message):
        return True
    # INVALID_ID alone: only when the id cannot be a PowerSchool id at all
    return e.code.upper() in NOT_FOUND_CODES and (e.code.upper() != "INVALID_ID"
                                                  or not INT_RE.match(str(sis_id)))


def _match_of(student: Mapping, by: str) -> Match:
    tables = set()
    ext = student.get("_extension_data")
    if isinstance(ext, Mapping):
        for t in as_list(ext.get("_table_extension")):
            if isinstance(t, Mapping) and t.get("name"):
                tables.add(str(t["name"]).lower())
    return Match(dcid=str(student["id"]), by=by, local_id=_norm_id(student.get("local_id")),
                 tables=tables)


def _json_or_none(response: Any) -> Any:
    try:
        return response.json()
    except Exception:
        return None


#: how long look-ups made by ``prepare`` stay good for the ``export`` that follows
PREPARED_TTL_S = 30.0
PREPARED_LIMIT = 20000
#: the match keys a snapshot knows (what ``_find_existing`` looks students up by)
SNAPSHOT_KEYS = ("local_id", "state_province_id")


def _match_keys(record: ExportRecord) -> tuple:
    return tuple(_norm_id(record.payload.get(k)) for k in SNAPSHOT_KEYS)


class _KeySnapshot:
    """The match keys (Student Number, state ID) of every student PowerSchool holds, so
    that match-before-insert need not ask about a key no student has.

    Why a key absent from it provably belongs to no student: it is read from the student
    list (``id``, ``local_id``, ``state_province_id``; no expansions), in pages by DCID
    (``q=id=gt=<the highest DCID read>``), and before each use it reads the students added
    since the same way. PowerSchool's DCIDs only grow and are never given again (a SIS
    restored from a backup gives its students new ones), so that read returns every student
    inserted since, by anyone; a student deleted since only leaves a key that is still looked
    up. What it cannot see is a student
    *edited* by hand in the meantime to take a key it did not have; PowerSchool keeps
    ``local_id`` unique (an insert of an existing one is refused with ``INVALID_LOCAL_ID``,
    which is then looked up and updated), so only a State Student Number typed into another
    student during the sync escapes it, as it escapes a look-up made a moment before the
    insert. Keys present in it are looked up exactly as before (it only ever removes
    look-ups of keys no student has).
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.dcids: dict[int, tuple] = {}    # dcid -> (local_id, state_province_id)
        self.by_key: dict[str, dict[str, int]] = {k: {} for k in SNAPSHOT_KEYS}  # value -> how many
        self.upto = 0                        # the highest DCID read

    def absent(self, adapter: "PowerSchoolAdapter", wanted: dict[str, set[str]]) -> dict[str, set[str]]:
        with self.lock:
            if not self._refresh(adapter):
                return {}
            return {k: {v for v in values if v not in self.by_key[k]}
                    for k, values in wanted.items() if k in self.by_key}

    def _add(self, student: Mapping) -> None:
        dcid = _positive_int(student.get("id"))
        if dcid is None:
            raise _malformed(f"GET {SEARCH_PATH}", "with a student without a usable id")
        keys = tuple(_norm_id(student.get(k)) for k in SNAPSHOT_KEYS)
        old = self.dcids.get(dcid)
        if old is not None:
            self._count(old, -1)
        self.dcids[dcid] = keys
        self._count(keys, 1)
        self.upto = max(self.upto, dcid)

    def _count(self, keys: tuple, step: int) -> None:
        for k, v in zip(SNAPSHOT_KEYS, keys):
            if v is not None:
                bucket = self.by_key[k]
                n = bucket.get(v, 0) + step
                if n > 0:
                    bucket[v] = n
                else:
                    bucket.pop(v, None)

    def _read_since(self, adapter: "PowerSchoolAdapter") -> None:
        """Every student with a DCID above the highest read, page by page by DCID (a page
        starts after the last DCID of the one before, so a student deleted or added while
        it reads cannot shift one past it)."""
        size = adapter.page_size()
        while True:
            students = _students_of(adapter._get(SEARCH_PATH, q=f"id=gt={self.upto}", page=1, pagesize=size),
                                    strict=True)
            for st in students:
                self._add(st)
            if len(students) < size:
                return

    def _refresh(self, adapter: "PowerSchoolAdapter") -> bool:
        """Bring it up to date: one request when fewer than a page of students were added."""
        try:
            self._read_since(adapter)
            return True
        except BaseException:
            self._reset()
            raise

    def _reset(self) -> None:
        self.dcids.clear()
        for bucket in self.by_key.values():
            bucket.clear()
        self.upto = 0
