"""Where templates and static files live: inside the package when installed from a
wheel (``enroll_sync/templates``), beside it in a checkout (``templates/``)."""
from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    raise RuntimeError(f"Enroll Sync cannot find its {name}/ folder next to {PACKAGE_DIR}")
