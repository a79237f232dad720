"""Student Examples of an Import Student Mapping: SIS students read live from the SIS.

An example is an SIS ID (the id Enroll links to, e.g. PowerSchool's DCID), or the
SchoolMint ID of a student already linked on the connection (an imported or exported
student): its SIS ID is used. The Mapped Value column shows what the import would make
of that student now. Reads are kept for ``EXAMPLE_TTL`` seconds, so re-rendering rows
while an admin maps does not ask the SIS every time.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from ...adapters import AdapterError, SISStudent
from ...models import SisLink, Student, SyncConnection
from ..links import link_scope

log = logging.getLogger("enroll_sync.imports")

MAX_EXAMPLES = 5
EXAMPLE_TTL = 30.0
_cache: dict[tuple, tuple[float, SISStudent | None]] = {}
_lock = threading.Lock()

_FIRST = ("name.first_name", "firstName", "first_name", "FirstName")
_LAST = ("name.last_name", "lastSurname", "last_name", "lastName", "LastName")


@dataclass
class ImportExample:
    """One Student Example of an import (the Mapped Value column reads ``source``)."""

    raw: str
    student: SISStudent
    kind: str = "student"

    @property
    def source(self) -> dict:
        return self.student.values

    @property
    def value(self) -> str:
        return str(self.student.sis_id)

    @property
    def name(self) -> str:
        v = self.student.values
        first = next((v[k] for k in _FIRST if v.get(k)), "")
        last = next((v[k] for k in _LAST if v.get(k)), "")
        return f"{first} {last}".strip()

    @property
    def label(self) -> str:
        return f"{self.name or 'SIS student'} (SIS ID {self.student.sis_id})"


def sis_id_of(conn: SyncConnection, raw: str) -> str:
    """The SIS ID an example names: itself, or the link of the student with that SchoolMint ID."""
    raw = str(raw).strip()
    row = (SisLink.select(SisLink.sis_id).join(Student, on=(SisLink.student == Student.id))
           .where((Student.organization == conn.organization_id) & (Student.schoolmint_id == raw)
                  & (SisLink.connection == link_scope(conn))).tuples().first())
    return row[0] if row else raw


def read_student(conn: SyncConnection, sis_id: str, app=None, fresh: bool = False) -> SISStudent | None:
    from ..connections import open_adapter
    key = (conn.id, conn.updated_at, str(sis_id))
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        if hit and not fresh and now - hit[0] < EXAMPLE_TTL:
            return hit[1]
    student = open_adapter(conn, app).get_student(str(sis_id))
    with _lock:
        if len(_cache) > 500:
            _cache.clear()
        _cache[key] = (now, student)
    return student


def check_import_examples(conn: SyncConnection, values: Iterable[str], app=None
                          ) -> tuple[list[str], dict[str, str]]:
    """Clean the Configure tab's Student Examples of an import: (kept, errors by input name)."""
    kept, errors = [], {}
    for i, raw in enumerate(values):
        v = (raw or "").strip()
        if not v:
            continue
        name = f"student_example-{i}"
        if i >= MAX_EXAMPLES:
            errors[name] = f"Up to {MAX_EXAMPLES} Student Examples."
            continue
        if v in kept:
            errors[name] = f"Student “{v}” is already an example."
            continue
        try:
            student = read_student(conn, sis_id_of(conn, v), app, fresh=True)
        except AdapterError as exc:
            errors[name] = f"Could not read “{v}” from the SIS: {exc}"
            continue
        if student is None:
            errors[name] = f"The SIS has no student with SIS ID “{v}” (nor is a student with that SchoolMint ID linked)."
        else:
            kept.append(v)
    return kept, errors


def resolve_import_examples(conn: SyncConnection, mapping, app=None) -> tuple[list[ImportExample], str | None]:
    """The saved Student Examples read from the SIS now, and a problem to show (or None)."""
    out, problem = [], None
    for raw in (mapping.student_examples or []) if mapping else []:
        try:
            student = read_student(conn, sis_id_of(conn, raw), app)
        except AdapterError as exc:
            problem = f"Could not read the Student Examples from the SIS: {exc}"
            break
        except Exception:  # an adapter bug must not break the editor
            log.exception("reading example %s of connection %s failed", raw, conn.id)
            problem = "Could not read the Student Examples from the SIS."
            break
        if student is not None and all(e.value != str(student.sis_id) for e in out):
            out.append(ImportExample(str(raw), student))
    return out, problem


__all__ = ["ImportExample", "check_import_examples", "resolve_import_examples", "read_student", "sis_id_of",
           "MAX_EXAMPLES"]
