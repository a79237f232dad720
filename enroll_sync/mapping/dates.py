"""Friendly date patterns (MM/DD/YYYY, Month D, YYYY ...) compiled to parsers and formatters.

Admins pick patterns, not strftime codes. Tokens: ``YYYY`` four-digit year, ``YY``
two-digit year, ``MM``/``DD`` zero-padded month/day, ``M``/``D`` unpadded,
``Month`` full English month name, ``Mon`` three-letter name. Anything else is a
literal separator. Parsing is lenient about padding (MM accepts 9 and 09) and
surrounding spaces, and accepts a trailing ISO time ("2007-09-01T00:00:00").
"""
from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any, Callable

__all__ = ["DATE_FORMATS", "AUTO", "compile_parser", "compile_formatter", "parse_auto",
           "two_digit_year", "MONTHS"]

AUTO = "auto"

#: (pattern, label) offered in the Date step; the first is the ISO default
DATE_FORMATS: tuple[tuple[str, str], ...] = (
    ("YYYY-MM-DD", "YYYY-MM-DD (2007-09-01)"),
    ("MM/DD/YYYY", "MM/DD/YYYY (09/01/2007)"),
    ("M/D/YYYY", "M/D/YYYY (9/1/2007)"),
    ("MM/DD/YY", "MM/DD/YY (09/01/07)"),
    ("MM-DD-YYYY", "MM-DD-YYYY (09-01-2007)"),
    ("DD/MM/YYYY", "DD/MM/YYYY (01/09/2007)"),
    ("DD.MM.YYYY", "DD.MM.YYYY (01.09.2007)"),
    ("YYYY/MM/DD", "YYYY/MM/DD (2007/09/01)"),
    ("YYYYMMDD", "YYYYMMDD (20070901)"),
    ("Month D, YYYY", "Month D, YYYY (September 1, 2007)"),
    ("Mon D, YYYY", "Mon D, YYYY (Sep 1, 2007)"),
    ("D Month YYYY", "D Month YYYY (1 September 2007)"),
)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
_MONTH_NUMBER = {}
for _i, _name in enumerate(MONTHS, 1):
    _MONTH_NUMBER[_name.lower()] = _i
    _MONTH_NUMBER[_name[:3].lower()] = _i
_MONTH_NUMBER["sept"] = 9

_TOKEN = re.compile(r"YYYY|YY|Month|Mon|MM|M|DD|D")
_TIME_SUFFIX = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[AaPp][Mm])?(?:Z|[+-]\d{2}:?\d{2})?)?"


def two_digit_year(yy: int, today: date) -> int:
    """20yy unless that is more than 10 years in the future, then 19yy."""
    year = 2000 + yy
    return year if year <= today.year + 10 else year - 100


def _tokens(pattern: str) -> list[tuple[bool, str]]:
    out, pos = [], 0
    for m in _TOKEN.finditer(pattern):
        if m.start() > pos:
            out.append((False, pattern[pos:m.start()]))
        out.append((True, m.group(0)))
        pos = m.end()
    if pos < len(pattern):
        out.append((False, pattern[pos:]))
    return out


def _check_pattern(pattern: str) -> list[tuple[bool, str]]:
    toks = _tokens(pattern)
    names = [t for is_tok, t in toks if is_tok]
    years = [t for t in names if t in ("YYYY", "YY")]
    months = [t for t in names if t in ("MM", "M", "Month", "Mon")]
    days = [t for t in names if t in ("DD", "D")]
    if len(years) != 1 or len(months) != 1 or len(days) != 1:
        raise ValueError(f"{pattern!r} needs exactly one year, one month and one day "
                         "(YYYY, MM, DD, Month ...)")
    return toks


def compile_parser(pattern: str) -> Callable[[str, date], date]:
    """A function (text, today) -> date for ``pattern``; raises ValueError when it does not fit."""
    toks = _check_pattern(pattern)
    has_separators = any(not is_tok for is_tok, _ in toks)
    regex, order = [r"^\s*"], []
    for is_tok, t in toks:
        if not is_tok:
            # one space in the pattern matches any run of spaces; "," is optional
            lit = re.escape(t.strip())
            if t.strip() == ",":
                regex.append(r"\s*,?\s*")
            elif t.strip() == "":
                regex.append(r"\s+")
            else:
                regex.append(r"\s*" + lit + r"\s*")
            continue
        order.append(t)
        if t == "YYYY":
            regex.append(r"(\d{4})")
        elif t == "YY":
            regex.append(r"(\d{2})")
        elif t in ("Month", "Mon"):
            regex.append(r"([A-Za-z]{3,9})\.?")
        else:  # MM, M, DD, D
            regex.append(r"(\d{1,2})" if has_separators else r"(\d{2})")
    regex.append(_TIME_SUFFIX + r"\s*$")
    rx = re.compile("".join(regex))
    match = rx.match
    iy = next(i for i, t in enumerate(order) if t in ("YYYY", "YY"))
    im = next(i for i, t in enumerate(order) if t in ("MM", "M", "Month", "Mon"))
    iday = next(i for i, t in enumerate(order) if t in ("DD", "D"))
    short_year = order[iy] == "YY"
    named_month = order[im] in ("Month", "Mon")
    month_number = _MONTH_NUMBER
    # Fast path: three numeric tokens and one repeated one-character separator.
    fast_sep, widths = None, ()
    seps = {t for is_tok, t in toks if not is_tok}
    if (not named_month and len(toks) == 5 and len(seps) == 1 and len(next(iter(seps))) == 1
            and not next(iter(seps)).isspace()):
        fast_sep = next(iter(seps))
        widths = tuple((4,) if t == "YYYY" else (2,) if t == "YY" else (1, 2) for t in order)

    def parse(text: str, today: date) -> date:
        if fast_sep is not None:  # e.g. MM/DD/YYYY: a split beats the regex
            parts = text.split(fast_sep)
            if len(parts) == 3:
                a, b, c = parts
                if (a.isdigit() and b.isdigit() and c.isdigit() and len(a) in widths[0]
                        and len(b) in widths[1] and len(c) in widths[2]):
                    g = (a, b, c)
                    y = int(g[iy])
                    if short_year:
                        y = two_digit_year(y, today)
                    return date(y, int(g[im]), int(g[iday]))
        m = match(text)
        if m is None:
            raise ValueError(f"does not look like {pattern}")
        g = m.groups()
        y = int(g[iy])
        if short_year:
            y = two_digit_year(y, today)
        if named_month:
            mo = month_number.get(g[im].lower())
            if mo is None:
                raise ValueError(f"{g[im]!r} is not a month name")
        else:
            mo = int(g[im])
        return date(y, mo, int(g[iday]))  # ValueError for 02/30

    return parse


def compile_formatter(pattern: str) -> Callable[[date], str]:
    """A function date -> text for ``pattern``."""
    toks = _check_pattern(pattern)
    if pattern == "YYYY-MM-DD":
        return date.isoformat
    parts: list[Callable[[date], str] | str] = []
    for is_tok, t in toks:
        if not is_tok:
            parts.append(t)
        elif t == "YYYY":
            parts.append(lambda d: f"{d.year:04d}")
        elif t == "YY":
            parts.append(lambda d: f"{d.year % 100:02d}")
        elif t == "MM":
            parts.append(lambda d: f"{d.month:02d}")
        elif t == "M":
            parts.append(lambda d: str(d.month))
        elif t == "DD":
            parts.append(lambda d: f"{d.day:02d}")
        elif t == "D":
            parts.append(lambda d: str(d.day))
        elif t == "Month":
            parts.append(lambda d: MONTHS[d.month - 1])
        elif t == "Mon":
            parts.append(lambda d: MONTHS[d.month - 1][:3])
    frozen = tuple(parts)

    def fmt(d: date) -> str:
        return "".join(p if p.__class__ is str else p(d) for p in frozen)

    return fmt


# ----------------------------------------------------------------------------- auto-detect

_AUTO_ISO = re.compile(r"^\s*(\d{4})[-/](\d{1,2})[-/](\d{1,2})" + _TIME_SUFFIX + r"\s*$")
_AUTO_NUM = re.compile(r"^\s*(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})" + _TIME_SUFFIX + r"\s*$")
_AUTO_COMPACT = re.compile(r"^\s*(\d{4})(\d{2})(\d{2})\s*$")
_AUTO_MDY_NAME = re.compile(r"^\s*([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?\s*,?\s*(\d{4})\s*$")
_AUTO_DMY_NAME = re.compile(r"^\s*(\d{1,2})(?:st|nd|rd|th)?\s+([A-Za-z]{3,9})\.?\s*,?\s*(\d{4})\s*$")


def parse_auto(text: str, today: date) -> date:
    """Recognise the usual ways a date is typed.

    ISO (2007-09-01, 2007/09/01), 20070901, names (September 1, 2007; 1 Sep 2007),
    and numbers with / or - read month first as in the US (09/01/2007 is September
    1) unless the first number is above 12, then day first; with dots (01.09.2007)
    day first. Two-digit years: see ``two_digit_year``.
    """
    m = _AUTO_ISO.match(text)
    if m:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _AUTO_NUM.match(text)
    if m:
        a, sep, b, y = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        year = int(y) if len(y) == 4 else two_digit_year(int(y), today)
        if sep == "." or a > 12:
            return date(year, b, a)
        return date(year, a, b)
    m = _AUTO_COMPACT.match(text)
    if m:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = _AUTO_MDY_NAME.match(text)
    if m:
        mo = _MONTH_NUMBER.get(m.group(1).lower())
        if mo:
            return date(int(m.group(3)), mo, int(m.group(2)))
    m = _AUTO_DMY_NAME.match(text)
    if m:
        mo = _MONTH_NUMBER.get(m.group(2).lower())
        if mo:
            return date(int(m.group(3)), mo, int(m.group(1)))
    raise ValueError("is not a date this step recognises")


def as_date(value: Any) -> date | None:
    """A date for date/datetime objects, else None."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return None
