"""An SIS that echoes the request's Authorization header in its error bodies (some do,
and proxies in front of them do) must not get a credential stored, shown or logged:
not the client secret, not the Basic value (base64 of ``client_id:client_secret``),
not a bearer token, in any form (as is, base64, URL-encoded).

End to end: the PowerSchool sandbox over real sockets, wrapped so chosen paths answer
500 with the Authorization header they got; Test Connection (token fetch and API call)
and a sync job through the web; then every table of the database, the pages an admin,
a registrar and a Viewer see, the failures CSVs and every log record are searched."""
from __future__ import annotations

import base64
import json
import logging
import threading
import urllib.parse

import pytest

from enroll_sync.models import ALL_MODELS, Registration, SyncConnection
from enroll_sync.sync.connections import drop_adapter
from enroll_sync.testing import db, run_worker, sign_in, wait_for_job
from tests.test_sync_support import connect_to_sandbox, sandbox  # noqa: F401

from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET


class EchoAuthorization:
    """WSGI middleware: requests to ``paths`` (method, path prefix) are answered 500
    with a body that echoes their Authorization header, bare and encoded."""

    def __init__(self, app):
        self.app = app
        self.paths: set[tuple[str, str]] = set()
        self.seen: set[str] = set()  # every Authorization value sent, echoed or not
        self.echoed = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        with self.lock:
            if auth:
                self.seen.add(auth)
            hit = any(environ["REQUEST_METHOD"] == m and environ.get("PATH_INFO", "").startswith(p)
                      for m, p in self.paths)
            if hit:
                self.echoed += 1
        if not hit:
            return self.app(environ, start_response)
        bare = auth.split(" ", 1)[-1]
        # the credential straddles the 200 characters an error's reason is cut to
        body = json.dumps({
            "message": f"Denied{'.' * 175}{bare} (sent as {auth})",
            "error": {"message": f"u={urllib.parse.quote(bare, safe='')}"},
            "request": {"headers": {"Authorization": auth}, "b64": base64.b64encode(auth.encode()).decode()},
        }).encode()
        start_response("500 Internal Server Error", [("Content-Type", "application/json"),
                                                     ("Content-Length", str(len(body)))])
        return [body]


#: a piece of a credential this long is a leak too (a reason cut short must not keep half of one)
PIECE = 12


def forms_of(value: str) -> set[str]:
    """Every piece of ``value`` as it may appear: as is, URL-encoded, base64."""
    raw = value.encode()
    out = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
           base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return {f[i:i + PIECE] for f in out if len(f) >= PIECE for i in range(len(f) - PIECE + 1)}


def database_text(app) -> str:
    """Every value of every table, as text."""
    chunks = []
    with db(app):
        for model in ALL_MODELS:
            for row in model.select().tuples():
                chunks.append(" ".join("" if v is None else str(v) for v in row))
    return "\n".join(chunks)


def test_echoed_credentials_are_nowhere(app, live, sandbox, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    echo = EchoAuthorization(sandbox.server.app)
    sandbox.server.app = echo
    conn_id = connect_to_sandbox(app, sandbox)
    with db(app):
        approved = [r.id for r in Registration.select().where(
            (Registration.status == "Approved") & (Registration.school.in_(
                [s.id for s in SyncConnection.get_by_id(conn_id).schools]))).limit(4)]
    assert approved

    admin = sign_in(live.url, "District Admin")
    admin.page("/settings/sync-service/")
    # 1. the API call of Test Connection echoes the bearer token
    echo.paths = {("GET", "/ws/v1/metadata")}
    r = admin.post_form(f"/settings/sync-service/{conn_id}/test", {})
    assert r.status_code in (200, 302)
    # 2. a fresh token request echoes the Basic credential (base64 of client_id:client_secret)
    with db(app):
        drop_adapter(conn_id)
    echo.paths = {("POST", "/oauth/access_token")}
    admin.page("/settings/sync-service/")
    r = admin.post_form(f"/settings/sync-service/{conn_id}/test", {})
    assert r.status_code in (200, 302)
    with db(app):
        drop_adapter(conn_id)
    # 3. a sync whose export echoes the bearer token
    echo.paths = {("POST", "/ws/v1/student")}
    registrar = sign_in(live.url, "Registrar")
    registrar.page("/registrations/")
    with run_worker(app):
        r = registrar.post_form("/registrations/sync", {"registration_ids": [str(i) for i in approved]})
        assert r.status_code == 302, r.text[:300]
        job_id = int(r.headers["location"].rstrip("/").rsplit("/", 1)[-1])
        job = wait_for_job(app, job_id)
    assert any(i.status == "Failed" for i in job.items), job
    assert echo.echoed >= 3

    # what must appear nowhere
    basic = base64.b64encode(f"{DEFAULT_CLIENT_ID}:{DEFAULT_CLIENT_SECRET}".encode()).decode()
    values = {DEFAULT_CLIENT_SECRET, basic}
    values |= {a.split(" ", 1)[1] for a in echo.seen if a.startswith("Bearer ")}
    assert any(a.startswith("Bearer ") for a in echo.seen) and f"Basic {basic}" in echo.seen
    needles = set().union(*(forms_of(v) for v in values))

    stored = database_text(app)
    viewer = sign_in(live.url, "Viewer")
    form_ids = []
    with db(app):
        form_ids = [r.form_id for r in Registration.select().where(Registration.id.in_(approved))]
    pages = {
        "connections": admin.get("/settings/sync-service/").text,
        "sync logs": admin.get("/settings/sync-logs/").text,
        "job (sync logs)": admin.get(f"/settings/sync-logs/{job_id}").text,
        "job failed (sync logs)": admin.get(f"/settings/sync-logs/{job_id}?status=Failed").text,
        "failures.csv (sync logs)": admin.get(f"/settings/sync-logs/{job_id}/failures.csv").text,
        "job (registrations)": registrar.get(f"/registrations/sync-jobs/{job_id}").text,
        "failures.csv (registrations)": registrar.get(f"/registrations/sync-jobs/{job_id}/failures.csv").text,
        "progress": registrar.get(f"/registrations/sync-jobs/{job_id}/progress").text,
        **{f"registration {f} (Viewer)": viewer.get(f"/registrations/{f}").text for f in form_ids},
    }
    places = {"database": stored, "log": caplog.text, **pages}
    leaks = [f"{where}: …{text[max(0, text.find(n) - 60): text.find(n) + len(n) + 20]}…"
             for where, text in places.items() for n in needles if n in text]
    assert not leaks, "credentials leaked:\n" + "\n".join(leaks[:20])
    # the echoes were stored and shown, cut: otherwise this test proves nothing
    assert "[redacted]" in stored, "no echo reached the database"
    with db(app):
        message = SyncConnection.get_by_id(conn_id).last_check_message or ""
    assert "[redacted]" in message, message
    assert any("[redacted]" in text for name, text in pages.items() if "job" in name), "no echo reached a page"
    for s in (admin, registrar, viewer):
        s.close()
