"""What a mapping run knows besides the registration's answers.

``MappingContext`` is made once per run (a preview, a test record, a bulk batch) by
the caller. The engine wraps it, per record, in a ``StepContext`` that steps receive
as ``ctx``: the record's flat source values plus ``today``, ``school_year`` and
``insert``, and ``ctx.warn()`` for a step that wants to flag something without
failing the record.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Mapping

__all__ = ["MappingContext", "StepContext", "is_blank", "school_year_for", "parse_school_year"]

#: the source key holding the registration's school year ("2026-2027")
SCHOOL_YEAR_KEY = "registration.school_year"


def is_blank(value: Any) -> bool:
    """None, "", a whitespace-only string or an empty list/tuple: nothing to send."""
    if value is None:
        return True
    if value.__class__ is str:
        return not value or value.isspace()
    if isinstance(value, (list, tuple)):
        return not value
    return False


def school_year_for(day: date) -> str:
    """The school year ``day`` falls in, assuming years start on July 1 ("2026-2027")."""
    start = day.year if day.month >= 7 else day.year - 1
    return f"{start}-{start + 1}"


_SY_RANGE = re.compile(r"^\s*(\d{4})\s*[-/\u2013]\s*(\d{2}|\d{4})\s*$")
_SY_SINGLE = re.compile(r"^\s*(\d{4})\s*$")


def parse_school_year(text: Any) -> int | None:
    """The start year of a school year written "2026-2027", "2026-27", "2026/27" or "2026".

    A lone year is taken as the start year. Returns None when it does not parse.
    """
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        return text if 1900 <= text <= 2999 else None
    s = str(text)
    m = _SY_RANGE.match(s)
    if m:
        start = int(m.group(1))
        end = m.group(2)
        end_year = int(end) if len(end) == 4 else (start // 100) * 100 + int(end)
        if end_year == start + 1 or (len(end) == 2 and end_year + 100 == start + 1):
            return start
        return None
    m = _SY_SINGLE.match(s)
    if m:
        return int(m.group(1))
    return None


@dataclass(frozen=True)
class MappingContext:
    """Settings of one mapping run.

    ``today``: the date Today and two-digit-year pivots use (pass it for
    reproducible previews and tests). ``school_year``: used when a record carries
    no ``registration.school_year``; defaults to the school year ``today`` is in.
    ``insert``: True when the record will create a new SIS student (required
    fields are errors), False for an update (required fields are not checked and
    insert-only fields are dropped), None when unknown, e.g. in the Mapped Value
    preview (required fields left blank are warnings).
    ``extra``: anything a plugin step needs from the caller (read-only).
    """

    today: date = field(default_factory=date.today)
    school_year: str | None = None
    insert: bool | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def default_school_year(self) -> str:
        return self.school_year or school_year_for(self.today)


class StepContext:
    """The ``ctx`` a step's ``apply(value, ctx)`` receives; one per record.

    ``source``: the record's flat source values (answers keyed by catalog key plus
    ``registration.*``, ``school.*``, ``student.*``). ``get(key)`` reads one.
    ``today``, ``insert``, ``extra``: from the MappingContext. ``school_year``: the
    registration's school year, else the context's. ``warn(message)``: report a
    warning on the row being mapped (e.g. a Match Codes step that used its
    fallback); the value is still sent.
    """

    __slots__ = ("source", "today", "insert", "mapping", "warnings")

    def __init__(self, source: Mapping[str, Any], mapping: MappingContext):
        self.source = source
        self.mapping = mapping
        self.today = mapping.today
        self.insert = mapping.insert
        self.warnings = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.source.get(key, default)

    @property
    def school_year(self) -> str:
        year = self.source.get(SCHOOL_YEAR_KEY)
        if is_blank(year):
            return self.mapping.default_school_year
        return str(year)

    @property
    def extra(self) -> Mapping[str, Any]:
        return self.mapping.extra

    def warn(self, message: str, code: str = "warning") -> None:
        if self.warnings is None:
            self.warnings = []
        self.warnings.append((code, message))
