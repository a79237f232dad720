"""Configuration: ``ENROLL_SYNC_*`` environment variables over embedded defaults.

The defaults need nothing installed: SQLite under ``instance/`` and a huey queue in
another SQLite file, consumed in-process by ``enroll-sync serve``. Setting
``ENROLL_SYNC_DATABASE_URL=postgresql://...`` and ``ENROLL_SYNC_QUEUE_URL=redis://...``
switches to the scale-out path with separate ``enroll-sync worker`` processes.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

PREFIX = "ENROLL_SYNC_"

#: name -> (default, help). ``{instance}`` is replaced by the instance folder.
SETTINGS = {
    "INSTANCE_PATH": ("instance", "Folder for the SQLite files, the secret key and the encryption key."),
    "DATABASE_URL": ("sqlite:///{instance}/enroll_sync.db", "peewee database URL (sqlite:/// or postgresql://)."),
    "QUEUE_URL": ("sqlite:///{instance}/queue.db", "huey queue: sqlite:///path or redis://host:port/db."),
    "SECRET_KEY": (None, "Flask session signing key; generated into the instance folder when unset."),
    "ENCRYPTION_KEY": (None, "Fernet key for connection secrets at rest; generated into the instance folder when unset."),
    "IN_PROCESS_WORKER": ("1", "Run the huey consumer inside `serve` (1) or only in `enroll-sync worker` (0)."),
    "WORKERS": ("2", "Consumer threads for the in-process worker and `enroll-sync worker`."),
    "LOAD_PLUGINS": ("1", "Load adapters installed through the `enroll_sync` entry-point group (0 disables)."),
    "LOGIN_MAX_ATTEMPTS": ("5", "Failed sign-ins allowed per account (email) in the window before refusal."),
    "LOGIN_MAX_ATTEMPTS_PER_ADDRESS": ("50", "Failed sign-ins allowed per client address in the window (a school "
                                             "network often shares one address)."),
    "LOGIN_WINDOW_SECONDS": ("300", "The sign-in rate-limit window."),
    "SECURE_COOKIES": ("0", "Mark the session cookie Secure (set 1 behind HTTPS)."),
    "TRUSTED_PROXIES": ("0", "How many reverse proxies stand in front of `serve` (0: none). Only then are "
                             "X-Forwarded-For/-Proto/-Host believed, and only that many hops of them."),
    "WEB_THREADS": ("8", "Request threads of the production web server `enroll-sync serve` runs."),
    "SANDBOX_POWERSCHOOL_URL": ("http://127.0.0.1:5001", "Where the demo PowerSchool sandbox listens (demo data)."),
    # Sync job tuning (JobSettings below)
    "JOB_TASKS": ("4", "Tasks one sync job is split into, so several workers can share it."),
    "JOB_BATCHES_PER_EXPORT": ("5", "Adapter batches handed to one export() call."),
    "JOB_HEARTBEAT_SECONDS": ("5", "How often a running task proves it is alive (at most a quarter of JOB_STALE_SECONDS)."),
    "JOB_STALE_SECONDS": ("60", "After this long without a heartbeat a task's records are taken back."),
    "JOB_RECOVERY_SECONDS": ("15", "How often workers look for dead tasks."),
    "JOB_POLL_SECONDS": ("0.5", "Wait between tries while another job holds a registration."),
    "JOB_RETRY_ATTEMPTS": ("2", "Times a record the SIS asks to try again later is sent again before it is Failed."),
    "JOB_RETRY_BACKOFF_SECONDS": ("0.5", "First wait before sending such a record again (doubling each time)."),
    "DRY_RUN_MAX": ("20000", "The most registrations one Dry run checks (about 2 s)."),
    "DRY_RUN_SECONDS": ("20", "Time budget of one Dry run in seconds."),
}


def _read_or_create(path: Path, make) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value


def load_config(overrides: dict | None = None, environ=None) -> dict:
    """Build the app config dict. ``overrides`` (tests) win over the environment."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    raw = {}
    for name, (default, _help) in SETTINGS.items():
        raw[name] = overrides.pop(name, environ.get(PREFIX + name, default))
    instance = Path(raw["INSTANCE_PATH"]).resolve()
    raw["INSTANCE_PATH"] = str(instance)
    for name in ("DATABASE_URL", "QUEUE_URL"):
        raw[name] = raw[name].replace("{instance}", str(instance))
    if not raw["SECRET_KEY"]:
        raw["SECRET_KEY"] = _read_or_create(instance / "secret_key", lambda: secrets.token_hex(32))
    if not raw["ENCRYPTION_KEY"]:
        from cryptography.fernet import Fernet
        raw["ENCRYPTION_KEY"] = _read_or_create(instance / "encryption_key", lambda: Fernet.generate_key().decode())
    for name in ("IN_PROCESS_WORKER", "LOAD_PLUGINS", "SECURE_COOKIES"):
        raw[name] = str(raw[name]).lower() in ("1", "true", "yes", "on")
    for name in ("WORKERS", "LOGIN_MAX_ATTEMPTS", "LOGIN_MAX_ATTEMPTS_PER_ADDRESS", "LOGIN_WINDOW_SECONDS",
                 "WEB_THREADS"):
        raw[name] = int(raw[name])
    raw["TRUSTED_PROXIES"] = _number_or_zero("TRUSTED_PROXIES", raw["TRUSTED_PROXIES"])
    for name, cast in NUMBERS.items():
        raw[name] = _number(name, raw[name], cast)
    raw.update(overrides)  # anything else (TESTING, EXTRA_PLUGINS, ...)
    return raw


#: settings that are numbers (> 0), and their type
NUMBERS = {"JOB_TASKS": int, "JOB_BATCHES_PER_EXPORT": int, "JOB_HEARTBEAT_SECONDS": float,
           "JOB_STALE_SECONDS": float, "JOB_RECOVERY_SECONDS": float, "JOB_POLL_SECONDS": float,
           "JOB_RETRY_ATTEMPTS": int, "JOB_RETRY_BACKOFF_SECONDS": float,
           "DRY_RUN_MAX": int, "DRY_RUN_SECONDS": float}


def _number_or_zero(name: str, value) -> int:
    """A count that may be 0 (a bad one is reported in the log and 0 used)."""
    try:
        number = int(str(value).strip() or 0)
        if number < 0:
            raise ValueError(value)
        return number
    except (TypeError, ValueError):
        logging.getLogger("enroll_sync.config").warning("ignoring %s%s=%r (not a whole number 0 or more)",
                                                        PREFIX, name, value)
        return 0


def _number(name: str, value, cast):
    """``value`` as a positive number; a bad one is reported in the log and the default used."""
    default = cast(SETTINGS[name][0])
    try:
        number = cast(value)
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(value)
        return number
    except (TypeError, ValueError):
        if value not in (None, ""):
            logging.getLogger("enroll_sync.config").warning("ignoring %s%s=%r (not a positive number)",
                                                            PREFIX, name, value)
        return default


@dataclass(frozen=True)
class JobSettings:
    """How sync jobs run (docs/configuration.md)."""

    heartbeat: float = 5.0       # JOB_HEARTBEAT_SECONDS
    stale: float = 60.0          # JOB_STALE_SECONDS
    tasks: int = 4               # JOB_TASKS
    recovery: float = 15.0       # JOB_RECOVERY_SECONDS
    poll: float = 0.5            # JOB_POLL_SECONDS
    batches_per_export: int = 5  # JOB_BATCHES_PER_EXPORT
    retry_attempts: int = 2      # JOB_RETRY_ATTEMPTS
    retry_backoff: float = 0.5   # JOB_RETRY_BACKOFF_SECONDS


def job_settings(app) -> JobSettings:
    """The job tuning of ``app`` (read once by ``load_config``); the heartbeat always
    comes well within the stale window."""
    c = app.config
    stale = _number("JOB_STALE_SECONDS", c.get("JOB_STALE_SECONDS"), float)
    return JobSettings(heartbeat=min(_number("JOB_HEARTBEAT_SECONDS", c.get("JOB_HEARTBEAT_SECONDS"), float),
                                     stale / 4),
                       stale=stale, tasks=_number("JOB_TASKS", c.get("JOB_TASKS"), int),
                       recovery=_number("JOB_RECOVERY_SECONDS", c.get("JOB_RECOVERY_SECONDS"), float),
                       poll=_number("JOB_POLL_SECONDS", c.get("JOB_POLL_SECONDS"), float),
                       batches_per_export=_number("JOB_BATCHES_PER_EXPORT", c.get("JOB_BATCHES_PER_EXPORT"), int),
                       retry_attempts=_number("JOB_RETRY_ATTEMPTS", c.get("JOB_RETRY_ATTEMPTS"), int),
                       retry_backoff=_number("JOB_RETRY_BACKOFF_SECONDS", c.get("JOB_RETRY_BACKOFF_SECONDS"), float))


def dry_run_limits(app) -> tuple[int, float]:
    """(most registrations one Dry run checks, its time budget in seconds)."""
    return (_number("DRY_RUN_MAX", app.config.get("DRY_RUN_MAX"), int),
            _number("DRY_RUN_SECONDS", app.config.get("DRY_RUN_SECONDS"), float))
