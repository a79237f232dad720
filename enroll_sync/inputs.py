"""Input rules at the edge: what text and numbers typed, posted or imported by people
must satisfy before they reach the database. One place, used by every form, query
string and CSV cell, so a bad value is a clear message and never a database error.

- **No NUL bytes**, anywhere. PostgreSQL text cannot hold them (the driver refuses
  the whole statement), SQLite would keep them silently; neither is wanted.
  ``web.inputs`` refuses a request carrying one before any view runs.
- **Text has a declared maximum**: the length of the column it is kept in
  (``limit_of(Model.field)``: a ``CharField`` is ``varchar(255)`` unless it says
  otherwise), or for text kept in a ``TEXT``/JSON column the limit declared here.
  PostgreSQL refuses a longer value; SQLite would store it.
- **Whole numbers fit the integer column** they are compared with or stored in
  (PostgreSQL ``integer``: ``MAX_INT``).
"""
from __future__ import annotations

from typing import Any, Iterable

from peewee import CharField, Field

#: the largest value an ``integer`` column holds (PostgreSQL); ids, form ids, counts
MAX_INT = 2**31 - 1
NUL = "\x00"

#: what peewee gives a CharField without ``max_length`` (the database's varchar size)
DEFAULT_CHAR_LIMIT = 255
#: an email address (RFC 5321: 254 characters in a path)
EMAIL_MAX = 254
#: a password typed at sign-in or given to a new user (hashing longer text only costs time)
PASSWORD_MAX = 1024
#: one answer of a registration (kept in the ``answers`` JSON, a TEXT column)
ANSWER_MAX = 4000
#: a one-line connection setting (URLs, ids, secrets; kept in JSON TEXT)
SETTING_MAX = 2048
#: a multi-line connection setting (an OpenAPI document pasted or uploaded)
SETTING_TEXT_MAX = 5 * 1024 * 1024
#: any one value of a query string (filters are cut much shorter by their own rules)
QUERY_VALUE_MAX = 2000


class InputError(ValueError):
    """A value breaks an input rule; ``message`` says which, in words for people."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def limit_of(field: Field) -> int:
    """The most characters the database column behind ``field`` holds."""
    if isinstance(field, CharField):
        return int(field.max_length or DEFAULT_CHAR_LIMIT)
    raise TypeError(f"{field!r} has no length limit in the database; declare one in enroll_sync.inputs")


def has_nul(value: Any) -> bool:
    return isinstance(value, str) and NUL in value


def nul_message(label: str | None = None) -> str:
    where = f"{label} contains" if label else "The form or address contains"
    return (f"{where} a NUL character (\\0), which Enroll Sync does not accept. Remove it (it usually comes "
            f"from copying out of another program) and try again.")


def too_long_message(label: str, limit: int) -> str:
    return f"{label} is too long: use at most {limit:,} characters."


def text_problem(value: Any, limit: int, label: str) -> str | None:
    """Why ``value`` may not be kept in a text field of ``limit`` characters, or None."""
    if value is None:
        return None
    text = str(value)
    if NUL in text:
        return nul_message(label)
    if len(text) > limit:
        return too_long_message(label, limit)
    return None


def field_problem(errors: dict, key: str, value: Any, limit: int, label: str) -> bool:
    """Put why ``value`` may not be kept (if it may not) in ``errors[key]``, the message a
    form shows at the field; True when it did."""
    problem = text_problem(value, limit, label)
    if problem:
        errors[key] = problem
    return problem is not None


def check_text(value: Any, limit: int, label: str) -> str:
    """``value`` as text, or InputError."""
    problem = text_problem(value, limit, label)
    if problem:
        raise InputError(problem)
    return "" if value is None else str(value)


def whole_number(value: Any, label: str, *, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """``value`` (ASCII digits, an optional sign, surrounding spaces) as an int within
    [minimum, maximum], or InputError. ``int()`` alone accepts "²", "1_000" and numbers
    no column holds."""
    text = str(value if value is not None else "").strip()
    body = text[1:] if text[:1] in "+-" else text
    if not body or len(body) > 19 or not (body.isascii() and body.isdigit()):
        raise InputError(f"{label} must be a whole number.")
    number = int(text)
    if number < minimum:
        raise InputError(f"{label} must be at least {minimum:,}.")
    if number > maximum:
        raise InputError(f"{label} must be at most {maximum:,}.")
    return number


def first_problem(pairs: Iterable[tuple[str, Any]], limit: int | None = None) -> str | None:
    """The first NUL (or, with ``limit``, over-long value) among (name, value) pairs,
    as a message naming the field; None when all are acceptable."""
    for name, value in pairs:
        if has_nul(name) or has_nul(value):
            return nul_message(f"The field “{_shown(name)}”")
        if limit is not None and isinstance(value, str) and len(value) > limit:
            return too_long_message(f"The field “{_shown(name)}”", limit)
    return None


def _shown(name: str) -> str:
    name = str(name).replace(NUL, "\\0")
    return name if len(name) <= 60 else name[:57] + "..."
