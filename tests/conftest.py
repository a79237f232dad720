"""Fixtures for the core suite: a real app on a real SQLite file, served over real
HTTP on a loopback port, and signed-in HTTP sessions per demo role.

The fixtures (``app``, ``live``, ``login``, ``anon``) and helpers live in
``enroll_sync.testing`` (the pytest plugin every suite gets, plugin suites included);
the names are re-exported here for the core tests that import them from
``tests.conftest``."""
from __future__ import annotations

from enroll_sync.testing import (CLOSED_SANDBOX_URLS, DEMO_PASSWORD, ROLE_EMAIL, LiveServer,  # noqa: F401
                                 Session, make_app, sign_in)
