"""Configuration: ``ENROLL_SYNC_*`` environment variables over embedded defaults.

The defaults need nothing installed: SQLite under ``instance/`` and a huey queue in
another SQLite file, consumed in-process by ``enroll-sync serve``. Setting
``ENROLL_SYNC_DATABASE_URL=postgresql://...`` and ``ENROLL_SYNC_QUEUE_URL=redis://...``
switches to the scale-out path with separate ``enroll-sync worker`` processes.
"""
from __future__ import annotations

import os
import secrets
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
    "LOGIN_MAX_ATTEMPTS": ("5", "Failed sign-ins allowed per email and address in the window before refusal."),
    "LOGIN_WINDOW_SECONDS": ("300", "The sign-in rate-limit window."),
    "SECURE_COOKIES": ("0", "Mark the session cookie Secure (set 1 behind HTTPS)."),
    "SANDBOX_POWERSCHOOL_URL": ("http://127.0.0.1:5001", "Where the demo PowerSchool sandbox listens (demo data)."),
    # Sync job tuning; blank means the default in enroll_sync/sync/jobs.py (JobSettings).
    "JOB_TASKS": (None, "Tasks one sync job is split into, so several workers can share it (default 4)."),
    "JOB_BATCHES_PER_EXPORT": (None, "Adapter batches handed to one export() call (default 5)."),
    "JOB_HEARTBEAT_SECONDS": (None, "How often a running task proves it is alive."),
    "JOB_STALE_SECONDS": (None, "After this long without a heartbeat a task's records are taken back (default 60)."),
    "JOB_RECOVERY_SECONDS": (None, "How often workers look for dead tasks (default 15)."),
    "JOB_POLL_SECONDS": (None, "Wait between tries while another job holds a registration (default 0.5)."),
    "DRY_RUN_MAX": (None, "The most registrations one Dry run checks (default 20000, about 2 s)."),
    "DRY_RUN_SECONDS": (None, "Time budget of one Dry run in seconds (default 20)."),
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
    for name in ("WORKERS", "LOGIN_MAX_ATTEMPTS", "LOGIN_WINDOW_SECONDS"):
        raw[name] = int(raw[name])
    raw.update(overrides)  # anything else (TESTING, EXTRA_PLUGINS, ...)
    return raw
