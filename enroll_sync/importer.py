"""``enroll-sync import registrations FILE.csv``.

The header row names columns: the registration's own columns (``form_id``,
``schoolmint_id``, ``school_number``, ``grade``, ``school_year``, ``status``, and
optionally ``sis_id``: the student's id in the SIS the school's connection points at) and any field keys of the organization's form. Every row is
checked against the field catalog and the input rules (``enroll_sync.inputs``: no NUL
bytes, no value longer than its column holds, form ids an integer column holds); each
bad row is reported with its line and reason, and rows are imported only when the whole
file is good, in one transaction: a bad file leaves nothing half-written.

The CSV is read strictly: a quote opened and never closed is an error at the line it
opens on, not a value that swallows every row after it.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass, field

from .db import analyze, database
from .inputs import ANSWER_MAX, MAX_INT, NUL, InputError, limit_of, whole_number
from .models import (APPROVED, LINK_IMPORTED, LINK_UNKNOWN, REGISTRATION_STATUSES, FormField, Registration, School,
                     SisLink, Student, utcnow)
from .sync.imports.profiles import prefill_for
from .sync.links import link_scope

REQUIRED_COLUMNS = ("form_id", "schoolmint_id", "school_number", "grade", "school_year", "status")
OPTIONAL_COLUMNS = ("sis_id",)
GRADES = ("PK", "TK", "K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12")
SCHOOL_YEAR = re.compile(r"^(\d{4})-(\d{4})$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE_FORMATS = ("%m/%d/%Y", "%Y-%m-%d")
MAX_ROWS = 200_000


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    @property
    def ok(self) -> bool:
        return not self.errors


def _valid_date(value: str) -> bool:
    for fmt in DATE_FORMATS:
        try:
            dt.datetime.strptime(value, fmt)
            return True
        except ValueError:
            pass
    return False


class CsvProblem(Exception):
    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


def _records(text: str):
    """(line the record starts on, values) for each record of CSV ``text``, read strictly."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise CsvProblem(start, "A quoted value starts on this line and its closing quote never comes "
                                        "(the file ends inside it). Close the quote or remove it.") from None
            raise CsvProblem(start, f"The file is not valid CSV here: {exc}. A value that contains a quote "
                                    f"must be quoted as a whole, with the quote doubled (\"\").") from None
        yield start, row


def _short(value: str, most: int = 40) -> str:
    value = value.replace(NUL, "\\0")
    return value if len(value) <= most else value[: most - 1] + "…"


def _cell_problems(values: dict[str, str]) -> list[str]:
    """The input rules every cell must meet: no NUL, and no more than its column holds."""
    limits = {"schoolmint_id": limit_of(Student.schoolmint_id), "sis_id": limit_of(SisLink.sis_id),
              "student_legal_first_name": limit_of(Student.first_name),
              "student_legal_last_name": limit_of(Student.last_name)}
    problems = []
    for key, value in values.items():
        if NUL in value:
            problems.append(f"{key} contains a NUL character (\\0)")
            continue
        limit = limits.get(key, ANSWER_MAX)
        if len(value) > limit:
            problems.append(f"{key} is {len(value):,} characters long; at most {limit:,} fit")
    first = values.get("student_legal_first_name", "")
    last = values.get("student_legal_last_name", "")
    name_limit = limit_of(Registration.student_name)
    if len(first) + len(last) + 2 > name_limit and not problems:
        problems.append(f"student_legal_first_name and student_legal_last_name together are too long; "
                        f"at most {name_limit - 2:,} characters fit")
    return problems


def import_registrations(org, text: str) -> ImportReport:
    """Validate and import CSV ``text`` for ``org``. Nothing is written unless every row is good."""
    report = ImportReport()
    if text.startswith("\ufeff"):
        text = text[1:]
    records = _records(text)
    try:
        _, header = next(records, (1, None))
    except CsvProblem as exc:
        report.errors.append((exc.line, exc.message))
        return report
    if not header:
        report.errors.append((1, "The file is empty: the first line must name the columns."))
        return report
    header = [h.strip() for h in header]
    if any(NUL in h for h in header):
        report.errors.append((1, "A column name contains a NUL character (\\0)."))
        return report
    catalog = {f.key: f for f in FormField.select().where(FormField.organization == org)}
    known = set(REQUIRED_COLUMNS) | set(OPTIONAL_COLUMNS) | set(catalog)
    unknown = [h for h in header if h not in known]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if unknown:
        report.errors.append((1, "Unknown column(s): " + ", ".join(_short(u) for u in unknown) + ". Use the field keys of the registration form."))
    if missing:
        report.errors.append((1, "Missing required column(s): " + ", ".join(missing) + "."))
    if dupes:
        report.errors.append((1, "Column(s) named twice: " + ", ".join(dupes) + "."))
    if report.errors:
        return report

    schools = {s.school_number: s for s in School.select().where(School.organization == org)}
    existing_students = {s.schoolmint_id: s for s in Student.select().where(Student.organization == org)}
    seen_forms: dict[int, int] = {}
    seen_sm: dict[str, int] = {}
    good = []
    line = 1
    try:
        for line, row in records:
            if not any(c.strip() for c in row):
                continue
            if len(good) + len(report.errors) >= MAX_ROWS:
                report.errors.append((line, f"The file has more than {MAX_ROWS} rows; split it."))
                break
            if len(row) != len(header):
                report.errors.append((line, f"Expected {len(header)} values, found {len(row)}."))
                continue
            values = {h: v.strip() for h, v in zip(header, row)}
            problems = _cell_problems(values)
            if problems:  # the values themselves cannot be kept: say so, and nothing more about them
                report.errors.append((line, "; ".join(problems) + "."))
                continue
            try:
                form_id = whole_number(values["form_id"], "form_id", minimum=1, maximum=MAX_INT)
            except InputError:
                problems.append(f"form_id “{_short(values['form_id'])}” is not a whole number from 1 to "
                                f"{MAX_INT:,}")
                form_id = None
            if form_id is not None:
                if form_id in seen_forms:
                    problems.append(f"form_id {form_id} already appears on line {seen_forms[form_id]}")
                else:
                    seen_forms[form_id] = line
            sm = values["schoolmint_id"]
            if not sm:
                problems.append("schoolmint_id is blank")
            elif sm in seen_sm:
                problems.append(f"schoolmint_id {_short(sm)} already appears on line {seen_sm[sm]}")
            else:
                seen_sm[sm] = line
            school = schools.get(values["school_number"])
            if school is None:
                problems.append(f"no school has school_number “{_short(values['school_number'])}”")
            if values["grade"] not in GRADES:
                problems.append(f"grade “{_short(values['grade'])}” is not one of {', '.join(GRADES)}")
            m = SCHOOL_YEAR.match(values["school_year"])
            if not m or int(m.group(2)) != int(m.group(1)) + 1:
                problems.append(f"school_year “{_short(values['school_year'])}” must look like 2026-2027")
            if values["status"] not in REGISTRATION_STATUSES:
                problems.append(f"status “{_short(values['status'])}” is not one of {', '.join(REGISTRATION_STATUSES)}")
            answers = {}
            for key, value in values.items():
                f = catalog.get(key)
                if f is None:
                    continue
                answers[key] = value
                if not value:
                    continue
                if f.type in ("choice", "yesno") and f.options and value not in f.options:
                    problems.append(f"{key} “{_short(value)}” is not one of the form's answers ({', '.join(o for o in f.options if o)})")
                elif f.type == "date" and not _valid_date(value):
                    problems.append(f"{key} “{_short(value)}” is not a date (MM/DD/YYYY or YYYY-MM-DD)")
                elif f.type == "email" and not EMAIL.match(value):
                    problems.append(f"{key} “{_short(value)}” is not an email address")
                elif f.type == "phone" and len(re.sub(r"\D", "", value)) not in (10, 11):
                    problems.append(f"{key} “{_short(value)}” is not a 10-digit phone number")
            if problems:
                report.errors.append((line, "; ".join(problems) + "."))
                continue
            good.append((line, form_id, sm, school, values, answers))
    except CsvProblem as exc:
        report.errors.append((exc.line, exc.message))
    if good:
        taken = {r.form_id for r in Registration.select(Registration.form_id).where(
            (Registration.organization == org) & Registration.form_id.in_([g[1] for g in good]))}
        for g in good:
            if g[1] in taken:
                report.errors.append((g[0], f"form_id {g[1]} already exists in this organization."))
    if report.errors or not good:
        if not good and not report.errors:
            report.errors.append((2, "The file has no rows to import."))
        report.errors.sort()
        return report

    now = utcnow()
    with database.atomic():
        for line, form_id, sm, school, values, answers in good:
            student = existing_students.get(sm)
            first = answers.get("student_legal_first_name", "")
            last = answers.get("student_legal_last_name", "")
            if student is None:
                student = Student.create(organization=org, schoolmint_id=sm, first_name=first, last_name=last)
                existing_students[sm] = student
            if values.get("sis_id"):
                # the id in the SIS the school syncs to; with no connection yet, kept as "connection unknown"
                SisLink.insert(organization=org, student=student, connection=link_scope(school.sync_connection),
                               sis_id=values["sis_id"],
                               how=LINK_IMPORTED if school.sync_connection_id else LINK_UNKNOWN,
                               linked_at=now).on_conflict_ignore().execute()
            # a returning student: answers left blank are pre-filled from their imported profile
            answers, _ = prefill_for(student.id, school.sync_connection if school.sync_connection_id else None,
                                     answers)
            Student.update(match_key=None).where(Student.id == student.id).execute()  # name/birth date may differ
            Registration.create(organization=org, form_id=form_id, student=student, school=school,
                                grade=values["grade"], school_year=values["school_year"], status=values["status"],
                                answers=answers, student_name=f"{last}, {first}", submitted_at=now,
                                approved_at=now if values["status"] == APPROVED else None)
            report.imported += 1
    analyze()
    return report
