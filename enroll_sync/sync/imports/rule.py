"""What an import does with one SIS student: the one home of the import rule, used by
the preview and the import alike (what the preview says is what the import does).

1. **Map** the SIS student's flat values with the connection's Import Student Mapping
   (the one mapping engine, From = SIS fields, To = Enroll fields). A row that cannot
   map the student (a bad date, a code without a match set to fail) fails the student.
2. **Scope**: only the students of the schools assigned to the connection are imported.
   The school is the mapped Enroll School Number when the mapping has one (Match Codes
   from the SIS's school numbers), else the SIS's own school number; an SIS that does
   not say where a student is enrolled imports every student.
3. **Match** (``matching``): the SIS link of this connection, then SchoolMint ID, then
   name + birth date. Two SIS students matching one Enroll student is a **Conflict**:
   nothing of either is written and both ids are named; so is one SIS student matching
   several Enroll students by name and birth date (never guessed).
4. **Merge with the Overwrite rule** (``merge``): a blank or null SIS value never
   clears a filled Enroll value, unless the row's Overwrite is checked; then it does.
5. **Decide**: Created (a new Enroll student, linked), Updated (values changed, or newly
   linked), Unchanged, Conflict, Skipped (not at this connection's schools) or Failed.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ...adapters import SISStudent
from ...mapping import MappingContext
from ...mapping.engine import ERROR, CompiledMapping
from ...models import (IMPORT_CONFLICT, IMPORT_CREATED, IMPORT_UNCHANGED, IMPORT_UPDATED, SKIPPED, SYNC_FAILED)
from .fields import BIRTH_DATE, FIRST_NAME, LAST_NAME, SCHOOL_NUMBER, SCHOOLMINT_ID, SYSTEM_KEYS
from .matching import PageIndex, match_key

#: how many changed fields a reason names before "and N more"
SHOWN_FIELDS = 4


def as_answer(value: Any) -> Any:
    """A mapped value as Enroll keeps answers: text (lists stay lists)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return [as_answer(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%m/%d/%Y")
    return str(value)


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, (list, tuple)) and not value)


def merge(before: Mapping[str, Any], mapped: Mapping[str, Any], mapped_keys: Iterable[str],
          overwrite: Iterable[str]) -> dict[str, Any]:
    """The Enroll values after an import: for each mapped field, a filled SIS value
    replaces the Enroll value; a blank (or null, or missing) SIS value leaves it as it is,
    unless the field's Overwrite is checked: then the field is cleared."""
    after = dict(before)
    clear = set(overwrite)
    for key in mapped_keys:
        value = mapped.get(key)
        if not blank(value):
            after[key] = value
        elif key in clear:
            after.pop(key, None)
    return after


def differences(before: Mapping[str, Any], after: Mapping[str, Any], keys: Iterable[str]) -> dict[str, list]:
    """Field -> [before, after] (None: blank) for the mapped fields that differ."""
    out = {}
    get_old, get_new = before.get, after.get
    for key in keys:
        old, new = get_old(key), get_new(key)
        if old == new:
            continue
        old, new = (None if blank(old) else old), (None if blank(new) else new)
        if old == new or (old is not None and new is not None and str(old) == str(new)):
            continue
        out[key] = [old, new]
    return out


def school_key(value: Any) -> str | None:
    """School numbers compared as the SIS and Enroll write them ("0100" = "100")."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return str(int(text)) if text.isdigit() else text.casefold()


@dataclass
class Decision:
    """The outcome for one SIS student, and what writing it takes."""

    sis_id: str
    status: str
    reason: str
    name: str = ""
    school: str | None = None
    matched_by: str | None = None
    student_id: int | None = None
    match_key: str | None = None
    changes: dict[str, list] | None = None
    #: the student's Enroll values after the import (the profile), when written
    values: dict[str, Any] | None = None
    profile_id: int | None = None
    #: a new Enroll student: SchoolMint ID, first and last name
    create: tuple[str, str, str] | None = None
    #: the student gets (or changes) its link on this connection
    link: bool = False
    #: the student's name or birth date changed: its match key changes
    new_key: bool = False


@dataclass
class Claims:
    """Who has taken what so far (this page; for a preview, also the earlier pages):
    Enroll student -> SIS id, and for students to be created, match key / SchoolMint ID
    -> SIS id."""

    students: dict[int, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    schoolmint: dict[str, str] = field(default_factory=dict)


class ImportRule:
    """The import rule of one connection, compiled once per job."""

    def __init__(self, compiled: CompiledMapping, *, scope: int, org_id: int, school_numbers: Iterable[str],
                 labels: Mapping[str, str] | None = None, today: dt.date | None = None, preview: bool = False):
        self.compiled = compiled
        self.scope, self.org_id = scope, org_id
        self.schools = {school_key(s) for s in school_numbers if school_key(s)}
        self.labels = dict(labels or {})
        self.ctx = MappingContext(today=today or dt.date.today(), insert=None)
        self.preview = preview
        rows = [r for r in compiled.rows if r.mapped and r.key and not r.has_config_error]
        #: Enroll keys the mapping writes (answers; system keys are for matching and scope)
        self.answer_keys = tuple(dict.fromkeys(r.key for r in rows if r.key not in SYSTEM_KEYS))
        #: ... and those whose Overwrite is checked
        self.overwrite = frozenset(r.key for r in rows if r.row.get("overwrite") is True
                                   and r.key not in SYSTEM_KEYS)

    # -- 1. map
    def map(self, student: SISStudent) -> tuple[dict[str, Any], str | None]:
        """(mapped Enroll values, why the student cannot be mapped or None)."""
        try:
            result = self.compiled(student.values, self.ctx)
        except Exception as exc:  # a bug in a step must fail this student, not the import
            return {}, f"The mapping could not be applied ({type(exc).__name__})."
        errors = [p for p in result.problems if p.severity == ERROR]
        if errors:
            return {}, "; ".join(f"{self.label(p.field)}: {p.message}" if p.field else p.message
                                 for p in errors[:5])
        return {k: (v if v.__class__ is str else as_answer(v)) for k, v in result.payload.items()}, None

    def label(self, key: str | None) -> str:
        return self.labels.get(key or "", key or "")

    # -- the page
    def decide_page(self, students: list[SISStudent],
                    earlier: Callable[[list[str], list[int], list[str]], Claims] | None = None) -> list[Decision]:
        """Decide every student of one page (a few queries for the whole page).

        ``earlier(keys, student_ids, schoolmint_ids)``: what earlier pages of this job
        took (a preview, which writes nothing, asks its own report)."""
        mapped: list[tuple[SISStudent, dict, str | None, str | None]] = []
        sms, keys = [], []
        for s in students:
            values, error = self.map(s)
            key = None
            if error is None:
                sms.append(self.schoolmint_id(s, values))
                sms.append(self.generated_schoolmint_id(s))
                key = self.key_of(values)
                keys.append(key)
            mapped.append((s, values, error, key))
        index = PageIndex(self.org_id, self.scope, [str(s.sis_id) for s in students], sms, keys)
        page = Claims()
        if earlier is not None:
            found = set(index.by_link.values()) | set(index.by_schoolmint.values()) | {
                x for ids in index.by_key.values() for x in ids}
            earlier = earlier([k for k in keys if k], sorted(found), [x for x in sms if x])
        earlier = earlier or Claims()
        return [self.decide(s, values, error, key, index, page, earlier) for s, values, error, key in mapped]

    def schoolmint_id(self, student: SISStudent, values: Mapping) -> str | None:
        sm = values.get(SCHOOLMINT_ID)
        return str(sm).strip() if not blank(sm) else None

    def generated_schoolmint_id(self, student: SISStudent) -> str:
        """The SchoolMint ID of a student an import creates when the SIS does not carry one."""
        return f"SIS{self.scope}-{student.sis_id}"

    @staticmethod
    def key_of(values: Mapping) -> str | None:
        return match_key(values.get(FIRST_NAME), values.get(LAST_NAME), values.get(BIRTH_DATE))

    def in_scope(self, student: SISStudent, values: Mapping) -> str | None:
        """None when the student is at one of the connection's schools, else why not."""
        school = values.get(SCHOOL_NUMBER)
        if blank(school):
            school = student.school
        key = school_key(school)
        if key is None:
            return None if student.school is None else "The SIS does not say which school the student is at."
        if key in self.schools:
            return None
        return f"School {school} is not one of this connection's schools."

    # -- one student
    def decide(self, s: SISStudent, values: dict, error: str | None, key: str | None, index: PageIndex,
               page: Claims, earlier: Claims) -> Decision:
        sis_id = str(s.sis_id)
        name = " ".join(str(values.get(k) or "").strip() for k in (FIRST_NAME, LAST_NAME)).strip()
        school = values.get(SCHOOL_NUMBER) or s.school
        school = None if blank(school) else str(school)
        d = Decision(sis_id, SYNC_FAILED, "", name=name, school=school)
        would = "Would " if self.preview else ""
        if error is not None:
            d.reason = f"Not imported: {error}"
            return d
        out = self.in_scope(s, values)
        if out is not None:
            d.status, d.reason = SKIPPED, f"Not imported: {out}"
            return d
        d.match_key = key
        sm = self.schoolmint_id(s, values)
        student_id, how = index.by_link.get(sis_id), "SIS link"
        if student_id is None:
            for candidate in (sm, self.generated_schoolmint_id(s)):
                if candidate and candidate in index.by_schoolmint:
                    student_id, how = index.by_schoolmint[candidate], "SchoolMint ID"
                    break
        if student_id is None and key:
            found = index.by_key.get(key, [])
            if len(found) > 1:
                names = ", ".join(index.describe(x) for x in found[:3])
                d.status = IMPORT_CONFLICT
                d.reason = (f"Conflict: SIS student {sis_id} matches {len(found)} Enroll students by name and birth "
                            f"date ({names}); nothing was {'would be ' if self.preview else ''}changed. Give them "
                            f"different SchoolMint IDs in the SIS, or link one by hand.")
                return d
            if found:
                student_id, how = found[0], "name and birth date"
        if student_id is not None:
            linked = index.link_of.get(student_id)
            other = page.students.get(student_id) or earlier.students.get(student_id)
            if how != "SIS link" and linked and linked != sis_id:
                other = linked
            if other and other != sis_id:
                d.status, d.student_id = IMPORT_CONFLICT, student_id
                d.reason = (f"Conflict: SIS students {other} and {sis_id} both match Enroll student "
                            f"{index.describe(student_id)} (SIS {sis_id} by {how}); "
                            f"{'it would stay' if self.preview else 'it stays'} linked to {other} and nothing of "
                            f"{sis_id} is imported. Fix the duplicate in the SIS, or unlink by hand.")
                return d
            page.students[student_id] = sis_id
            return self._update(d, student_id, how, values, index, would)
        # a new Enroll student
        for claimed, what in ((key and (page.keys.get(key) or earlier.keys.get(key)), "name and birth date"),
                              (sm and (page.schoolmint.get(sm) or earlier.schoolmint.get(sm)), "SchoolMint ID")):
            if claimed and claimed != sis_id:
                d.status = IMPORT_CONFLICT
                d.reason = (f"Conflict: SIS students {claimed} and {sis_id} are the same Enroll student by {what} "
                            f"({name or 'no name'}); only {claimed} {'would be' if self.preview else 'is'} "
                            f"imported. Fix the duplicate in the SIS.")
                return d
        first, last = values.get(FIRST_NAME), values.get(LAST_NAME)
        if blank(first) or blank(last):
            d.reason = ("Not imported: a new Enroll student needs a first and last name, and the mapped "
                        f"{self.label(FIRST_NAME if blank(first) else LAST_NAME)} is blank.")
            return d
        if key:
            page.keys[key] = sis_id
        if sm:
            page.schoolmint[sm] = sis_id
        after = merge({}, values, self.answer_keys, ())
        new_sm = sm or self.generated_schoolmint_id(s)
        d.status, d.values, d.link = IMPORT_CREATED, after, True
        d.create = (new_sm, str(first).strip(), str(last).strip())
        if self.preview:  # the preview's sample shows what a new student gets; an import keeps it in the profile
            d.changes = differences({}, after, self.answer_keys)
        d.reason = (f"{would}Create{'' if would else 'd'} Enroll student {name} (SchoolMint ID {new_sm}), "
                    f"linked to SIS student {sis_id}.")
        return d

    def _update(self, d: Decision, student_id: int, how: str, values: dict, index: PageIndex,
                would: str) -> Decision:
        d.student_id, d.matched_by = student_id, how
        profile = index.profile_of.get(student_id)
        if profile is not None:
            d.profile_id, before = profile[0], profile[1]
        else:
            answers = index.answers_of.get(student_id, {})
            before = {k: answers[k] for k in self.answer_keys if not blank(answers.get(k))}
        after = merge(before, values, self.answer_keys, self.overwrite)
        d.values = after
        d.changes = differences(before, after, self.answer_keys)
        d.link = index.link_of.get(student_id) != d.sis_id
        who = index.describe(student_id)
        if d.changes or d.link or profile is None:
            d.status = IMPORT_UPDATED
            parts = []
            if d.link:
                parts.append(f"{'would be ' if would else ''}linked to SIS student {d.sis_id} (matched by {how})")
            if d.changes:
                shown = [self.label(k) + (" (cleared)" if v[1] is None else "") for k, v in d.changes.items()]
                more = f" and {len(shown) - SHOWN_FIELDS} more" if len(shown) > SHOWN_FIELDS else ""
                parts.append(f"{len(shown)} field{'s' if len(shown) != 1 else ''} "
                             f"{'would change' if would else 'changed'}: {', '.join(shown[:SHOWN_FIELDS])}{more}")
            if not parts:
                parts.append("imported values kept for the next registration")
            d.reason = f"{who}: " + "; ".join(parts) + "."
            d.new_key = self.key_of(after) != self.key_of(before) or profile is None
        else:
            d.status = IMPORT_UNCHANGED
            d.reason = f"{who}: matched by {how}; nothing changed."
        return d


__all__ = ["ImportRule", "Decision", "Claims", "merge", "differences", "as_answer", "school_key", "blank"]
