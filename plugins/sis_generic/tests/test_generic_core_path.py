"""The generic adapter through the whole core: the Enroll Sync app on a real SQLite
file, served over real HTTP, with the demo district whose "Ed-Fi Sandbox" connection
this plugin's ``register_demo_connections`` hook points at the test server; sync jobs
go through the real huey queue, consumed in this process the way ``enroll-sync serve``
does.

What an admin sees: the connection card's Test Connection, Refresh fields, and Sync to
SIS leaving every registration Failed while the SIS answers 500 to everything.

Everything about the core comes from ``enroll_sync.testing`` (the ``app``/``live``
fixtures, ``sign_in``, and snapshot helpers where the web has no cheaper door), so this
suite runs from the plugin's own directory, without the core's ``tests/``.
"""
from __future__ import annotations

import html
import re

import pytest

from enroll_sync.testing import (connection, registrations, run_worker, save_mapping, schools, sign_in,
                                 wait_for_job)
from generic_helpers import FAST
from sis_generic import GenericRestAdapter

ADMIN = "admin@riverside.example"
BASE = "/settings/sync-service"
#: the smallest Export Student Mapping the Ed-Fi students schema accepts
EDFI_ROWS = [
    {"to": "studentUniqueId", "type": "direct", "from": "registration.form_id"},
    {"to": "firstName", "type": "transformation", "from": "student_legal_first_name",
     "steps": [{"kind": "trim"}]},
    {"to": "lastSurname", "type": "transformation", "from": "student_legal_last_name",
     "steps": [{"kind": "trim"}]},
    {"to": "birthDate", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
]


@pytest.fixture
def demo_sandbox_urls(server):
    """The demo's "Ed-Fi Sandbox" connection points at this suite's test server."""
    return {"powerschool": "http://127.0.0.1:9", "edfi": server.url}


@pytest.fixture
def admin(live):
    session = sign_in(live.url, ADMIN)
    yield session
    session.close()


def generic_connection(app):
    return connection(app, "generic_rest")


def save_settings(admin, conn, **changes) -> None:
    """Edit the connection through its settings form (secrets left blank: kept)."""
    admin.page(f"{BASE}/{conn.id}/edit")
    values = {**conn.settings, **changes}
    form = {"name": conn.name, "environment": conn.environment,
            **{f"s_{k}": "" if v is None else str(v) for k, v in values.items()}}
    resp = admin.post_form(f"{BASE}/{conn.id}/edit", form)
    assert resp.status_code == 302, html.unescape(resp.text)[:2000]


def press_test_connection(admin, conn_id: int) -> str:
    """Test Connection on the connection's card (an HTMX swap of the card)."""
    admin.page(f"{BASE}/")
    resp = admin.post_form(f"{BASE}/{conn_id}/test", htmx=True)
    assert resp.status_code == 200
    return html.unescape(resp.text)


def test_connection_card_explains_an_unreachable_schema(app, admin, server, closed_port):
    conn = generic_connection(app)
    assert conn.name == "Ed-Fi Sandbox" and conn.settings["base_url"] == server.url

    card = press_test_connection(admin, conn.id)
    assert "Connected. Student (POST /data/v3/ed-fi/students): " in card

    schema_url = f"http://127.0.0.1:{closed_port}/metadata/data/v3/swagger.json"
    save_settings(admin, conn, schema_url=schema_url, max_attempts=2, retry_backoff=0.01)
    card = press_test_connection(admin, conn.id)
    expected = (f"Could not fetch the schema from {schema_url}: Could not reach 127.0.0.1:"
                f"{closed_port}: the connection was refused")
    assert expected in card
    assert "Connected." not in card
    stored = connection(app, conn.id)
    assert stored.last_check_ok is False and stored.last_check_message.startswith(expected)
    # the secret never reaches the page
    assert server.credentials.client_secret not in card


def test_a_500_storm_leaves_every_registration_failed(app, admin, server):
    conn = generic_connection(app)
    save_settings(admin, conn, max_attempts=2, retry_backoff=0.01, timeout=FAST["timeout"])
    school_ids = [s.id for s in schools(app) if s.school_number != "901"]
    save_mapping(app, conn.id, EDFI_ROWS)

    # Schools > Set Sync Connection, and Configure Mapping > Refresh fields
    admin.page("/settings/schools/")
    resp = admin.post_form("/settings/schools/bulk/set-sync-connection",
                           {"school_ids": school_ids, "connection_id": str(conn.id)})
    assert resp.status_code == 302
    admin.page(f"{BASE}/{conn.id}/mapping/export_student/fields")
    resp = admin.post_form(f"{BASE}/{conn.id}/mapping/export_student/refresh", htmx=True)
    assert resp.status_code == 200

    server.set_faults({"status": 500, "times": None})
    with run_worker(app):
        admin.page("/registrations/")
        resp = admin.post_form("/registrations/sync", {"all_matching": "1", "status": "Approved"},
                               htmx=True)
        assert resp.status_code == 200, html.unescape(resp.text)[:2000]
        job_url = resp.headers["HX-Redirect"]
        job_id = int(job_url.rstrip("/").rsplit("/", 1)[1])
        job = wait_for_job(app, job_id)
    assert job.status == "Completed", job.message

    items = job.items
    regs = {r.id: r for r in registrations(app, [i.registration_id for i in items])}
    assert len(items) >= 5
    for item in items:
        reg = regs[item.registration_id]
        assert (item.status, reg.sync_status, reg.sis_id) == ("Failed", "Failed", None), item.reason
        assert (("HTTP 500" in item.reason and "not marked as synced" in item.reason)
                or item.reason.startswith("Not sent: held back because the SIS failed")), item.reason
    assert any("Gave up on POST /data/v3/ed-fi/students after 2 attempts" in i.reason for i in items)
    assert job.message.startswith(f"{len(items)} failed"), job.message

    # what the registrar sees on the job page
    page = html.unescape(admin.get(job_url).text)
    text = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    assert f"Succeeded: 0 Partial Sync: 0 Failed: {len(items)}" in text
    assert "Gave up on POST /data/v3/ed-fi/students after 2 attempts: the last answer was HTTP 500" in text

    server.set_faults()
    assert server.dump()["students"] == []


def test_refresh_fields_shows_a_field_the_schema_gained(app, admin, server):
    """The core keeps the adapter instance between requests; Refresh fields must still
    read the changed document."""
    conn = generic_connection(app)
    fields_url = f"{BASE}/{conn.id}/mapping/export_student/fields"
    first = html.unescape(admin.page(fields_url).text)
    assert "studentUniqueId" in first and "nickname" not in first

    server.add_properties("student", nickname={"type": "string", "maxLength": 5,
                                               "description": "What the student likes to be called."})
    assert "nickname" not in html.unescape(admin.page(fields_url).text)  # the core's cache
    resp = admin.post_form(f"{BASE}/{conn.id}/mapping/export_student/refresh", htmx=True)
    assert resp.status_code == 200
    page = html.unescape(resp.text)
    with GenericRestAdapter(server.settings(**FAST)) as fresh:
        fields = sum(len(s.fields) for s in fresh.target_fields())
    assert f"Refreshed fields: {fields} fields in 4 sections from Generic REST" in page
    assert "nickname" in page
