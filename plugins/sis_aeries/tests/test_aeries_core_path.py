"""The Aeries adapter through the whole core: the Enroll Sync app over real HTTP with the
demo district, whose "Aeries Sandbox" connection this plugin's ``register_demo_connections``
points at the test sandbox; sync jobs go through the real queue, consumed in this process.

What an admin sees: Test Connection on the card (and the year trap refused there), a bulk
sync that inserts, a second one that updates, a sync after Aeries was restored under new
StudentIDs (NOT_FOUND, re-sent by the core, matched again), and a Partial Sync when Aeries
ignores a field. Everything about the core comes from ``enroll_sync.testing``.
"""
from __future__ import annotations

import html

import pytest

from enroll_sync.testing import (CLOSED_SANDBOX_URLS, connection, registrations, run_worker, save_mapping,
                                 schools, sign_in, wait_for_job)

ADMIN = "admin@riverside.example"
BASE = "/settings/sync-service"
FAST = {"retry_backoff": 0.01, "max_backoff": 0.05, "max_attempts": 3, "timeout_s": 5}
#: an Export Student Mapping for Aeries: write names as To Fields; demo schools -> Aeries schools
AERIES_ROWS = [
    {"to": "FirstName", "type": "transformation", "from": "student_legal_first_name", "steps": [{"kind": "trim"}]},
    {"to": "LastName", "type": "transformation", "from": "student_legal_last_name", "steps": [{"kind": "trim"}]},
    {"to": "Gender", "type": "match_codes", "from": "gender", "codes": {"Female": "F", "Male": "M"},
     "unmatched": "blank"},
    {"to": "BirthDate", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
    {"to": "SchoolCode", "type": "match_codes", "from": "school.school_number",
     "codes": {"101": "990", "102": "990", "201": "991", "301": "994"}, "unmatched": "fail"},
    {"to": "Grade", "type": "match_codes", "from": "registration.grade",
     "codes": {"TK": "-1", "K": "0", **{str(g): str(g) for g in range(1, 13)}}, "unmatched": "fail"},
]


@pytest.fixture
def demo_sandbox_urls(sandbox):
    """The demo's "Aeries Sandbox" connection points at this suite's sandbox."""
    return {**CLOSED_SANDBOX_URLS, "aeries": sandbox.url}


@pytest.fixture
def admin(live):
    session = sign_in(live.url, ADMIN)
    yield session
    session.close()


def save_settings(admin, conn, **changes) -> None:
    """Edit the connection through its settings form (the certificate left blank: kept)."""
    admin.page(f"{BASE}/{conn.id}/edit")
    values = {**conn.settings, **changes, "certificate": ""}
    form = {"name": conn.name, "environment": conn.environment,
            **{f"s_{k}": "" if v is None else str(v) for k, v in values.items()}}
    resp = admin.post_form(f"{BASE}/{conn.id}/edit", form)
    assert resp.status_code == 302, html.unescape(resp.text)[:2000]


def press_test_connection(admin, conn_id: int) -> str:
    admin.page(f"{BASE}/")
    resp = admin.post_form(f"{BASE}/{conn_id}/test", htmx=True)
    assert resp.status_code == 200
    return html.unescape(resp.text)


def sync_all_approved(app, admin):
    with run_worker(app):
        admin.page("/registrations/")
        resp = admin.post_form("/registrations/sync", {"all_matching": "1", "status": "Approved"}, htmx=True)
        assert resp.status_code == 200, html.unescape(resp.text)[:2000]
        job_id = int(resp.headers["HX-Redirect"].rstrip("/").rsplit("/", 1)[1])
        return wait_for_job(app, job_id)


def prepare(app, admin, sandbox):
    conn = connection(app, "aeries")
    save_settings(admin, conn, **FAST)
    save_mapping(app, conn.id, AERIES_ROWS)
    admin.page("/settings/schools/")
    resp = admin.post_form("/settings/schools/bulk/set-sync-connection",
                           {"school_ids": [s.id for s in schools(app) if s.school_number != "901"],
                            "connection_id": str(conn.id)})
    assert resp.status_code == 302
    return conn


def test_the_card_connects_and_refuses_a_year_aeries_lacks(app, admin, sandbox):
    conn = connection(app, "aeries")
    assert conn.name == "Aeries Sandbox" and conn.settings["server_url"] == sandbox.url
    card = press_test_connection(admin, conn.id)
    assert "Connected to Aeries" in card and "2025-2026 exists" in card
    save_settings(admin, conn, school_year=2026)
    card = press_test_connection(admin, conn.id)
    assert "Aeries has no 2026-2027 database" in card and "Connected to Aeries" not in card
    assert sandbox.cert not in card, "the certificate never reaches the page"
    assert connection(app, conn.id).last_check_ok is False


def test_bulk_syncs_insert_update_and_survive_a_restored_aeries(app, admin, sandbox):
    sandbox.seed(50, seed=2)
    prepare(app, admin, sandbox)

    job = sync_all_approved(app, admin)
    assert job.status == "Completed", job.message
    assert len(job.items) >= 5 and {i.status for i in job.items} == {"Succeeded"}, job.items
    first = {i.registration_id: i.sis_id for i in job.items}
    assert sandbox.count() == 50 + len(job.items)
    assert {str(s["StudentID"]) for s in sandbox.students()} >= set(first.values())
    assert {r.id: r.sis_id for r in registrations(app, list(first))} == first

    job = sync_all_approved(app, admin)
    assert {i.status for i in job.items} == {"Succeeded"}
    assert {i.registration_id: i.sis_id for i in job.items} == first, "updated, not inserted again"
    assert sandbox.count() == 50 + len(first)

    mapping = sandbox.renumber("shift")   # Aeries restored from a backup under new StudentIDs
    job = sync_all_approved(app, admin)
    assert {i.status for i in job.items} == {"Succeeded"}, [i.reason for i in job.items]
    relinked = {i.registration_id: i.sis_id for i in job.items}
    assert relinked == {r: str(mapping[int(s)]) for r, s in first.items()}
    assert sandbox.count() == 50 + len(first), "no student inserted twice"
    assert {r.id: r.sis_id for r in registrations(app, list(first))} == relinked, "the links follow"


def test_a_field_aeries_ignores_is_a_partial_sync(app, admin, sandbox):
    prepare(app, admin, sandbox)
    sandbox.set_faults(no_insert_permission=["Gender"])
    job = sync_all_approved(app, admin)
    partial = [i for i in job.items if i.status == "Partial Sync"]
    assert {i.status for i in job.items} <= {"Partial Sync", "Succeeded"}, [i.reason for i in job.items]
    assert len(partial) >= 3, "every registration with a gender (some have none: nothing sent)"
    assert all("Not written: Gender" in (i.reason or "") and i.sis_id for i in partial)
    assert sandbox.count() == len(job.items) and {s["Gender"] for s in sandbox.students()} == {""}
    regs = {r.id: r for r in registrations(app, [i.registration_id for i in partial])}
    assert {r.sync_status for r in regs.values()} == {"Partial Sync"}


def test_an_insert_answered_500_is_looked_up_then_sent_again_by_the_core(app, admin, sandbox):
    prepare(app, admin, sandbox)
    sandbox.set_faults(fail_500=2, fault_path="/api/v5/schools/990/InsertStudent")
    job = sync_all_approved(app, admin)
    assert {i.status for i in job.items} == {"Succeeded"}, [i.reason for i in job.items]
    inserts = [q["status"] for q in sandbox.requests() if q["path"].endswith("/InsertStudent")]
    assert inserts.count(500) == 2 and inserts.count(200) == len(job.items)
    assert sandbox.count() == len(job.items), "RETRY after a look-up: nothing inserted twice"
