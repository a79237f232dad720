"""Finding the Enroll student an SIS student is: the one home of the matching rules.

In order: (1) the SIS link of this connection (the student was linked before, by an
export or an import), (2) SchoolMint ID (when the Import Student Mapping maps one),
(3) name + birth date, normalised (``match_key``): accents, case, spaces and
punctuation do not matter; the birth date is read as YYYY-MM-DD, MM/DD/YYYY or
M/D/YYYY. A student without a birth date or a name has no key and is never matched
by name.

Every look-up is one query per page of SIS students (``PageIndex``), never one per
student, so an import of 100,000 students makes a few hundred queries.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from typing import Any, Iterable

from peewee import fn

from ...db import database, executemany, is_sqlite, table, write_tx
from ...models import Registration, SisLink, Student, StudentProfile

_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})")
_US = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")


def norm_name(value: Any) -> str:
    """"  José  O'Brien-Núñez " -> "joseobriennunez"."""
    if value is None:
        return ""
    text = str(value)
    if text.isascii():
        return _NOT_ALNUM.sub("", text.lower())
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return _NOT_ALNUM.sub("", text)


def norm_date(value: Any) -> str | None:
    """A birth date as YYYY-MM-DD, from a date, YYYY-MM-DD(Thh:mm) or M/D/YYYY; None otherwise."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    m = _ISO.match(text)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    else:
        m = _US.match(text)
        if not m:
            return None
        mo, d, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
    try:
        return dt.date(y, mo, d).isoformat()
    except ValueError:
        return None


def match_key(first: Any, last: Any, birth_date: Any) -> str | None:
    """"last|first|YYYY-MM-DD", or None when any part is missing."""
    f, l_, d = norm_name(first), norm_name(last), norm_date(birth_date)
    if not (f and l_ and d):
        return None
    return f"{l_}|{f}|{d}"


def fill_missing_keys(org_id: int, chunk: int = 2000) -> int:
    """Give every student of the district without a ``match_key`` one, from their latest
    registration's name and birth date (students created before imports existed, or by
    the registration module). Returns how many got one. Runs at the start of an import."""
    done = 0
    last_id = 0
    while True:
        ids = [sid for (sid,) in Student.select(Student.id).where(
            (Student.organization == org_id) & Student.match_key.is_null() & (Student.id > last_id))
            .order_by(Student.id).limit(chunk).tuples()]
        if not ids:
            return done
        last_id = ids[-1]
        answers = latest_answers(ids, ("student_legal_first_name", "student_legal_last_name", "birth_date"))
        rows = []
        for sid in ids:
            a = answers.get(sid) or {}
            key = match_key(a.get("student_legal_first_name"), a.get("student_legal_last_name"), a.get("birth_date"))
            rows.append((key or "", sid))  # "" = looked, nothing to match on (not looked again)
        with write_tx():
            executemany(f'UPDATE {table(Student)} SET "match_key"=? WHERE "id"=?', rows)
        done += sum(1 for key, _ in rows if key)


def latest_answers(student_ids: Iterable[int], keys: Iterable[str] | None = None) -> dict[int, dict]:
    """student id -> the answers of their latest registration (only ``keys`` when given)."""
    ids = list(set(student_ids))
    out: dict[int, dict] = {}
    wanted = None if keys is None else tuple(keys)
    for start in range(0, len(ids), 900):
        part = ids[start:start + 900]
        newest = (Registration.select(fn.MAX(Registration.id)).where(Registration.student.in_(part))
                  .group_by(Registration.student))
        rows = (Registration.select(Registration.student, Registration.answers)
                .where(Registration.id.in_(newest)).tuples())
        for sid, answers in rows:
            answers = answers or {}
            out[sid] = dict(answers) if wanted is None else {k: answers[k] for k in wanted if k in answers}
    return out


def _chunks(values: list, n: int = 900):
    for start in range(0, len(values), n):
        yield values[start:start + n]


def _select_in(sql: str, values, *params) -> list[tuple]:
    """Rows of ``sql`` for every chunk of ``values``: ``sql`` has ``?`` placeholders for
    ``params`` first, then ``(IN)`` where the chunk's placeholders go. Plain SQL: a page
    makes a few of these with hundreds of values each, and building them through the ORM
    costs more than running them."""
    values = list(values)
    out: list[tuple] = []
    ph = "?" if is_sqlite() else "%s"
    for part in _chunks(values):
        text = sql.replace("(IN)", "(" + ", ".join("?" * len(part)) + ")")
        if ph != "?":
            text = text.replace("?", ph)
        out.extend(database.execute_sql(text, (*params, *part)).fetchall())
    return out


class PageIndex:
    """What one page of SIS students needs to know about Enroll, read in a few queries:
    links of this connection by SIS id, students by SchoolMint ID and by match key, and
    the links and profiles of every student found."""

    def __init__(self, org_id: int, scope: int, sis_ids: list[str], schoolmint_ids: list[str],
                 keys: list[str]):
        self.org_id, self.scope = org_id, scope
        L, S, P = table(SisLink), table(Student), table(StudentProfile)
        #: SIS id -> student id (this connection's links)
        self.by_link: dict[str, int] = {sis: sid for sid, sis in _select_in(
            f'SELECT "student_id", "sis_id" FROM {L} WHERE "connection_id" = ? AND "sis_id" IN (IN)',
            set(sis_ids), scope)}
        self.by_schoolmint: dict[str, int] = dict(_select_in(
            f'SELECT "schoolmint_id", "id" FROM {S} WHERE "organization_id" = ? AND "schoolmint_id" IN (IN)',
            {s for s in schoolmint_ids if s}, org_id))
        self.by_key: dict[str, list[int]] = {}
        for sid, key in sorted(_select_in(
                f'SELECT "id", "match_key" FROM {S} WHERE "organization_id" = ? AND "match_key" IN (IN)',
                {k for k in keys if k}, org_id)):
            self.by_key.setdefault(key, []).append(sid)
        found = set(self.by_link.values()) | set(self.by_schoolmint.values()) | {
            s for ids in self.by_key.values() for s in ids}
        #: student id -> the SIS id it is linked to on this connection
        self.link_of: dict[int, str] = dict(_select_in(
            f'SELECT "student_id", "sis_id" FROM {L} WHERE "connection_id" = ? AND "student_id" IN (IN)',
            found, scope)) if found else {}
        self.profile_of: dict[int, tuple[int, dict]] = {}
        self.student_of: dict[int, tuple[str, str, str]] = {}
        if found:
            for pid, sid, values in _select_in(
                    f'SELECT "id", "student_id", "values" FROM {P} WHERE "connection_id" = ? AND "student_id" IN (IN)',
                    found, scope):
                self.profile_of[sid] = (pid, StudentProfile.values.python_value(values)
                                        if isinstance(values, str) else (values or {}))
            for sid, sm, first, last in _select_in(
                    f'SELECT "id", "schoolmint_id", "first_name", "last_name" FROM {S} WHERE "id" IN (IN)', found):
                self.student_of[sid] = (sm, first, last)
        without = [s for s in found if s not in self.profile_of]
        #: the latest registration answers of found students that have no profile yet
        self.answers_of = latest_answers(without) if without else {}

    def describe(self, student_id: int) -> str:
        sm, first, last = self.student_of.get(student_id, ("?", "", ""))
        name = f"{first} {last}".strip() or "(no name)"
        return f"{name} (SchoolMint ID {sm})"


__all__ = ["norm_name", "norm_date", "match_key", "fill_missing_keys", "latest_answers", "PageIndex"]
