"""The SIS adapter contract.

An adapter is the only code that knows a particular SIS. The core asks it four
things: which settings a connection needs (``settings_schema``), whether the
connection works (``check_connection``), which fields the SIS accepts
(``target_fields``), and to export a batch of mapped records (``export``). An
adapter that can also be read from (an import: SIS -> Enroll) answers two more:
which fields a student read from the SIS carries (``import_fields``) and the
students themselves, page by page (``list_students``, ``get_student``).
Everything crossing this boundary is a plain dataclass defined here, so plugins
import only these names from ``enroll_sync`` and never reach into ``web/``.

Mapped records arrive flat: ``{"name.first_name": "Ana", "addresses.0.city": ...}``.
``nest()`` turns the dotted keys into the nested JSON most SIS APIs want.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Mapping, Sequence

__all__ = [
    "AdapterError", "CheckResult", "Code", "ExportRecord", "ExportResult", "FieldError",
    "FieldSection", "Outcome", "SettingField", "SISAdapter", "SISStudent", "StudentPage", "TargetField",
    "can_import", "flatten", "nest", "sections_from_dicts", "sections_to_dicts",
]


class AdapterError(Exception):
    """A problem the admin can act on (bad settings, unreachable SIS, bad schema).

    ``str(error)`` is shown to the admin as is, so it must never contain a secret.
    """


# --------------------------------------------------------------------------- settings

SETTING_TYPES = ("string", "url", "secret", "integer", "number", "boolean", "choice", "text")


@dataclass(frozen=True)
class SettingField:
    """One field of a connection's settings form, rendered by the core.

    ``type`` is one of SETTING_TYPES. A ``secret`` field is stored encrypted, is
    never rendered back, and a blank submission keeps the stored value.
    ``choices`` is a sequence of (value, label) pairs for ``choice`` fields.
    """

    key: str
    label: str
    type: str = "string"
    required: bool = False
    default: Any = None
    help: str = ""
    choices: tuple[tuple[str, str], ...] = ()
    min: float | None = None
    max: float | None = None

    @property
    def secret(self) -> bool:
        return self.type == "secret"


# --------------------------------------------------------------------------- target fields

@dataclass(frozen=True)
class Code:
    """An allowed value of a SIS field (``value`` is sent; ``label`` is shown)."""

    value: str
    label: str = ""


@dataclass(frozen=True)
class TargetField:
    """A field the SIS accepts: what fills the To Field column.

    ``key`` is a dotted path into the record (``name.first_name``); ``type`` is one
    of string, date, integer, number, boolean, code. ``required`` means required
    when a new student is inserted. ``codes`` lists allowed values when the SIS
    knows them (offered as Match Codes targets). ``insert_only`` fields are not sent
    on update.
    """

    key: str
    label: str
    type: str = "string"
    required: bool = False
    max_length: int | None = None
    codes: tuple[Code, ...] = ()
    help: str = ""
    format: str | None = None
    insert_only: bool = False


@dataclass(frozen=True)
class FieldSection:
    """A group of target fields, usually one SIS table or top-level object."""

    key: str
    label: str
    fields: tuple[TargetField, ...] = ()


def sections_to_dicts(sections: Sequence[FieldSection]) -> list[dict]:
    """Serialise sections for the per-connection field cache (JSON-safe)."""
    return [dataclasses.asdict(s) for s in sections]


def sections_from_dicts(data: Sequence[Mapping]) -> list[FieldSection]:
    """Inverse of ``sections_to_dicts``."""
    out = []
    for s in data:
        fields = []
        for f in s.get("fields", ()):
            f = dict(f)
            f["codes"] = tuple(Code(**c) for c in f.get("codes", ()))
            fields.append(TargetField(**f))
        out.append(FieldSection(key=s["key"], label=s["label"], fields=tuple(fields)))
    return out


# --------------------------------------------------------------------------- checks and export

@dataclass
class CheckResult:
    """The answer of Test Connection: ``message`` is shown on the connection card."""

    ok: bool
    message: str
    details: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportRecord:
    """One mapped record to export.

    ``record_id`` is the core's stable key for the record (the registration id as
    a string); adapters echo it back in the result (PowerSchool's ``client_uid``).
    ``payload`` is flat, dotted target key -> value, exactly as the mapping engine
    produced it. ``sis_id`` is the student's id in the SIS when known (update).
    """

    record_id: str
    payload: dict[str, Any]
    sis_id: str | None = None


class Outcome(str, enum.Enum):
    """How one record ended.

    - ``SUCCEEDED``: the SIS holds the record as sent.
    - ``PARTIAL``: the SIS holds the student, but not everything (a contact, an ignored field).
    - ``FAILED``: the SIS refused it, or nothing is known to have reached it; ``message`` says why.
    - ``NOT_FOUND``: the record was sent as an update of ``ExportRecord.sis_id`` and the SIS
      says no such record exists (deleted, or the SIS was emptied or restored from a
      backup). Nothing was written. The core sends it again without ``sis_id``, so the
      adapter's match-before-insert finds the student under its new id or inserts it.
    - ``RETRY``: the SIS said this record cannot be handled now (busy, "try again", a 503
      inside a batch). Nothing was written. The core sends it again after a bounded
      backoff before calling it Failed.
    """

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIAL = "partial"
    NOT_FOUND = "not_found"
    RETRY = "retry"


@dataclass
class FieldError:
    """Why the SIS (or the adapter's own validation) refused a field or record."""

    field: str | None
    code: str
    message: str


@dataclass
class ExportResult:
    """The outcome of one record. Exactly one per ExportRecord, keyed by record_id.

    ``sent`` is the body sent for this record (no secrets), ``response`` the SIS's
    answer for it; both are kept in the registration's sync history. ``action`` is
    "insert" or "update" when known. ``matched_by`` says how match-before-insert found
    a record sent without ``sis_id`` that the SIS already had ("local id", "name and
    birth date" ...): the record was then updated, and the core links the student to
    ``sis_id`` as matched.
    """

    record_id: str
    outcome: Outcome
    sis_id: str | None = None
    action: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    message: str = ""
    sent: Any = None
    response: Any = None
    matched_by: str | None = None

    @property
    def ok(self) -> bool:
        """The SIS holds the record (Succeeded or Partial Sync)."""
        return self.outcome in (Outcome.SUCCEEDED, Outcome.PARTIAL)


# --------------------------------------------------------------------------- import (SIS -> Enroll)

@dataclass
class SISStudent:
    """One student as the SIS holds it, read for an import.

    ``sis_id`` is the id the core links the student to (the same id ``export`` answers
    with, e.g. PowerSchool's DCID). ``values`` is flat: dotted keys exactly as
    ``import_fields()`` lists them (``{"name.first_name": "Ana", "addresses.0.city": ...}``;
    ``flatten()`` makes them from nested JSON). ``school`` is the school number the SIS
    enrolls the student at, when it says (the core imports only the students of the
    schools assigned to the connection; None: the SIS does not say, so every one is).
    """

    sis_id: str
    values: dict[str, Any]
    school: str | None = None


@dataclass
class StudentPage:
    """One page of ``list_students``.

    ``total``: how many students the whole listing holds, when the SIS says (None:
    unknown). ``cursor``: an opaque string; ``list_students(cursor=...)`` continues with
    the page after this one (None: this is the last page). The core stores it after it
    has recorded the page, so an interrupted import resumes where it stopped.
    ``marker``: the SIS's change marker as of the start of this listing (Ed-Fi's newest
    change version); after a complete pass the core keeps it and asks for
    ``list_students(since=marker)`` next time: only what changed since (None: the SIS
    offers no change tracking, so every import reads everything).
    """

    students: list[SISStudent]
    total: int | None = None
    cursor: str | None = None
    marker: str | None = None


# --------------------------------------------------------------------------- the base class

class SISAdapter:
    """Base class of every SIS adapter. Subclass it and register the class through
    the ``register_sis_adapters`` hook.

    The core builds one instance per connection and keeps it while the settings do
    not change, so an adapter may hold a token and an HTTP client; ``close()`` is
    called when it is dropped. Methods may raise AdapterError with a message for the
    admin; any other exception is treated as a bug and reported generically.
    """

    #: short, stable identifier stored on connections, e.g. "powerschool"
    name: ClassVar[str] = ""
    #: what admins see as the SIS type, e.g. "PowerSchool"
    label: ClassVar[str] = ""
    #: the adapter's version, shown by ``enroll-sync plugins``
    version: ClassVar[str] = "0"
    #: records per request the SIS takes; sync jobs hand ``export()`` a few batches at a
    #: time. Adapters usually set it from a connection setting in ``__init__``.
    batch_size: int = 100

    def __init__(self, settings: Mapping[str, Any]):
        self.settings = dict(settings)

    @classmethod
    def settings_schema(cls) -> list[SettingField]:
        """The fields of a connection's settings form."""
        return []

    def check_connection(self) -> CheckResult:
        """Authenticate and read something cheap; explain any failure plainly."""
        raise NotImplementedError

    def target_fields(self) -> list[FieldSection]:
        """The SIS fields a mapping can write to, grouped in sections."""
        raise NotImplementedError

    def preview(self, record: ExportRecord) -> Any:
        """The exact body this adapter would send for ``record`` (Send Record preview)."""
        return nest(record.payload)

    def prepare(self, records: Sequence[ExportRecord]) -> None:
        """Optional: get ready to export ``records`` soon (e.g. their match-before-insert
        look-ups). A sync job calls it, in another thread, while the previous batch is on its
        way to the SIS, then calls ``export`` with the same records; an adapter may keep
        what it learned for that ``export`` (briefly: the SIS may change). Errors are ignored
        (``export`` must still work on its own)."""

    def export(self, records: Sequence[ExportRecord]) -> list[ExportResult]:
        """Send ``records``; return exactly one ExportResult per record.

        Must be safe to repeat: a record exported twice (after a crash) must not
        create a second student in the SIS. A record with ``sis_id`` is an update of
        that SIS record: when the SIS says it does not exist, answer ``NOT_FOUND``
        (never insert it yourself: the core re-sends it without ``sis_id``). A record
        the SIS could not take right now is ``RETRY``.
        """
        raise NotImplementedError

    # -- import: SIS -> Enroll (optional; see can_import)

    def import_fields(self) -> list[FieldSection]:
        """The fields a student read from the SIS carries (the From column of the Import
        Student Mapping), keys as in ``SISStudent.values``. ``[]``: this SIS cannot be
        imported from."""
        return []

    def list_students(self, *, since: str | None = None, page_size: int | None = None,
                      cursor: str | None = None) -> Iterator[StudentPage]:
        """Every student of the SIS, page by page (a generator: one page in memory).

        ``since``: a ``StudentPage.marker`` of an earlier complete pass; only students
        changed since then are listed when the SIS can tell (else every student).
        ``page_size``: at most this many per page (the SIS's own maximum wins).
        ``cursor``: continue after the page that carried it (``StudentPage.cursor``).
        A listing of an empty SIS yields one page with no students (``total`` 0).

        Retries are the transport's (a page answering 500 once is read again); a page
        that keeps failing raises ``AdapterError`` saying which page: never skip it.
        """
        raise AdapterError(f"{self.label or self.name} cannot be imported from.")

    def get_student(self, sis_id: str) -> SISStudent | None:
        """One student by ``sis_id`` (the Student Examples of an Import Student Mapping),
        or None when the SIS has none. The default walks ``list_students``; override it
        when the SIS can read one record directly."""
        for page in self.list_students():
            for student in page.students:
                if str(student.sis_id) == str(sis_id):
                    return student
        return None

    def close(self) -> None:
        """Release clients and sockets."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- helpers

def nest(flat: Mapping[str, Any]) -> dict:
    """Turn dotted keys into nested JSON.

    ``{"name.first": "A", "addresses.0.city": "X"}`` ->
    ``{"name": {"first": "A"}, "addresses": [{"city": "X"}]}``. A numeric segment
    makes a list; gaps are filled with empty objects. Keys are applied in order.
    """
    root: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt_is_index = not last and parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({})
                if last:
                    node[idx] = value
                else:
                    if not isinstance(node[idx], (dict, list)) or (nxt_is_index and not isinstance(node[idx], list)):
                        node[idx] = [] if nxt_is_index else {}
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    child = node.get(part)
                    if nxt_is_index:
                        if not isinstance(child, list):
                            child = node[part] = []
                    elif not isinstance(child, dict):
                        child = node[part] = {}
                    node = child
    return root


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON -> dotted keys, the inverse of ``nest``.

    ``{"name": {"first": "A"}, "addresses": [{"city": "X"}]}`` ->
    ``{"name.first": "A", "addresses.0.city": "X"}``. Empty objects and lists vanish;
    a list of scalars stays one value (``{"tags": ["a", "b"]}`` -> ``{"tags": ["a", "b"]}``).
    """
    out: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list) and any(isinstance(v, (Mapping, list)) for v in value):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}" if key else str(i))
        elif key:
            out[key] = value

    walk(doc, prefix)
    return out


def can_import(adapter_class: type) -> bool:
    """Whether an adapter class can be imported from (it lists students)."""
    return getattr(adapter_class, "list_students", None) is not SISAdapter.list_students
