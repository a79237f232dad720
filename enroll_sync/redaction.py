"""The one place that cuts secrets out of values, payloads and log records.

A connection's secrets are encrypted at rest and never rendered; but they, and the
credentials made from them, can still come back inside text the SIS sends (an
error that echoes the request's headers), inside an adapter's exception, or in a
log line from a library. Everything Enroll Sync stores, shows or logs goes through
here first:

- ``redact(text, secrets)``: every form of each secret is replaced by ``[redacted]``
  — as typed, JSON-escaped, URL-encoded and base64-encoded — and so is every
  credential this process has used (``remember_credential``: bearer tokens, the
  base64 of ``client_id:client_secret`` a Basic header carries) and the value after
  any ``Bearer``/``Basic`` marker;
- ``scrub(value, secrets)``: the same through a JSON-like value, plus the values of
  keys that look secret (``password``, ``token`` ...);
- ``dumps_scrubbed``: ``scrub`` as compact JSON text, fast when there is nothing
  to cut (a sync stores two documents per record);
- ``install_log_redaction()``: every log record of the process is scrubbed as it is
  made, of each secret decrypted so far (``remember``) and each credential used;
- ``log_unexpected``: how a bug in an adapter is logged (traceback, redacted).
"""
from __future__ import annotations

import base64
import collections
import functools
import json
import logging
import re
import threading
import traceback
import urllib.parse
from typing import Any, Iterable

import orjson

__all__ = ["REDACTED", "redact", "scrub", "scrub_text", "dumps_scrubbed", "remember", "remember_credential",
           "install_log_redaction", "log_unexpected", "secret_forms"]

REDACTED = "[redacted]"
#: shorter values are not cut out (they would cut ordinary words)
MIN_SECRET = 3
SENSITIVE_KEY = re.compile(r"secret|password|passwd|token|authorization|api[_-]?key|credential|cookie",
                           re.IGNORECASE)
#: words whose presence anywhere in a JSON text sends it down the careful path
_SENSITIVE_WORDS = ("secret", "password", "passwd", "token", "authorization", "apikey", "api_key", "api-key",
                    "credential", "cookie", "bearer ", "basic ")
_MARKERS = ("Bearer ", "Basic ")

# --------------------------------------------------------------------------- what this process knows

_lock = threading.Lock()
#: secrets decrypted in this process (cut out of log records)
_secrets: frozenset[str] = frozenset()
#: credentials used on the wire (tokens, Basic values): the newest few hundred
_credentials: "collections.OrderedDict[str, None]" = collections.OrderedDict()
_MAX_CREDENTIALS = 256
_generation = 0


def remember(values: Iterable) -> None:
    """Secrets to cut out of every later log record (called when secrets are decrypted)."""
    global _secrets, _generation
    new = {str(v) for v in values if v is not None and len(str(v)) >= MIN_SECRET}
    if new - _secrets:
        with _lock:
            _secrets = _secrets | new
            _generation += 1


def remember_credential(value: str | None) -> None:
    """A credential put on the wire (a bearer token, a Basic value): cut out of
    everything stored, shown or logged from now on, even where no secret list is given."""
    global _generation
    if not value or len(value) < MIN_SECRET:
        return
    with _lock:
        if value in _credentials:
            _credentials.move_to_end(value)
            return
        _credentials[value] = None
        while len(_credentials) > _MAX_CREDENTIALS:
            _credentials.popitem(last=False)
        _generation += 1


def _known() -> tuple[int, tuple[str, ...]]:
    with _lock:
        return _generation, tuple(_credentials)


# --------------------------------------------------------------------------- forms of a secret

def secret_forms(secret: str) -> set[str]:
    """``secret`` as it may appear in text: as is, JSON-escaped, URL-encoded, base64."""
    s = str(secret)
    if len(s) < MIN_SECRET:
        return set()
    forms = {s, json.dumps(s, ensure_ascii=False)[1:-1], json.dumps(s)[1:-1],
             urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)}
    raw = s.encode()
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = enc.decode()
        forms.add(text)
        forms.add(text.rstrip("="))
    return {f for f in forms if len(f) >= MIN_SECRET}


@functools.lru_cache(maxsize=512)
def _pattern(secrets: tuple[str, ...], generation: int) -> re.Pattern | None:
    """One regular expression for every form of ``secrets`` and every known credential
    (longest first, so a secret inside a longer one never leaves a tail)."""
    _, credentials = _known()
    needles: set[str] = set()
    for s in secrets:
        needles |= secret_forms(s)
    for c in credentials:
        needles |= secret_forms(c)
    if not needles:
        return None
    return re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))


def _clean(secrets: Iterable) -> tuple[str, ...]:
    return tuple(sorted({str(s) for s in secrets if s is not None and len(str(s)) >= MIN_SECRET}))


def redact(text: Any, secrets: Iterable[str] = ()) -> str:
    """``text`` with every form of each secret, every known credential and any value
    after ``Bearer ``/``Basic `` replaced by ``[redacted]``."""
    text = str(text)
    generation, _ = _known()
    pattern = _pattern(_clean(secrets), generation)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for marker in _MARKERS:  # never echo an Authorization header value
        start = text.find(marker)
        while start != -1:
            end = start + len(marker)
            stop = end
            while stop < len(text) and not text[stop].isspace() and text[stop] not in "\"',;}":
                stop += 1
            if stop > end and text[end:stop] != REDACTED:
                text = text[:end] + REDACTED + text[stop:]
            start = text.find(marker, end)
    return text


def _needs_redaction(text: str, secrets: tuple[str, ...]) -> bool:
    if "Bearer " in text or "Basic " in text:
        return True
    generation, _ = _known()
    pattern = _pattern(secrets, generation)
    return pattern is not None and pattern.search(text) is not None


# --------------------------------------------------------------------------- values and payloads

def scrub(value: Any, secrets: Iterable[str] = (), *, keys: bool = True) -> Any:
    """A copy of ``value`` (JSON-like) with secrets and credentials replaced by ``[redacted]``.

    ``keys=False`` leaves values of secret-looking keys alone: a preview must show every
    field exactly as it will be sent (a SIS may have a ``web_password`` field), and only
    the connection's own secrets and credentials are cut out of it."""
    return _scrub(value, _clean(secrets), keys)


def _scrub(value: Any, secrets: tuple[str, ...], keys: bool) -> Any:
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
        return redact(value, secrets) if _needs_redaction(value, secrets) else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(str(value), secrets)


def scrub_text(text: str | None, secrets: Iterable[str] = ()) -> str | None:
    return None if text is None else redact(text, secrets)


def _dumps(value: Any) -> str:
    """Compact JSON text. orjson is several times faster than json here; json takes
    over for what orjson refuses (an integer beyond 64 bits, a key that is not a string)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)


def dumps_scrubbed(value: Any, secrets: Iterable[str] = ()) -> str | None:
    """``scrub(value)`` as compact JSON text, fast when there is nothing to scrub: the
    JSON text is searched first and walked only when a secret, a credential or a
    secret-looking key appears in it."""
    if value is None:
        return None
    text = _dumps(value)
    clean = _clean(secrets)
    lowered = text.lower()
    if any(w in lowered for w in _SENSITIVE_WORDS) or _needs_redaction(text, clean):
        return _dumps(_scrub(value, clean, True))
    return text


# --------------------------------------------------------------------------- log records

_installed = False


def install_log_redaction() -> None:
    """Wrap the log record factory once per process: the message and the traceback
    text of every record are scrubbed of remembered secrets and credentials."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            record = previous(*args, **kwargs)
            secrets = tuple(_secrets)
            try:
                message = record.getMessage()
            except Exception:  # a bad format string is logging's own problem to report
                return record
            if _needs_redaction(message, secrets):
                record.msg, record.args = redact(message, secrets), ()
            if record.exc_info and record.exc_info[1] is not None:
                text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                if _needs_redaction(text, secrets):
                    record.exc_text = redact(text, secrets)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def log_unexpected(logger: logging.Logger, what: str, conn, exc: BaseException, secrets: Iterable[str] = ()) -> None:
    """Log a bug met while talking to ``conn``'s SIS: what was being done, the
    connection, and the traceback with every secret cut out."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    logger.error("%s through connection %s (%s) failed unexpectedly:\n%s", what, getattr(conn, "id", "?"),
                 getattr(conn, "adapter", "?"), redact(text, secrets))
