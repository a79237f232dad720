"""Reading ids typed or posted by people: a URL segment, a form value, a search term.

``int()`` accepts too much ("²", "١٢", " 7 ", "1_000") and nothing stops a number too
large for the database's integer columns (PostgreSQL's are 32-bit), which would turn
a mistyped URL into a 500. Every id that comes from a request goes through here.
"""
from __future__ import annotations

from typing import Any

#: the largest id a database column of ours holds (PostgreSQL ``integer``)
MAX_ID = 2**31 - 1


def parse_id(value: Any) -> int | None:
    """The id ``value`` spells in ASCII digits (surrounding spaces allowed), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_ID else None
    text = str(value if value is not None else "").strip()
    if not text or len(text) > 10 or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= MAX_ID else None


def parse_ids(values) -> list[int] | None:
    """Every id in ``values``, or None when any of them is not one."""
    out = []
    for v in values:
        n = parse_id(v)
        if n is None:
            return None
        out.append(n)
    return out
