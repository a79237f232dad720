"""The Aeries adapter: settings, connection check, target fields, export.

Aeries' REST API (v5) takes one student per request: ``InsertStudent`` at a school for a
student never enrolled in the district, ``UpdateStudent/{StudentID}`` for one it has.
What this adapter does about Aeries' traps (``shared/reference/aeries-api.md``):

- **The year database.** Every call names the target school year (``DatabaseYear``).
  Aeries answers a year it does not have from its default year *without an error*, so
  Test Connection and every export first read ``systeminfo`` and refuse a target year
  missing from ``AvailableDatabaseYears``.
- **Write names are not read names** (``BirthDate`` is written, ``Birthdate`` read;
  ``Race1Code``/``RaceCode1``; ``NextSchool``/``NextSchoolCode``). ``FIELDS`` is the one
  table that knows both: target keys are the write names, and answers are read with the
  read names.
- **Ignored fields.** A field whose field-level permission is off is silently not
  written. After every write the adapter compares what Aeries answered with what it sent
  (reading ``/extended`` for the fields only that endpoint returns) and reports each field
  Aeries did not take: PARTIAL (the student was saved) or FAILED (nothing sent was
  written) with the field names, never a silent SUCCEEDED.
- **No duplicate detection in InsertStudent.** Before inserting, the adapter matches by
  last name + first name + birth date against every school's roster of the target year
  (``/schools/{sc}/students`` paged with StartingRecord/EndingRecord), because
  InsertStudent is only for students never enrolled *anywhere* in the district and the
  documented student endpoint is scoped to one school. The v5 "District-Wide Student
  Search" is not used: its URL, parameters and answer are not documented in any source we
  have, and it answers 501 unless the district turned on the v5 Enhancements flag.
  One roster read per export call serves every record of it (a few requests per school,
  not one per student). A linked StudentID is checked against the same roster, so a
  renumbered or restored Aeries (old IDs gone, or naming other children) is noticed
  before anything is overwritten.
- **Inserts are not retried blindly.** The shared transport retries 5xx answers and
  timeouts, which for InsertStudent could create the student twice. Inserts go out with
  the transport's ``idempotent=False``: sent again only when Aeries surely did not process
  them (no connection; 429/503 with Retry-After). After an answer that may hide a saved
  student (5xx, timeout, lost answer) the adapter looks the student up at the school: found,
  it is the insert's result; not there, the record is RETRY (nothing was written, and the
  core sends it again later, matched before inserting as always).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from enroll_sync import (
    AdapterError, CheckResult, Code, ExportRecord, ExportResult, FieldError, FieldSection, Outcome,
    SettingField, SISAdapter, TargetField, Transport, TransportError, error_reason,
)

log = logging.getLogger("sis_aeries")

API = "/api/v5"
YMD = "YYYY-MM-DD"
INT_RE = re.compile(r"^-?\d+$")
DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
YEAR_RE = re.compile(r"^\s*(\d{4})(?:\s*[-/]\s*\d{2,4})?\s*$")
#: after these, sending the rest of an export is no use
FATAL_KINDS = ("unreachable", "tls", "auth")
#: Aeries is busy: the transport kept getting these past its retries
BUSY = (429, 503)


# ----------------------------------------------------------------------------- the one table

@dataclass(frozen=True)
class AeriesField:
    """One Aeries student field: its target key (= the write name InsertStudent and
    UpdateStudent bind), the name Aeries answers with, and how to check and compare it."""

    key: str                 # target key and write name
    read: str                # property name in answers (GET, InsertStudent, UpdateStudent)
    label: str
    kind: str                # str, code, yn, date, grade, school, int, phone
    section: str
    max_length: int | None = None
    codes: tuple[str, str] | None = None  # (table, field) of /api/v5/codes
    extended: bool = False   # answered only by /students/{id}/extended
    required: bool = False   # required on insert (matching needs the names and birth date)
    path: bool = False       # sent in the URL, not the body (SchoolCode of InsertStudent)
    help: str = ""


def _f(key, label, kind="str", section="", *, read=None, n=None, codes=None, ext=False,
       required=False, path=False, help="") -> AeriesField:
    return AeriesField(key, read or key, label, kind, section, n, codes, ext, required, path, help)


SECTIONS = {
    "name": "Name", "demographics": "Demographics", "enrollment": "Enrollment",
    "language": "Language", "birthplace": "Birthplace and arrival", "phone": "Phone",
    "mailing": "Mailing Address", "residence": "Residence Address", "usercodes": "User Codes",
}
_MATCH = "Used with first name and birth date to find a student Aeries already has."
FIELDS: tuple[AeriesField, ...] = (
    _f("LastName", "Last Name", section="name", n=100, required=True, help=_MATCH),
    _f("FirstName", "First Name", section="name", n=100, required=True, help=_MATCH),
    _f("MiddleName", "Middle Name", section="name", n=100),
    _f("NameSuffix", "Name Suffix", section="name", n=10),
    _f("BirthDate", "Birth Date", "date", "demographics", read="Birthdate", required=True,
       help="Sent as BirthDate, answered as Birthdate. " + _MATCH),
    _f("Gender", "Gender", "code", "demographics", n=1, codes=("STU", "GN")),
    _f("EthnicityCode", "Hispanic or Latino", "yn", "demographics", n=1),
    *[_f(f"Race{i}Code", f"Race {i}", "code", "demographics", read=f"RaceCode{i}", n=3, codes=("STU", "RC"),
         help=f"Sent as Race{i}Code, answered as RaceCode{i}.") for i in range(1, 6)],
    _f("ParentEdLevelCode", "Parent Education Level", "code", "demographics", n=2, codes=("STU", "PED")),
    _f("ParentGuardianName", "Parent/Guardian Name", section="demographics", n=50),
    _f("SchoolCode", "School", "school", "enrollment", required=True, path=True,
       help="The school the student is inserted at (in the URL). An update cannot move a student "
            "to another school."),
    _f("Grade", "Grade", "grade", "enrollment", required=True,
       help="Aeries' grade number (AeriesCode): K is 0, TK -1. Must be within the school's grades."),
    _f("NextGrade", "Next Grade", "grade", "enrollment"),
    _f("NextSchool", "Next School", "school", "enrollment", read="NextSchoolCode",
       help="Sent as NextSchool, answered as NextSchoolCode."),
    _f("SchoolEnterDate", "School Enter Date", "date", "enrollment"),
    _f("DistrictEnterDate", "District Enter Date", "date", "enrollment"),
    _f("InactiveStatusCode", "Inactive Status", "code", "enrollment", n=1, codes=("STU", "TG"),
       help="Blank is active."),
    _f("LastSchool", "Last School", "int", "enrollment", ext=True),
    _f("ResidenceSchool", "Residence School", "school", "enrollment", ext=True),
    _f("NextResidenceSchool", "Next Residence School", "school", "enrollment", ext=True),
    _f("HomeLanguageCode", "Home Language", "code", "language", n=2, codes=("STU", "HL")),
    _f("CorrespondenceLanguageCode", "Correspondence Language", "code", "language", n=2, codes=("STU", "CL")),
    _f("LanguageFluencyCode", "Language Fluency", "code", "language", n=1, codes=("STU", "LF")),
    *[_f(f"HomeLanguageSurvey{k}LanguageCode", f"Home Language Survey: {label}", "code", "language", n=2,
         codes=("STU", "HL"), ext=True)
      for k, label in (("First", "first language"), ("Primary", "primary language"),
                       ("Home", "home language"), ("Adult", "adult language"))],
    _f("USEnterDate", "US Enter Date", "date", "birthplace", ext=True),
    _f("USSchoolEnterDate", "US School Enter Date", "date", "birthplace", ext=True),
    _f("BirthCity", "Birth City", section="birthplace", n=30, ext=True),
    _f("BirthStateCode", "Birth State", section="birthplace", n=3, ext=True),
    _f("BirthCountryCode", "Birth Country", section="birthplace", n=2, ext=True),
    _f("HomePhone", "Home Phone", "phone", "phone", help="Any format; Aeries keeps the digits."),
    *[_f(f"{p}{suffix}", f"{label}", section=sec, n=n)
      for p, sec in (("MailingAddress", "mailing"), ("ResidenceAddress", "residence"))
      for suffix, label, n in (("", "Street", 55), ("City", "City", 30), ("State", "State", 2),
                               ("ZipCode", "ZIP Code", 5), ("ZipExt", "ZIP Extension", 4))],
    *[_f(f"UserCode{i}", f"User Code {i}", section="usercodes", n=1 if i <= 8 else 2) for i in range(1, 14)],
)
BY_KEY = {f.key: f for f in FIELDS}
YES_NO = (Code("Y", "Yes"), Code("N", "No"))
MATCH_KEYS = ("LastName", "FirstName", "BirthDate")

#: contact slots of a registration (guardians, emergency contacts): ``contacts.{i}.{WriteName}``
CONTACT_SLOTS = 4
CONTACT_PREFIX = "contacts."
_CMATCH = "With the first name, finds the student's existing Aeries contact to update instead of adding a copy."
CONTACT_FIELDS: tuple[AeriesField, ...] = (
    _f("FirstName", "First Name", section="contact", n=20, help=_CMATCH),
    _f("LastName", "Last Name", section="contact", n=50, help=_CMATCH),
    _f("MiddleName", "Middle Name", section="contact", n=20),
    _f("NamePrefix", "Name Prefix", section="contact", n=5),
    _f("NameSuffix", "Name Suffix", section="contact", n=10),
    _f("MailingName", "Mailing Name", section="contact", n=50, help="The name on mail labels."),
    _f("RelationshipToStudentCode", "Relationship", "code", "contact", n=2, codes=("CON", "RL")),
    _f("ContactOrder", "Contact Order", "int", "contact", help="1 is called first."),
    _f("PrimaryContact", "Primary Contact", "yn", "contact", n=1),
    _f("LivesWithStudentIndicator", "Lives With Student", "yn", "contact", n=1),
    _f("EducationalRightsHolder", "Educational Rights Holder", "yn", "contact", n=1),
    _f("EnrolledTheStudentIndicator", "Enrolled the Student", "yn", "contact", n=1),
    _f("AccessToPortal", "Parent Portal Access", "yn", "contact", n=1),
    _f("MailTagCode", "Receives Mail", "code", "contact", n=1, codes=("CON", "MT")),
    _f("MiscCode", "Record Type", "code", "contact", n=2, codes=("CON", "CD")),
    _f("CellPhone", "Cell Phone", "phone", "contact"),
    _f("HomePhone", "Home Phone", "phone", "contact"),
    _f("WorkPhone", "Work Phone", "phone", "contact"),
    _f("WorkPhoneExt", "Work Phone Extension", section="contact", n=5),
    _f("EmailAddress", "Email", section="contact", n=50),
    _f("Address", "Street", section="contact", n=50),
    _f("AddressCity", "City", section="contact", n=24),
    _f("AddressState", "State", section="contact", n=2),
    _f("AddressZip", "ZIP Code", section="contact", read="AddressZipCode", n=5,
       help="Sent as AddressZip, answered as AddressZipCode."),
    _f("AddressZipExt", "ZIP Extension", section="contact", n=4),
    _f("CorrespondenceLanguageCode", "Correspondence Language", "code", "contact", n=2, codes=("CON", "CL")),
    _f("NotificationPreferenceCode", "Notification Preference", "code", "contact", n=1, codes=("CON", "NP")),
    _f("EmployerName", "Employer", section="contact", n=50),
    _f("Occupation", "Occupation", section="contact", n=30),
)
CONTACT_BY_KEY = {f.key: f for f in CONTACT_FIELDS}
CONTACT_KEY_RE = re.compile(r"^contacts\.(\d+)\.([A-Za-z0-9]+)$")


# ----------------------------------------------------------------------------- small helpers

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


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and INT_RE.match(value.strip()):
        return int(value.strip())
    return None


def start_year(value: Any) -> int | None:
    """2025, "2025", "2025-2026", "2025-26" -> 2025 (the year a school year starts)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1900 < value < 3000 else None
    m = YEAR_RE.match(str(value or ""))
    return int(m.group(1)) if m else None


def school_year_label(year: int) -> str:
    return f"{year}-{year + 1}"


def _date(value: Any) -> str | None:
    """The YYYY-MM-DD part of a date Aeries or a mapping gives, else None."""
    if value is None:
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%Y-%m-%d")
    m = DATE_RE.match(str(value).strip())
    if not m:
        return None
    try:
        return dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:
        return None


def _name_key(value: Any) -> str:
    """Names compared the way people write them: no accents, case, spaces or punctuation."""
    text = unicodedata.normalize("NFKD", str(value or ""))
    return "".join(c for c in text if c.isalnum()).casefold()


def match_key(last: Any, first: Any, birth: Any) -> tuple[str, str, str] | None:
    key = (_name_key(last), _name_key(first), _date(birth) or "")
    return key if all(key) else None


def _busy(exc: BaseException) -> bool:
    """Aeries kept answering 429/503 past the transport's retries. A read or an update
    (idempotent) is simply tried later; an insert gets here only when every answer
    carried Retry-After, i.e. was surely not processed (``idempotent=False``)."""
    return isinstance(exc, TransportError) and exc.kind == "retries" and exc.status in BUSY


class _NotSaved(Exception):
    """A write that may have been processed (its answer was a 5xx, or lost) was looked up
    afterwards and Aeries does not hold it: nothing was written."""

    def __init__(self, error: TransportError):
        super().__init__(str(error))
        self.error = error


def _json(response: Any) -> Any:
    try:
        return response.json()
    except Exception:
        return None


def aeries_message(response: Any, redact=None) -> str | None:
    """Aeries' ``{"Message": ...}`` of an error answer (the transport's ``error_reason``
    reads ``Message``; ``ExceptionMessage`` is the detail ASP.NET adds in debug mode),
    redacted with ``redact`` before it is cut short."""
    reason = error_reason(response, redact)
    if reason is None:
        body = _json(response)
        extra = body.get("ExceptionMessage") if isinstance(body, Mapping) else None
        if isinstance(extra, str) and extra.strip():
            reason = (redact(extra.strip()) if redact is not None else extra.strip())[:200]
    return reason


def _field_in_message(message: str) -> str | None:
    """The target key an Aeries 400 message is about, when it names one."""
    for f in sorted(FIELDS, key=lambda f: len(f.key), reverse=True):
        if re.search(rf"\b{re.escape(f.key)}\b", message) or re.search(rf"\b{re.escape(f.read)}\b", message):
            return f.key
    return None


def _same(f: AeriesField, sent: Any, got: Any) -> bool:
    """Whether Aeries holds what was sent for ``f`` (in Aeries' own formats)."""
    blank_sent = sent is None or (isinstance(sent, str) and not sent.strip())
    if f.kind == "date":
        return (_date(sent) if not blank_sent else None) == (_date(got) if got not in (None, "") else None)
    if f.kind in ("grade", "school", "int"):
        if blank_sent:
            return got in (None, "", 0)
        return _int(sent) is not None and _int(sent) == _int(got)
    if f.kind == "phone":
        return re.sub(r"\D", "", str(sent or "")) == re.sub(r"\D", "", str(got or ""))
    a = "" if blank_sent else str(sent).strip()
    b = "" if got is None else str(got).strip()
    return a == b or a.casefold() == b.casefold()


def _shown(value: Any) -> str:
    if value is None or value == "":
        return "blank"
    return repr(value)


# ----------------------------------------------------------------------------- plans

@dataclass
class Roster:
    """Every student record of a year database, indexed for matching."""

    year: int
    schools: dict[int, dict]
    by_id: dict[str, list[dict]] = field(default_factory=dict)
    by_key: dict[tuple, set[str]] = field(default_factory=dict)
    keys_of: dict[str, set[tuple]] = field(default_factory=dict)

    def add(self, record: Mapping) -> None:
        """Add or replace one school record of a student (as Aeries answers it)."""
        sid = _int(record.get("StudentID"))
        if sid is None or sid <= 0:
            return
        sid_s = str(sid)
        sc = _int(record.get("SchoolCode"))
        bucket = [r for r in self.by_id.get(sid_s, ()) if _int(r.get("SchoolCode")) != sc]
        bucket.append(dict(record))
        self.by_id[sid_s] = bucket
        keys = {k for k in (match_key(r.get("LastName"), r.get("FirstName"), r.get("Birthdate"))
                            for r in bucket) if k}
        for old in self.keys_of.get(sid_s, set()) - keys:
            self.by_key.get(old, set()).discard(sid_s)
        for new in keys:
            self.by_key.setdefault(new, set()).add(sid_s)
        self.keys_of[sid_s] = keys

    def find(self, last: Any, first: Any, birth: Any) -> list[str]:
        key = match_key(last, first, birth)
        return sorted(self.by_key.get(key, ())) if key else []


@dataclass
class _Plan:
    record: ExportRecord
    body: dict
    school: int | None
    sis_id: str | None = None        # the StudentID to update (None: insert)
    note: str = ""                   # how the student was matched
    matched_by: str | None = None    # set when a record without sis_id matched a student
    result: ExportResult | None = None
    contacts: list[tuple[int, dict]] = field(default_factory=list)   # (slot, InsertContact body)
    contact_errors: list[FieldError] = field(default_factory=list)   # found before sending


class AeriesAdapter(SISAdapter):
    """Exports students to Aeries through its REST API v5 (AERIES-CERT)."""

    name = "aeries"
    label = "Aeries"
    version = "0.1.0"

    def __init__(self, settings: Mapping[str, Any]):
        super().__init__(settings)
        s = self.settings
        url = str(s.get("server_url") or "").strip().rstrip("/")
        for suffix in ("/api/v5", "/api/v4", "/api"):
            if url.lower().endswith(suffix):
                url = url[: -len(suffix)]
        self.server_url = url
        self.certificate = str(s.get("certificate") or "").strip()
        self.school_year = start_year(s.get("school_year"))
        self.batch_size = int(_number(s.get("batch_size"), 100, low=1, high=1000))
        self.min_interval = _number(s.get("min_interval_ms"), 0, low=0, high=60000) / 1000.0
        self.timeout = _number(s.get("timeout_s"), 30, low=0.05, high=600)
        self.deadline = _number(s.get("deadline_s"), 0, low=0, high=3600) or None
        # advanced, not in the form (tests tune them)
        self.max_attempts = int(_number(s.get("max_attempts"), 5, low=1, high=20))
        self.retry_backoff = _number(s.get("retry_backoff"), 0.5, low=0, high=60)
        self.max_backoff = _number(s.get("max_backoff"), 30, low=0, high=600)
        self.page_size = int(_number(s.get("page_size"), 500, low=1, high=5000))
        self._transport: Transport | None = None

    # ------------------------------------------------------------------ settings
    @classmethod
    def settings_schema(cls) -> list[SettingField]:
        return [
            SettingField("server_url", "Server URL", "url", required=True,
                         help="The district's Aeries address, the part before /api, e.g. "
                              "https://district.aeries.net/aeries"),
            SettingField("certificate", "API certificate (AERIES-CERT)", "secret", required=True,
                         help="The 32-character certificate of the Aeries API key the district made "
                              "for Enroll Sync (case sensitive). Stored encrypted and never shown "
                              "again; leave blank to keep it."),
            SettingField("school_year", "Target school year", "integer", required=True, min=2000,
                         max=2100, help="The year the school year starts: 2026 for 2026-2027. Aeries "
                                        "must have that year's database (Test Connection checks)."),
            SettingField("batch_size", "Batch size", "integer", default=100, min=1, max=1000,
                         help="Students per sync step. Aeries takes one student per request; the "
                              "schools' rosters are read once per step to find existing students."),
            SettingField("min_interval_ms", "Minimum interval between requests (ms)", "integer",
                         default=0, min=0, max=60000),
            SettingField("timeout_s", "Request timeout (seconds)", "number", default=30, min=1, max=600),
            SettingField("deadline_s", "Longest wait for one answer (seconds)", "number", min=1, max=3600,
                         help="An answer still arriving after this is abandoned (an insert is then "
                              "looked up before it is sent again). Blank: four times the timeout."),
        ]

    # ------------------------------------------------------------------ transport
    @property
    def transport(self) -> Transport:
        if self._transport is None:
            if not self.server_url:
                raise AdapterError("The Aeries server URL is not set.")
            if not self.server_url.lower().startswith(("http://", "https://")):
                raise AdapterError("The server URL must start with https:// (or http:// for a sandbox).")
            if not self.certificate:
                raise AdapterError("The Aeries API certificate is not set.")
            self._transport = Transport(
                self.server_url, timeout=self.timeout, min_interval=self.min_interval,
                max_attempts=self.max_attempts, backoff=self.retry_backoff,
                max_backoff=self.max_backoff, deadline_s=self.deadline, secrets=[self.certificate],
                headers={"Accept": "application/json", "AERIES-CERT": self.certificate})
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _params(self, **extra: Any) -> dict:
        year = {"DatabaseYear": self.school_year} if self.school_year is not None else {}
        return {**year, **extra}

    def _get(self, path: str, what: str, *, expect: type, **params: Any) -> Any:
        """GET an Aeries read, or raise AdapterError with a message for the admin."""
        response = self.transport.request("GET", API + path, params=self._params(**params))
        if not response.is_success:
            raise AdapterError(self._http_message(response, f"GET {API}{path}", what))
        body = _json(response)
        if not isinstance(body, expect):
            shape = "an array" if expect is list else "an object"
            raise AdapterError(f"GET {API}{path} answered without {shape} of {what} (HTTP "
                               f"{response.status_code}). Aeries does not answer like that: check the "
                               f"server URL (a proxy, maintenance or sign-in page may be answering).")
        return body

    def _http_message(self, response: Any, where: str, what: str) -> str:
        status = response.status_code
        msg = aeries_message(response, self.transport.redact)
        said = f': "{self.transport.redact(msg)[:300]}"' if msg else ""
        if status == 401:
            if msg and "security area" in msg.lower():
                return (f"Aeries refused {where} (HTTP 401{said}). Ask the district to grant the API "
                        f"certificate that permission in Aeries (Security > API Security).")
            return (f"Aeries refused the API certificate (HTTP 401 for {where}{said}). Check the "
                    f"certificate: it is case sensitive, and a new API key gets a new one.")
        if status == 403:
            return f"Aeries refused {where} (HTTP 403{said}): the certificate lacks access to {what}."
        if status == 404:
            if msg and "No HTTP resource" not in msg:
                return f"Aeries has no such {what} (HTTP 404 for {where}{said})."
            return (f"This server does not answer {where} like Aeries (HTTP 404{said}): check the "
                    f"server URL (the part before /api).")
        if status == 501:
            return (f"Aeries does not offer {where} here (HTTP 501{said}): the district has not "
                    f"turned on the v5 Enhancements feature flag this needs.")
        return f"{where} answered HTTP {status}{said}."

    # ------------------------------------------------------------------ the year
    def _system_info(self) -> dict:
        response = self.transport.request("GET", API + "/systeminfo")
        if not response.is_success:
            raise AdapterError(self._http_message(response, f"GET {API}/systeminfo", "system information"))
        info = _json(response)
        if not isinstance(info, Mapping) or not info.get("AeriesVersion"):
            raise AdapterError(f"GET {API}/systeminfo answered without an AeriesVersion: this server "
                               f"does not answer like Aeries. Check the server URL (the part before /api).")
        return dict(info)

    def _year_problem(self, info: Mapping) -> str | None:
        """Why the target year cannot be written to, or None."""
        if self.school_year is None:
            return ("Set the target school year (the year it starts, e.g. 2026 for 2026-2027): Aeries "
                    "writes to its default year when none is named.")
        raw = info.get("AvailableDatabaseYears")
        years = sorted({y for y in (start_year(v) for v in (raw if isinstance(raw, list) else [])) if y})
        default = start_year(info.get("DatabaseYear"))
        if not years:
            return ("Aeries did not list its year databases (AvailableDatabaseYears), so Enroll Sync "
                    f"cannot tell whether {school_year_label(self.school_year)} exists; it refuses "
                    f"rather than let Aeries write to its default year.")
        if self.school_year not in years:
            have = ", ".join(school_year_label(y) for y in years)
            fallback = (f" Aeries would silently write to its default year "
                        f"{school_year_label(default)} instead." if default else
                        " Aeries would silently write to its default year instead.")
            return (f"Aeries has no {school_year_label(self.school_year)} database (it has {have})."
                    f"{fallback} Choose one of its years as the target school year, or ask the district "
                    f"to create {school_year_label(self.school_year)} in Aeries first.")
        return None

    # ------------------------------------------------------------------ check
    def check_connection(self) -> CheckResult:
        try:
            info = self._system_info()
            problem = self._year_problem(info)
            if problem:
                return CheckResult(False, problem, {"Aeries version": str(info.get("AeriesVersion"))})
            schools = self._get("/schools", "schools", expect=list)
            first = next((s for s in schools if isinstance(s, Mapping) and _int(s.get("SchoolCode"))), None)
            if first is not None:  # reading students is what matching needs
                self._get(f"/schools/{_int(first['SchoolCode'])}/students", "students", expect=list,
                          StartingRecord=1, EndingRecord=1)
        except TransportError as exc:
            return CheckResult(False, str(exc))
        except AdapterError as exc:
            return CheckResult(False, str(exc))
        active = [s for s in schools if isinstance(s, Mapping) and not str(s.get("InactiveStatusCode") or "").strip()]
        details = {"Aeries version": str(info.get("AeriesVersion")),
                   "Target school year": school_year_label(self.school_year),
                   "Default year": str(info.get("DatabaseYear") or "unknown"),
                   "Years": ", ".join(str(y) for y in info.get("AvailableDatabaseYears") or ()),
                   "Schools": str(len(active))}
        message = (f"Connected to Aeries {details['Aeries version']}: the certificate works, and "
                   f"{details['Target school year']} exists ({len(active)} active schools).")
        return CheckResult(True, message, details)

    # ------------------------------------------------------------------ fields
    def target_fields(self) -> list[FieldSection]:
        try:
            schools = [s for s in self._get("/schools", "schools", expect=list) if isinstance(s, Mapping)]
            code_sets: dict[tuple[str, str], tuple[Code, ...]] = {}
            for pair in sorted({f.codes for f in (*FIELDS, *CONTACT_FIELDS) if f.codes}):
                code_sets[pair] = self._codes(*pair)
            grades = self._grade_codes()
        except TransportError as exc:
            raise AdapterError(str(exc)) from None
        school_codes = tuple(
            Code(str(_int(s.get("SchoolCode"))),
                 f"{s.get('Name') or s.get('SchoolCode')} (grades {_grade_label(s.get('LowGradeLevel'))}"
                 f" to {_grade_label(s.get('HighGradeLevel'))})")
            for s in schools if _int(s.get("SchoolCode")) and not str(s.get("InactiveStatusCode") or "").strip())
        sections: dict[str, list[TargetField]] = {k: [] for k in SECTIONS}
        for f in FIELDS:
            sections[f.section].append(self._target(f, code_sets, grades, school_codes))
        out = [FieldSection(k, SECTIONS[k], tuple(v)) for k, v in sections.items() if v]
        for i in range(CONTACT_SLOTS):
            fields = []
            for f in CONTACT_FIELDS:
                t = self._target(f, code_sets, grades, school_codes)
                fields.append(dataclasses.replace(t, key=f"{CONTACT_PREFIX}{i}.{f.key}"))
            out.append(FieldSection(f"{CONTACT_PREFIX}{i}", f"Contact {i + 1}", tuple(fields)))
        return out

    def _target(self, f: AeriesField, code_sets, grades, school_codes) -> TargetField:
        codes: tuple[Code, ...] = ()
        kind, fmt, length = "string", None, f.max_length
        if f.kind == "code":
            codes = code_sets.get(f.codes, ())
            kind = "code" if codes else "string"
        elif f.kind == "yn":
            kind, codes = "code", YES_NO
        elif f.kind == "grade":
            codes = grades
            kind = "code" if codes else "integer"
        elif f.kind == "school":
            codes = school_codes
            kind = "code" if codes else "integer"
        elif f.kind == "int":
            kind = "integer"
        elif f.kind == "date":
            kind, fmt = "date", YMD
        help_ = f.help
        if f.extended:
            help_ = (help_ + " " if help_ else "") + "Checked after each write through /extended."
        return TargetField(key=f.key, label=f.label, type=kind, required=f.required,
                           max_length=length if kind == "string" or (kind == "code" and length) else None,
                           codes=codes, help=help_.strip(), format=fmt, insert_only=f.path)

    def _codes(self, table: str, fieldname: str) -> tuple[Code, ...]:
        """Active codes of a code set ({} when Aeries has none for it)."""
        response = self.transport.request("GET", f"{API}/codes/{table}/{fieldname}", params=self._params())
        if response.status_code == 404:
            return ()
        if not response.is_success:
            raise AdapterError(self._http_message(response, f"GET {API}/codes/{table}/{fieldname}", "code sets"))
        rows = _json(response)
        if not isinstance(rows, list):
            raise AdapterError(f"GET {API}/codes/{table}/{fieldname} answered without an array of codes: "
                               f"check the server URL.")
        out, seen = [], set()
        for r in sorted((r for r in rows if isinstance(r, Mapping)), key=lambda r: _int(r.get("SortOrder")) or 0):
            code = str(r.get("Code") or "").strip()
            if not code or str(r.get("Status") or "").strip() or code in seen:
                continue  # inactive codes stay out of new mappings
            seen.add(code)
            out.append(Code(code, str(r.get("Description") or code)))
        return tuple(out)

    def _grade_codes(self) -> tuple[Code, ...]:
        """Grades as Aeries stores them: the AeriesCode number (K -> 0), labelled with the code."""
        response = self.transport.request("GET", f"{API}/codes/STU/GR", params=self._params())
        if response.status_code == 404:
            return tuple(Code(str(g), _grade_label(g)) for g in range(-2, 13))
        if not response.is_success:
            raise AdapterError(self._http_message(response, f"GET {API}/codes/STU/GR", "grade codes"))
        rows = _json(response)
        if not isinstance(rows, list):
            raise AdapterError(f"GET {API}/codes/STU/GR answered without an array of codes: check the server URL.")
        out, seen = [], set()
        for r in sorted((r for r in rows if isinstance(r, Mapping)), key=lambda r: _int(r.get("SortOrder")) or 0):
            if str(r.get("Status") or "").strip():
                continue
            number = _int(r.get("AeriesCode"))
            if number is None:
                number = _int(r.get("Code"))
            if number is None or not -2 <= number <= 18 or number in seen:
                continue
            seen.add(number)
            code, desc = str(r.get("Code") or number), str(r.get("Description") or "")
            out.append(Code(str(number), f"{code} - {desc}" if desc and desc != code else code))
        return tuple(out)

    # ------------------------------------------------------------------ bodies
    def preview(self, record: ExportRecord) -> dict:
        """The request ``export`` sends for ``record`` when no match changes it."""
        sis_id = record.sis_id or None
        body, _ = self.build_body(record, update=bool(sis_id))
        return self._request_of(record, body, sis_id)

    def _request_of(self, record: ExportRecord, body: dict, sis_id: str | None) -> dict:
        school = _int(record.payload.get("SchoolCode"))
        year = f"?DatabaseYear={self.school_year}" if self.school_year else ""
        if sis_id:
            line = f"POST {API}/UpdateStudent/{sis_id}{year}"
        else:
            line = f"POST {API}/schools/{school if school is not None else '{SchoolCode}'}/InsertStudent{year}"
        out: dict[str, Any] = {"request": line, "body": body}
        contacts, _ = self.build_contacts(record)
        if contacts:
            # An existing contact (same name, or same last name and phone/email) is updated instead.
            out["contacts"] = [{"request": f"POST {API}/InsertContact/{sis_id or '{StudentID}'}{year}",
                                "body": b} for _, b in contacts]
        return out

    def build_contacts(self, record: ExportRecord) -> tuple[list[tuple[int, dict]], list[FieldError]]:
        """The InsertContact/UpdateContact bodies of the record's contact slots
        (``contacts.{i}.{WriteName}``; a slot without any value is left out), and what is
        wrong with them by Aeries' rules."""
        slots: dict[int, dict] = {}
        errors: list[FieldError] = []
        refused: set[int] = set()   # a slot with a bad value is not sent at all, like a student
        for key, value in record.payload.items():
            if not key.startswith(CONTACT_PREFIX):
                continue
            m = CONTACT_KEY_RE.match(key)
            f = CONTACT_BY_KEY.get(m.group(2)) if m else None
            if f is None or int(m.group(1)) >= CONTACT_SLOTS:
                errors.append(FieldError(key, "UNKNOWN_FIELD", f"{key} is not an Aeries contact field Enroll "
                                                               f"Sync writes. Refresh the fields and fix the mapping."))
                continue
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            coerced, problem = _coerce(f, value)
            if not problem and f.key == "ContactOrder" and coerced < 1:
                problem = "Contact Order must be 1 or more."
            if problem:
                errors.append(FieldError(key, "INVALID_VALUE",
                                         f"Contact {int(m.group(1)) + 1} was not sent: {problem}"))
                refused.add(int(m.group(1)))
                continue
            slots.setdefault(int(m.group(1)), {})[f.key] = coerced
        return sorted((i, b) for i, b in slots.items() if i not in refused), errors

    def build_body(self, record: ExportRecord, *, update: bool) -> tuple[dict, list[FieldError]]:
        """The InsertStudent/UpdateStudent body (write names) and what is wrong with the
        record by Aeries' rules (lengths, grades, dates, Y/N), checked before sending."""
        body: dict[str, Any] = {}
        errors: list[FieldError] = []
        for key, value in record.payload.items():
            if value is None or key.startswith(CONTACT_PREFIX):
                continue
            f = BY_KEY.get(key)
            if f is None:
                errors.append(FieldError(key, "UNKNOWN_FIELD",
                                         f"{key} is not an Aeries field Enroll Sync writes. Refresh the "
                                         f"fields and fix the mapping."))
                continue
            if f.path:
                continue
            value, problem = _coerce(f, value)
            if problem:
                errors.append(FieldError(key, "INVALID_VALUE", problem))
                continue
            body[f.key] = value
        if not update:
            for key in ("SchoolCode", *MATCH_KEYS):
                value = record.payload.get(key)
                if value is None or (isinstance(value, str) and not value.strip()):
                    why = ("Aeries inserts a student at a school" if key == "SchoolCode" else
                           "Aeries has no duplicate check, so Enroll Sync matches new students by last "
                           "name, first name and birth date before inserting")
                    errors.append(FieldError(key, "REQUIRED", f"{BY_KEY[key].label} is required for a new "
                                                              f"student: {why}."))
            if record.payload.get("SchoolCode") is not None and _int(record.payload.get("SchoolCode")) is None:
                errors.append(FieldError("SchoolCode", "INVALID_VALUE", "School must be an Aeries school code."))
        return body, errors

    # ------------------------------------------------------------------ export
    def export(self, records: Sequence[ExportRecord]) -> list[ExportResult]:
        records = list(records)
        if not records:
            return []
        try:
            problem = self._year_problem(self._system_info())
        except TransportError as exc:
            if _busy(exc):
                return [self._retry(r, str(exc)) for r in records]
            return [self._failed(r, str(exc), code=exc.kind.upper()) for r in records]
        except AdapterError as exc:
            return [self._failed(r, str(exc), code="CHECK_FAILED") for r in records]
        if problem:
            return [self._failed(r, problem + " Nothing was sent.", code="YEAR_NOT_AVAILABLE") for r in records]
        plans: list[_Plan] = []
        results: dict[str, ExportResult] = {}
        for r in records:
            linked = str(r.sis_id).strip() if r.sis_id not in (None, "") else None
            body, errors = self.build_body(r, update=bool(linked))
            plan = _Plan(r, body, _int(r.payload.get("SchoolCode")), linked)
            plan.contacts, plan.contact_errors = self.build_contacts(r)
            if errors:
                results[r.record_id] = self._failed(r, _join(errors), errors=errors,
                                                    sent=self._request_of(r, body, linked))
            plans.append(plan)
        todo = [p for p in plans if p.record.record_id not in results]
        if not todo:
            return [results[r.record_id] for r in records]
        try:
            roster = self._roster()
        except (TransportError, AdapterError) as exc:
            msg = ("Could not read Aeries' students to find existing ones before writing, so nothing "
                   f"was sent: {exc}")
            for p in todo:
                results[p.record.record_id] = (self._retry(p.record, msg) if _busy(exc) else
                                               self._failed(p.record, msg, code="LOOKUP_FAILED"))
            return [results[r.record_id] for r in records]
        fatal: str | None = None
        for p in todo:
            rid = p.record.record_id
            if fatal:
                results[rid] = self._failed(p.record, fatal + " Nothing was sent for this student.",
                                            code="NOT_SENT", sent=self._request_of(p.record, p.body, p.sis_id))
                continue
            problem = self._plan(p, roster)
            if problem is not None:
                results[rid] = problem
                continue
            result, stop = self._write(p, roster)
            if result.ok and result.sis_id and (p.contacts or p.contact_errors):
                result = self._write_contacts(p, result)
            results[rid] = result
            if stop:
                fatal = stop
        return [results[r.record_id] for r in records]

    def _failed(self, record: ExportRecord, message: str, *, code: str = "ERROR",
                errors: list[FieldError] | None = None, sent: Any = None, response: Any = None,
                action: str | None = None, sis_id: str | None = None) -> ExportResult:
        message = self.transport.redact(message) if self._transport is not None else message
        return ExportResult(record_id=record.record_id, outcome=Outcome.FAILED, action=action, sis_id=sis_id,
                            errors=errors or [FieldError(None, code, message)], message=message,
                            sent=sent, response=response)

    def _retry(self, record: ExportRecord, message: str, *, sent: Any = None, action: str | None = None,
               sis_id: str | None = None) -> ExportResult:
        message = self.transport.redact(f"{message} Nothing was written; Enroll Sync tries it again later.")
        return ExportResult(record_id=record.record_id, outcome=Outcome.RETRY, action=action, sis_id=sis_id,
                            errors=[FieldError(None, "RETRY", message)], message=message, sent=sent)

    # -- matching
    def _roster(self) -> Roster:
        """Every student record of the target year, read school by school."""
        schools = {}
        for s in self._get("/schools", "schools", expect=list):
            if isinstance(s, Mapping) and _int(s.get("SchoolCode")) is not None:
                schools[_int(s["SchoolCode"])] = dict(s)
        roster = Roster(self.school_year, schools)
        for sc in sorted(schools):
            if sc == 0:
                continue
            start = 1
            for _ in range(100000):
                rows = self._get(f"/schools/{sc}/students", "students", expect=list,
                                 StartingRecord=start, EndingRecord=start + self.page_size - 1)
                for row in rows:
                    if isinstance(row, Mapping):
                        roster.add(row)
                if len(rows) != self.page_size:  # fewer: the last page; more: no paging here
                    break
                start += self.page_size
        return roster

    def _identity_conflict(self, payload: Mapping, records: list[dict]) -> tuple[str, bool] | None:
        """Why the Aeries student ``records`` is not the child of ``payload`` (and whether it
        is clearly another child), or None.

        The same child when the first name agrees and so does the last name or the birth
        date (a corrected birth date or a new last name is still the same child). Another
        child when the first name differs (a twin, a sibling, a renumbered id). Only what
        the payload maps is compared."""
        mine = {"first": _name_key(payload.get("FirstName")), "last": _name_key(payload.get("LastName")),
                "birth": _date(payload.get("BirthDate")) or ""}
        other = True
        for r in records:
            theirs = {"first": _name_key(r.get("FirstName")), "last": _name_key(r.get("LastName")),
                      "birth": _date(r.get("Birthdate")) or ""}
            known = [k for k in mine if mine[k] and theirs[k]]
            agree = [k for k in known if mine[k] == theirs[k]]
            if "first" in known and "first" not in agree:
                continue
            if len(agree) >= min(2, len(known)):
                return None
            other = False  # the same first name: perhaps the same child, corrected twice
        r = records[0]
        return f"{r.get('FirstName')} {r.get('LastName')}, born {_date(r.get('Birthdate')) or 'unknown'}", other

    def _not_found(self, p: _Plan, why: str) -> ExportResult:
        message = self.transport.redact(
            f"{why} Nothing was written. Enroll Sync sends the student again without that StudentID, "
            f"to be matched by name and birth date (or inserted when Aeries has no such student).")
        return ExportResult(p.record.record_id, Outcome.NOT_FOUND, action="update",
                            errors=[FieldError(None, "NOT_FOUND", message)], message=message,
                            sent=self._request_of(p.record, p.body, p.sis_id))

    def _plan(self, p: _Plan, roster: Roster) -> ExportResult | None:
        """Decide insert or update for ``p``; a result instead when it must not be sent.

        A linked StudentID is checked against the roster first: gone from the target
        year, or now another child (Aeries emptied, or restored under new ids), it is
        NOT_FOUND and nothing is written; the core sends the record again without it."""
        payload = p.record.payload
        found = roster.find(payload.get("LastName"), payload.get("FirstName"), payload.get("BirthDate"))
        who = (f"{payload.get('FirstName')} {payload.get('LastName')} born "
               f"{_date(payload.get('BirthDate'))}")
        if p.sis_id:
            linked = roster.by_id.get(str(_int(p.sis_id) if _int(p.sis_id) is not None else p.sis_id))
            if not linked:
                return self._not_found(p, f"Aeries has no student {p.sis_id} in {school_year_label(roster.year)} "
                                          f"(deleted, or Aeries was emptied or restored under new ids).")
            conflict = self._identity_conflict(payload, linked)
            if conflict is None:
                return None
            now, other_child = conflict
            if other_child:
                return self._not_found(p, f"Aeries student {p.sis_id} is now {now}, not {who} (Aeries was "
                                          f"renumbered or restored from a backup).")
            return self._failed(
                p.record, f"The linked Aeries student {p.sis_id} is now {now}, not {who}: the same first name "
                          f"but another last name and birth date. Nothing was sent; check the student in "
                          f"Aeries and correct the registration or its link.", code="LINK_CONFLICT",
                sent=self._request_of(p.record, p.body, p.sis_id), action="update")
        if len(found) > 1:
            return self._failed(
                p.record, f"{len(found)} Aeries students match {who} (StudentIDs {', '.join(found[:5])}); "
                          f"not guessing which one this is. Nothing was sent: link the registration to "
                          f"the right one, or merge the duplicates in Aeries.", code="AMBIGUOUS_MATCH",
                sent=self._request_of(p.record, p.body, None))
        if found:
            p.sis_id, p.matched_by = found[0], "name and birth date"
            p.note = " An existing Aeries student matched by name and birth date."
            p.body, _ = self.build_body(p.record, update=True)
            return None
        school = roster.schools.get(p.school)
        if school is None or str(school.get("InactiveStatusCode") or "").strip():
            return self._failed(
                p.record, f"Aeries has no {'active ' if school else ''}school {p.school}; choose one of its "
                          f"schools (Refresh fields lists them).", code="INVALID_SCHOOL",
                errors=[FieldError("SchoolCode", "INVALID_SCHOOL", f"Aeries has no active school {p.school}.")],
                sent=self._request_of(p.record, p.body, None))
        grade = _int(p.body.get("Grade"))
        low, high = _int(school.get("LowGradeLevel")), _int(school.get("HighGradeLevel"))
        if grade is not None and low is not None and high is not None and not low <= grade <= high:
            msg = (f"{school.get('Name') or p.school} has grades {_grade_label(low)} to {_grade_label(high)}, "
                   f"not {_grade_label(grade)}.")
            return self._failed(p.record, msg + " Nothing was sent.", code="GRADE_NOT_OFFERED",
                                errors=[FieldError("Grade", "GRADE_NOT_OFFERED", msg)],
                                sent=self._request_of(p.record, p.body, None))
        return None

    # -- writing
    def _write(self, p: _Plan, roster: Roster) -> tuple[ExportResult, str | None]:
        """Send ``p``; the result, and a message when sending the rest is no use."""
        sent = self._request_of(p.record, p.body, p.sis_id)
        action = "update" if p.sis_id else "insert"
        try:
            if p.sis_id:
                response = self.transport.request(
                    "POST", f"{API}/UpdateStudent/{p.sis_id}", params=self._params(), json=p.body,
                    headers={"Content-Type": "application/json"})
                answer = None
            else:
                response, answer = self._insert(p, roster)
        except _NotSaved as gone:
            return self._retry(p.record, f"{gone.error} Aeries does not hold the student (looked up after that "
                                         f"answer).", sent=sent, action=action), None
        except TransportError as exc:
            msg = str(exc)
            if _busy(exc):
                return self._retry(p.record, f"Aeries is busy: {msg}", sent=sent, action=action,
                                   sis_id=p.sis_id), None
            if exc.maybe_processed:
                msg += (" The student may or may not have been saved; syncing it again is safe (existing "
                        "students are matched by name and birth date).")
            stop = msg if exc.kind in FATAL_KINDS else None
            return self._failed(p.record, msg, code=exc.kind.upper(), sent=sent, action=action,
                                sis_id=p.sis_id), stop
        if answer is None:
            if not response.is_success:
                return self._refused(p, response, sent, action)
            answer = _json(response)
        records = answer if isinstance(answer, list) else [answer]
        records = [r for r in records if isinstance(r, Mapping) and _int(r.get("StudentID"))]
        if not records:
            return self._failed(
                p.record, f"Aeries answered the {action} with HTTP "
                          f"{response.status_code if response is not None else 200} but without the "
                          f"student, so it may or may not have been saved. Syncing it again is safe "
                          f"(existing students are matched by name and birth date).",
                code="MALFORMED_RESPONSE", sent=sent, action=action, sis_id=p.sis_id,
                response=_json(response) if response is not None else None), None
        sis_id = str(_int(records[0]["StudentID"]))
        for r in records:
            roster.add(r)
        mine = next((r for r in records if _int(r.get("SchoolCode")) == p.school), records[0])
        return self._verified(p, mine, records, sis_id, action, sent, answer), None

    def _insert(self, p: _Plan, roster: Roster) -> tuple[Any, Any]:
        """POST InsertStudent without blind retries (see ``_post_write``)."""
        known = set(roster.by_id)
        return self._post_write(f"{API}/schools/{p.school}/InsertStudent", p.body,
                                lambda: self._find_new(p, known))

    def _post_write(self, path: str, body: dict, find_saved) -> tuple[Any, Any]:
        """POST a write Aeries would carry out twice if it arrived twice (InsertStudent,
        InsertContact): (response, None) for an answer to read, or (None, saved) when the
        answer was lost and ``find_saved()`` found what the write saved.

        The transport's ``idempotent=False`` sends it again only when Aeries surely did
        not process it (no connection; 429/503 with Retry-After). A TransportError with
        ``maybe_processed`` (a 5xx, a timeout, a lost connection, an answer too slow)
        makes ``find_saved()`` look: ``(saved, True)`` is the write's result, ``(None,
        True)`` raises ``_NotSaved`` (Aeries does not hold it: nothing was written), and
        ``(None, False)`` (the look-up failed or was ambiguous) re-raises the error."""
        try:
            return self.transport.request("POST", path, params=self._params(), json=body, idempotent=False,
                                          headers={"Content-Type": "application/json"}), None
        except TransportError as exc:
            if not exc.maybe_processed:
                raise
            found, certain = find_saved()
            if found is not None:
                log.info("%s: the answer was lost (%s); the write was found saved", path, exc.kind)
                return None, found
            if certain:
                raise _NotSaved(exc) from None
            raise

    def _find_new(self, p: _Plan, known: set[str]) -> tuple[dict | None, bool]:
        """After an insert whose answer was lost: (the student it saved, True), (None, True)
        when Aeries surely has none, or (None, False) when that cannot be told (the school's
        students could not be read, or two new students match)."""
        grade = _int(p.body.get("Grade"))
        path = f"/schools/{p.school}/students" + (f"/grade/{grade}" if grade is not None else "")
        try:
            rows = self._get(path, "students", expect=list)
        except (TransportError, AdapterError):
            return None, False
        key = match_key(p.body.get("LastName"), p.body.get("FirstName"), p.body.get("BirthDate"))
        hits = [r for r in rows if isinstance(r, Mapping) and str(_int(r.get("StudentID"))) not in known
                and match_key(r.get("LastName"), r.get("FirstName"), r.get("Birthdate")) == key]
        ids = {_int(r.get("StudentID")) for r in hits}
        if len(ids) == 1:
            return dict(hits[0]), True
        return None, not ids

    def _refused(self, p: _Plan, response: Any, sent: dict, action: str) -> tuple[ExportResult, str | None]:
        status = response.status_code
        msg = aeries_message(response, self.transport.redact)
        where = sent["request"].split("?")[0]
        if status == 400:
            text = self.transport.redact(msg or "Aeries refused the student without saying why.")
            if msg and "invalid student id" in msg.lower() and p.sis_id:
                result = self._not_found(p, f"Aeries has no student {p.sis_id} any more (\"{text}\").")
                result.response = _json(response)
                return result, None
            field_key = _field_in_message(msg or "")
            return self._failed(p.record, f"Aeries refused the {action}: {text}", code="REFUSED",
                                errors=[FieldError(field_key, "REFUSED", text)], sent=sent, action=action,
                                sis_id=p.sis_id, response=_json(response)), None
        # 429, 503 and other 5xx never get here: the transport raises them (see ``_write``)
        message = self._http_message(response, where, "students")
        stop = message if status in (401, 403, 404, 501) else None
        return self._failed(p.record, message, code=f"HTTP_{status}", sent=sent, action=action,
                            sis_id=p.sis_id, response=_json(response)), stop

    def _verified(self, p: _Plan, mine: Mapping, records: list, sis_id: str, action: str, sent: dict,
                  answer: Any) -> ExportResult:
        """Compare what Aeries holds with what was sent; PARTIAL/FAILED name every field it ignored."""
        ignored: list[FieldError] = []
        extended = [BY_KEY[k] for k in p.body if BY_KEY[k].extended]
        holder: Mapping = mine
        unverified = ""
        if extended:
            try:
                rows = self._get(f"/schools/{_int(mine.get('SchoolCode'))}/students/{sis_id}/extended",
                                 "students", expect=list)
                holder = next((r for r in rows if isinstance(r, Mapping)
                               and _int(r.get("SchoolCode")) == _int(mine.get("SchoolCode"))), None) or {}
            except (TransportError, AdapterError) as exc:
                unverified = f" The extended fields could not be checked: {exc}"
                holder = mine
        permission = "Insert" if action == "insert" else "Update"
        for key, value in p.body.items():
            f = BY_KEY[key]
            if f.extended and unverified:
                continue
            if f.read not in holder:
                got = None
            else:
                got = holder.get(f.read)
            if not _same(f, value, got):
                ignored.append(FieldError(key, "NOT_WRITTEN",
                                          f"Aeries did not take {f.label} ({key}): sent {_shown(value)}, Aeries "
                                          f"has {_shown(got)}. The API certificate probably lacks the field's "
                                          f"{permission} permission."))
        if unverified:
            for f in extended:
                ignored.append(FieldError(f.key, "UNVERIFIED", f"{f.label} could not be checked after the write."))
        if action == "update" and p.school is not None and p.record.payload.get("SchoolCode") is not None:
            active = {_int(r.get("SchoolCode")) for r in records if not str(r.get("InactiveStatusCode") or "").strip()}
            if p.school not in active:
                where = ", ".join(str(s) for s in sorted(s for s in active if s is not None)) or "no school (inactive)"
                ignored.append(FieldError(
                    "SchoolCode", "NOT_WRITTEN",
                    f"Aeries student {sis_id} is enrolled at {where}, not {p.school}; an update cannot move a "
                    f"student to another school. Transfer or pre-enroll the student in Aeries."))
        response = answer if not isinstance(answer, list) else list(answer)
        verb = "Inserted as" if action == "insert" else "Updated"
        base = f"{verb} Aeries student {sis_id} ({school_year_label(self.school_year)}).{p.note}"
        if not ignored:
            return ExportResult(p.record.record_id, Outcome.SUCCEEDED, sis_id=sis_id, action=action,
                                message=base, sent=sent, response=response, matched_by=p.matched_by)
        names = ", ".join(e.field or "?" for e in ignored)
        written = [k for k in p.body if k not in {e.field for e in ignored}]
        if action == "update" and not written:
            outcome, head = Outcome.FAILED, f"Aeries answered the update of student {sis_id} but kept none of it."
        else:
            outcome, head = Outcome.PARTIAL, base
        message = self.transport.redact(f"{head} Not written: {names}.{unverified}")
        return ExportResult(p.record.record_id, outcome, sis_id=sis_id, action=action, errors=ignored,
                            message=message, sent=sent, response=response, matched_by=p.matched_by)


    # -- contacts
    def _write_contacts(self, p: _Plan, result: ExportResult) -> ExportResult:
        """Write the record's contact slots to the saved student; a contact that fails
        makes the sync PARTIAL (the student is saved) with the contact's fields named."""
        sid = result.sis_id
        errors = list(p.contact_errors)
        sent_list: list[dict] = []
        answers: list[Any] = []
        done = {"inserted": 0, "updated": 0}
        where = f"/schools/{p.school if p.school is not None else 0}/contacts/{sid}"
        try:
            existing = [c for c in self._get(where, "contacts", expect=list) if isinstance(c, Mapping)]
        except (TransportError, AdapterError) as exc:
            existing = None
            for slot, _ in p.contacts:
                errors.append(FieldError(f"{CONTACT_PREFIX}{slot}", "NOT_SENT",
                                         f"Contact {slot + 1} was not sent: the student's contacts could not be "
                                         f"read to avoid adding a copy ({self.transport.redact(str(exc))})."))
        for slot, body in (p.contacts if existing is not None else ()):
            seq, problem = self._match_contact(slot, body, existing)
            if problem:
                errors.append(FieldError(f"{CONTACT_PREFIX}{slot}", "AMBIGUOUS_MATCH", problem))
                continue
            sent, answer, slot_errors = self._write_contact(slot, sid, seq, body, existing)
            sent_list.append(sent)
            answers.append(answer)
            errors.extend(slot_errors)
            if isinstance(answer, Mapping) and _int(answer.get("SequenceNumber")) is not None:
                done["updated" if seq is not None else "inserted"] += 1
                if seq is None:
                    existing.append(dict(answer))
                else:
                    existing[:] = [dict(answer) if _int(c.get("SequenceNumber")) == seq else c for c in existing]
        sent = dict(result.sent or {})
        if sent_list:
            sent["contacts"] = sent_list
        response = {"student": result.response, "contacts": answers}
        parts = [f"{n} {what}" for what, n in done.items() if n]
        note = f" Contacts: {', '.join(parts)}." if parts else ""
        if not errors:
            return dataclasses.replace(result, sent=sent, response=response, message=result.message + note)
        names = ", ".join(e.field or "?" for e in errors)
        message = self.transport.redact(f"{result.message}{note} Contacts not written: {names}.")
        return dataclasses.replace(result, outcome=Outcome.PARTIAL, errors=[*result.errors, *errors],
                                   sent=sent, response=response, message=message)

    @staticmethod
    def _match_contact(slot: int, body: Mapping, existing: list[Mapping]) -> tuple[int | None, str | None]:
        """The SequenceNumber of the student's contact this slot is (None: a new one), or
        why that cannot be told. Same first and last name; else the same last name and a
        phone number or email in common."""
        first, last = _name_key(body.get("FirstName")), _name_key(body.get("LastName"))
        if not first or not last:
            return None, (f"Contact {slot + 1} needs a first and a last name: without them Enroll Sync cannot "
                          f"tell whether the student already has this contact in Aeries. Nothing was sent.")

        def phones(c: Mapping) -> set[str]:
            return {d for d in (re.sub(r"\D", "", str(c.get(k) or "")) for k in ("CellPhone", "HomePhone", "WorkPhone"))
                    if len(d) >= 7}

        same_name = [c for c in existing if _name_key(c.get("FirstName")) == first and _name_key(c.get("LastName")) == last]
        candidates = same_name
        if not candidates:
            email = str(body.get("EmailAddress") or "").strip().casefold()
            mine = phones(body)
            candidates = [c for c in existing if _name_key(c.get("LastName")) == last and (
                (mine & phones(c)) or (email and email == str(c.get("EmailAddress") or "").strip().casefold()))]
        seqs = sorted({_int(c.get("SequenceNumber")) for c in candidates} - {None})
        if len(seqs) > 1:
            return None, (f"Contact {slot + 1} ({body.get('FirstName')} {body.get('LastName')}) matches "
                          f"{len(seqs)} of the student's Aeries contacts (SequenceNumbers "
                          f"{', '.join(map(str, seqs))}); not guessing which. Nothing was sent.")
        return (seqs[0] if seqs else None), None

    def _write_contact(self, slot: int, sid: str, seq: int | None, body: dict,
                       existing: list[Mapping]) -> tuple[dict, Any, list[FieldError]]:
        year = f"?DatabaseYear={self.school_year}" if self.school_year else ""
        if seq is None:
            path = f"{API}/InsertContact/{sid}"
            known = {_int(c.get("SequenceNumber")) for c in existing}

            def find_saved():
                try:
                    rows = self._get(f"/schools/0/contacts/{sid}", "contacts", expect=list)
                except (TransportError, AdapterError):
                    return None, False
                new = [r for r in rows if isinstance(r, Mapping) and _int(r.get("SequenceNumber")) not in known]
                matched = [r for r in new if self._match_contact(slot, body, [r])[0] is not None]
                return (dict(matched[0]), True) if len(matched) == 1 else (None, not matched)
        else:
            path = f"{API}/UpdateContact/{sid}/{seq}"
        sent = {"request": f"POST {path}{year}", "body": body}
        key = f"{CONTACT_PREFIX}{slot}"
        try:
            if seq is None:
                response, answer = self._post_write(path, body, find_saved)
            else:
                response, answer = self.transport.request(
                    "POST", path, params=self._params(), json=body,
                    headers={"Content-Type": "application/json"}), None
        except _NotSaved as gone:
            return sent, None, [FieldError(key, "NOT_SAVED", f"Contact {slot + 1}: {gone.error} Aeries does not "
                                                             f"hold the contact (looked up after that answer); "
                                                             f"syncing again sends it.")]
        except TransportError as exc:
            note = (" It may or may not have been saved; syncing again is safe (contacts are matched by name)."
                    if exc.maybe_processed else "")
            return sent, None, [FieldError(key, exc.kind.upper(), f"Contact {slot + 1}: {exc}{note}")]
        if answer is None:
            if not response.is_success:
                msg = aeries_message(response, self.transport.redact)
                if response.status_code == 400:
                    text = self.transport.redact(msg or "Aeries refused the contact without saying why.")
                    f = next((c.key for c in sorted(CONTACT_FIELDS, key=lambda c: -len(c.key))
                              if re.search(rf"\b{re.escape(c.key)}\b", msg or "")), None)
                    return sent, _json(response), [FieldError(f"{key}.{f}" if f else key, "REFUSED",
                                                              f"Contact {slot + 1}: {text}")]
                text = self._http_message(response, path, "contacts")
                return sent, _json(response), [FieldError(key, f"HTTP_{response.status_code}",
                                                          f"Contact {slot + 1}: {text}")]
            answer = _json(response)
        if not isinstance(answer, Mapping) or _int(answer.get("SequenceNumber")) is None:
            return sent, answer, [FieldError(key, "MALFORMED_RESPONSE",
                                             f"Contact {slot + 1}: Aeries answered without the contact, so it may "
                                             f"or may not have been saved. Syncing again is safe (contacts are "
                                             f"matched by name).")]
        permission = "Insert" if seq is None else "Update"
        errors = []
        for k, value in body.items():
            f = CONTACT_BY_KEY[k]
            got = answer.get(f.read)
            if not _same(f, value, got):
                errors.append(FieldError(f"{key}.{k}", "NOT_WRITTEN",
                                         f"Aeries did not take contact {slot + 1}'s {f.label} ({k}): sent "
                                         f"{_shown(value)}, Aeries has {_shown(got)}. The API certificate "
                                         f"probably lacks the field's {permission} permission."))
        return sent, answer, errors


def _grade_label(value: Any) -> str:
    g = _int(value)
    if g is None:
        return str(value)
    return {-2: "PS", -1: "TK", 0: "K"}.get(g, str(g))


def _join(errors: list[FieldError]) -> str:
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors)


def _coerce(f: AeriesField, value: Any) -> tuple[Any, str | None]:
    """The value as Aeries binds it, or a problem by Aeries' rules."""
    if f.kind in ("grade", "school", "int"):
        if isinstance(value, str) and not value.strip():
            return value, None
        n = _int(value)
        if n is None:
            return value, f"{f.label} must be a whole number, not {_shown(value)}."
        if f.kind == "grade" and not -2 <= n <= 18:
            return value, f"{f.label} must be an Aeries grade from -2 to 18, not {n}."
        if not -32768 <= n <= 32767:
            what = "a school code" if f.kind == "school" else "a whole number"
            return value, f"{f.label} must be {what} up to 32767, not {n}."
        return n, None
    if f.kind == "date":
        if isinstance(value, str) and not value.strip():
            return "", None
        d = _date(value)
        if d is None:
            return value, f"{f.label} must be a date as {YMD}, not {_shown(value)}."
        return d, None
    if f.kind == "yn":
        text = str(value).strip().upper()
        if text not in ("Y", "N", ""):
            return value, f"{f.label} must be Y or N, not {_shown(value)}."
        return text, None
    if f.kind == "phone":
        text = str(value).strip()
        if len(re.sub(r"\D", "", text)) > 10:
            return value, f"{f.label} must have at most 10 digits."
        return text, None
    if isinstance(value, (dict, list)):
        return value, f"{f.label} must be text."
    text = value if isinstance(value, str) else str(value)
    if f.max_length is not None and len(text) > f.max_length:
        return value, f"{f.label} is longer than Aeries' {f.max_length} characters."
    return text, None
