"""No secret reaches a log line.

The web layer and the sync jobs already cut a connection's secrets out of what they
show and store, but a log line can come from anywhere: an adapter's traceback, httpx
logging a URL with an API key in its query, a third-party library. So every log
record made in this process is scrubbed as it is created: each secret this process
has decrypted (``remember``) and any ``Bearer``/``Basic`` credential are replaced with
``[redacted]`` in the message and in the traceback text.
"""
from __future__ import annotations

import logging
import threading
import traceback
from typing import Iterable

from .transport import redact

_secrets: frozenset[str] = frozenset()
_lock = threading.Lock()
_installed = False


def remember(values: Iterable) -> None:
    """Secrets to cut out of every later log record (called when secrets are decrypted)."""
    global _secrets
    new = {str(v) for v in values if v is not None and len(str(v)) >= 3}
    if new - _secrets:
        with _lock:
            _secrets = _secrets | new


def _needs_scrub(text: str, secrets: frozenset[str]) -> bool:
    return "Bearer " in text or "Basic " in text or any(s in text for s in secrets)


def install() -> None:
    """Wrap the log record factory once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args, **kwargs):
            record = previous(*args, **kwargs)
            secrets = _secrets
            try:
                message = record.getMessage()
            except Exception:  # a bad format string is logging's own problem to report
                return record
            if _needs_scrub(message, secrets):
                record.msg, record.args = redact(message, secrets), ()
            if record.exc_info and record.exc_info[1] is not None:
                text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
                if _needs_scrub(text, secrets):
                    record.exc_text = redact(text, secrets)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
