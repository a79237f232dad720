"""The Configure tab's examples, and what a mapping's From field can hold.

Registration Examples are Registration Form IDs; Student Examples are a student's
SIS ID (on the connection being mapped) or SchoolMint ID. The editor shows the
Mapped Value of one of them; Send Record sends it. ``seen_values`` and
``answer_options`` list the answers a field has, for Match Codes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from peewee import Case, fn

from ...db import database, is_sqlite
from ...ids import parse_id
from ...inputs import field_problem, limit_of
from ...models import APPROVED, REGISTRATION_STATUSES, Registration, School, SisLink, Student
from ...catalog import source_values
from ..links import sis_ids_for, students_by_sis_id

MAX_EXAMPLES = 5


def answer_options(org_id: int, key: str, form_options: Iterable = ()) -> list:
    """The choices a field offers: a form field's options (``form_options``); for a
    system value, what this organization has."""
    if key in ("school.school_number", "school.name"):
        col = School.school_number if key == "school.school_number" else School.name
        return [v for (v,) in School.select(col).where(School.organization == org_id).order_by(col).tuples()]
    if key == "registration.status":
        return list(REGISTRATION_STATUSES)
    return list(form_options)


def seen_values(org_id: int, key: str, limit: int = 200) -> dict[str, int]:
    """Distinct non-blank answers to ``key`` in this organization's registrations, with counts."""
    if not key:
        return {}
    if key.startswith(("registration.", "school.", "student.")):
        col = {"registration.grade": Registration.grade, "registration.school_year": Registration.school_year,
               "registration.status": Registration.status}.get(key)
        if col is None:
            return {}
        q = (Registration.select(col, fn.COUNT(Registration.id)).where(Registration.organization == org_id)
             .group_by(col).order_by(fn.COUNT(Registration.id).desc()).limit(limit).tuples())
        return {str(v): n for v, n in q if v not in (None, "")}
    if is_sqlite():
        sql = ("SELECT json_extract(answers, ?) AS v, COUNT(*) AS n FROM registration "
               "WHERE organization_id = ? GROUP BY v ORDER BY n DESC LIMIT ?")
        params = ('$."' + key.replace('"', '') + '"', org_id, limit)
    else:
        sql = ("SELECT (CAST(answers AS json) ->> %s) AS v, COUNT(*) AS n FROM registration "
               "WHERE organization_id = %s GROUP BY v ORDER BY n DESC LIMIT %s")
        params = (key, org_id, limit)
    out: dict[str, int] = {}
    for v, n in database.execute_sql(sql, params).fetchall():
        if v is None:
            continue
        if isinstance(v, str) and v.startswith("[") and v.endswith("]"):
            try:  # a multi-select answer stored as a JSON list
                items = json.loads(v)
            except ValueError:
                items = [v]
            for item in items if isinstance(items, list) else [items]:
                if str(item).strip():
                    out[str(item)] = out.get(str(item), 0) + n
            continue
        if str(v).strip():
            out[str(v)] = out.get(str(v), 0) + n
    return out


@dataclass
class Example:
    kind: str  # "registration" | "student"
    raw: str
    registration: Registration
    #: the student's id in the SIS being mapped (their link on that connection), if any
    sis_id: str | None = None

    @property
    def source(self) -> dict:
        """What the mapping reads for this example."""
        return source_values(self.registration, sis_id=self.sis_id)

    @property
    def value(self) -> str:
        return str(self.registration.form_id)

    @property
    def label(self) -> str:
        what = "Registration Form ID" if self.kind == "registration" else "Student"
        return f"{self.registration.student_name} ({what} {self.raw})"


def find_registration(org_id: int, form_id: Any) -> Registration | None:
    fid = parse_id(form_id)
    if fid is None:
        return None
    return Registration.get_or_none((Registration.organization == org_id) & (Registration.form_id == fid))


def find_student_registration(org_id: int, student_id: str, scope: int | None = None
                              ) -> tuple[Student | None, Registration | None]:
    """The student with this SchoolMint ID or SIS ID (linked on the connection whose links
    are ``scope``, else on any), and the registration to show for them (the latest
    Approved one, else the latest)."""
    sid = str(student_id).strip()
    student = (Student.select().where((Student.organization == org_id) & (Student.schoolmint_id == sid))
               .order_by(Student.id).first())
    if student is None:
        linked = students_by_sis_id(org_id, sid, scope) or (students_by_sis_id(org_id, sid) if scope else [])
        student = Student.get_or_none(Student.id == min(linked)) if linked else None
    if student is None:
        return None, None
    reg = (Registration.select().where((Registration.organization == org_id) & (Registration.student == student))
           .order_by(Case(None, [(Registration.status == APPROVED, 0)], 1), Registration.submitted_at.desc(),
                     Registration.id.desc())
           .first())
    return student, reg


def check_examples(org_id: int, registration_values: Iterable[str], student_values: Iterable[str],
                   scope: int | None = None) -> tuple[list[str], list[str], dict[str, str]]:
    """Clean the Configure tab's examples. Returns (registrations, students, errors) where
    errors maps an input name (``registration_example-2``) to its message."""
    errors: dict[str, str] = {}
    regs: list[str] = []
    for i, raw in enumerate(registration_values):
        v = (raw or "").strip()
        if not v:
            continue
        name = f"registration_example-{i}"
        if i >= MAX_EXAMPLES:
            errors[name] = f"Up to {MAX_EXAMPLES} Registration Examples."
        elif parse_id(v) is None:
            errors[name] = f"“{v}” is not a Registration Form ID: use the numbers at the end of the registration's URL."
        elif find_registration(org_id, v) is None:
            errors[name] = f"No registration with Registration Form ID {v} in this organization."
        elif str(parse_id(v)) in regs:
            errors[name] = f"Registration Form ID {v} is already an example."
        else:
            regs.append(str(parse_id(v)))
    students: list[str] = []
    for i, raw in enumerate(student_values):
        v = (raw or "").strip()
        if not v:
            continue
        name = f"student_example-{i}"
        if i >= MAX_EXAMPLES:
            errors[name] = f"Up to {MAX_EXAMPLES} Student Examples."
            continue
        if field_problem(errors, name, v, min(limit_of(Student.schoolmint_id), limit_of(SisLink.sis_id)),
                         "A SIS ID or SchoolMint ID"):
            continue
        student, reg = find_student_registration(org_id, v, scope)
        if student is None:
            errors[name] = f"No student with SIS ID or SchoolMint ID “{v}” in this organization."
        elif reg is None:
            errors[name] = f"Student “{v}” has no registration to show as an example."
        elif v in students:
            errors[name] = f"Student “{v}” is already an example."
        else:
            students.append(v)
    return regs, students, errors


def resolve_examples(org_id: int, mapping, scope: int | None = None) -> list[Example]:
    """The saved examples that still exist, registrations first, without repeats."""
    out: list[Example] = []
    seen: set[int] = set()
    if mapping is None:
        return out
    for raw in mapping.registration_examples or ():
        reg = find_registration(org_id, raw)
        if reg is not None and reg.id not in seen:
            seen.add(reg.id)
            out.append(Example("registration", str(raw), reg))
    for raw in mapping.student_examples or ():
        _, reg = find_student_registration(org_id, raw, scope)
        if reg is not None and reg.id not in seen:
            seen.add(reg.id)
            out.append(Example("student", str(raw), reg))
    linked = sis_ids_for([ex.registration.student_id for ex in out], scope)
    for ex in out:
        ex.sis_id = linked.get(ex.registration.student_id)
    return out


def pick_example(examples: list[Example], value: str | None) -> Example | None:
    for ex in examples:
        if value and ex.value == str(value).strip():
            return ex
    return examples[0] if examples else None
