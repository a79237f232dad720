"""Scrub secrets and tokens out of what a sync stores and shows.

The payload sent and the SIS's answer are kept in each registration's history. The
adapter should never put a secret in them, but a history page is not the place to
find out it did: values of secret-looking keys are replaced, every known secret of
the connection is cut out of every string, and so is any ``Bearer``/``Basic``
credential (``transport.redact``).
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Iterable

import orjson

from ..transport import REDACTED, redact

SENSITIVE_KEY = re.compile(r"secret|password|passwd|token|authorization|api[_-]?key|credential|cookie",
                           re.IGNORECASE)


def scrub(value: Any, secrets: Iterable[str] = (), *, keys: bool = True) -> Any:
    """A copy of ``value`` (JSON-like) with secrets and tokens replaced by ``[redacted]``.

    ``keys=False`` leaves values of secret-looking keys alone: a preview must show every
    field exactly as it will be sent (a SIS may have a ``web_password`` field), and only
    the connection's own secrets and credentials are cut out of it."""
    secrets = [s for s in secrets if s]
    return _scrub(value, secrets, keys)


def _scrub(value: Any, secrets: list[str], keys: bool = True) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if keys and isinstance(k, str) and SENSITIVE_KEY.search(k) and v not in (None, ""):
                out[k] = REDACTED
            else:
                out[k] = _scrub(v, secrets, keys)
        return out
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets, keys) for v in value]
    if isinstance(value, str):
        return redact(value, secrets) if (secrets or "Bearer " in value or "Basic " in value) else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value), secrets)


def scrub_text(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    if text is None:
        return None
    return redact(str(text), [s for s in secrets if s])


#: words whose presence anywhere in the JSON text sends it down the careful path
_SENSITIVE_WORDS = ("secret", "password", "passwd", "token", "authorization", "apikey", "api_key", "api-key",
                    "credential", "cookie", "bearer ", "basic ")


def _dumps(value: Any) -> str:
    """Compact JSON text. orjson is several times faster than json here (a sync stores
    two documents per record); json takes over for what orjson refuses (an integer
    beyond 64 bits, a key that is not a string)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


@functools.lru_cache(maxsize=256)
def _needles(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Each secret as it may appear in JSON text: as is, and JSON-escaped."""
    out = []
    for s in secrets:
        out.append(s)
        escaped = json.dumps(s, ensure_ascii=False)[1:-1]
        if escaped != s:
            out.append(escaped)
    return tuple(out)


def dumps_scrubbed(value: Any, secrets: Iterable[str] = ()) -> str | None:
    """``scrub(value)`` as compact JSON text, fast when there is nothing to scrub.

    A sync stores a payload and an answer per record; walking each of them is the
    slow way, so the JSON text is searched first and walked only when a secret, a
    credential or a secret-looking key appears in it."""
    if value is None:
        return None
    text = _dumps(value)
    secrets = tuple(str(s) for s in secrets if s and len(str(s)) >= 3)
    lowered = text.lower()
    suspicious = any(w in lowered for w in _SENSITIVE_WORDS) or any(n in text for n in _needles(secrets))
    return _dumps(_scrub(value, list(secrets))) if suspicious else text
