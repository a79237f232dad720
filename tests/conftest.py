"""Fixtures for the core suite: a real app on a real SQLite file, served over real
HTTP on a loopback port, and signed-in HTTP sessions per demo role."""
from __future__ import annotations

import re
import httpx
import pytest

from enroll_sync import create_app
from enroll_sync.db import database
from enroll_sync.demo import DEMO_PASSWORD, DEMO_USERS, load_demo
from enroll_sync.migrations import upgrade
from enroll_sync.models import SyncConnection
from enroll_sync.testing import LiveServer

ROLE_EMAIL = {role: email for role, email, _ in DEMO_USERS}
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"')


def make_app(tmp_path, **overrides):
    config = {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'instance' / 'app.db'}",
        "QUEUE_URL": f"sqlite:///{tmp_path / 'instance' / 'queue.db'}",
        "IN_PROCESS_WORKER": "0",
        "TESTING": True,
        "LOGIN_MAX_ATTEMPTS": "50",
    }
    config.update(overrides)
    return create_app(config)


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(app.extensions["enroll_sync.plugins"], {"powerschool": "http://127.0.0.1:9", "edfi": "http://127.0.0.1:9"},
                  registrations=40)
        # The demo connections point at closed ports here; retry quickly so the checks
        # that reach them (Test Connection, Refresh fields) fail fast.
        for conn in SyncConnection.select():
            conn.settings = {**conn.settings, "retry_backoff": 0.01, "max_backoff": 0.05}
            conn.save()
    yield app
    if not database.is_closed():
        database.close()


@pytest.fixture
def live(app):
    server = LiveServer(app)
    yield server
    server.stop()


class Session(httpx.Client):
    """An HTTP client that keeps cookies and knows the page's CSRF token."""

    csrf: str | None = None

    def remember_csrf(self, resp):
        m = CSRF_RE.search(resp.text)
        if m:
            self.csrf = m.group(1) or m.group(2)
        return resp

    def page(self, path, **kw):
        return self.remember_csrf(self.get(path, **kw))

    def post_form(self, path, data=None, csrf=True, htmx=False, **kw):
        data = dict(data or {})
        headers = dict(kw.pop("headers", {}) or {})
        if csrf and self.csrf is None:
            self.page("/login")
        if htmx:
            headers["HX-Request"] = "true"
            if csrf:
                headers["X-CSRFToken"] = self.csrf
        elif csrf:
            data.setdefault("csrf_token", self.csrf)
        return self.post(path, data=data, headers=headers, **kw)


def sign_in(base_url, email, password=DEMO_PASSWORD) -> Session:
    s = Session(base_url=base_url, follow_redirects=False, timeout=30)
    s.page("/login")
    resp = s.post_form("/login", {"email": email, "password": password})
    assert resp.status_code == 302, resp.text[:500]
    s.page("/")
    return s


@pytest.fixture
def login(live):
    sessions = []

    def _login(role_or_email):
        email = ROLE_EMAIL.get(role_or_email, role_or_email)
        s = sign_in(live.url, email)
        sessions.append(s)
        return s

    yield _login
    for s in sessions:
        s.close()


@pytest.fixture
def anon(live):
    s = Session(base_url=live.url, follow_redirects=False, timeout=30)
    yield s
    s.close()
