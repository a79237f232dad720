"""Manage Schools: Edit a School > Primary tab and Bulk Action > Set Sync Connection."""
from __future__ import annotations

import re

from enroll_sync.db import database
from enroll_sync.models import AuditLog, School, SyncConnection


def _ids(app):
    with app.app_context(), database.connection_context():
        schools = [s.id for s in School.select().order_by(School.id)]
        conn = SyncConnection.select().first()
        return schools, conn.id, conn.name


def test_bulk_set_sync_connection_swaps_the_list(app, live, login):
    schools, conn_id, conn_name = _ids(app)
    admin = login("District Admin")
    page = admin.page("/settings/schools/")
    assert 'hx-post="/settings/schools/bulk/set-sync-connection"' in page.text
    r = admin.post_form("/settings/schools/bulk/set-sync-connection",
                        {"school_ids": [str(schools[1]), str(schools[2])], "connection_id": str(conn_id)}, htmx=True)
    assert r.status_code == 200
    # the fragment, not a page: its root is the swapped element
    assert r.text.lstrip().startswith('<div id="school-list">')
    assert "<html" not in r.text
    assert "Vary" in r.headers and "HX-Request" in r.headers["Vary"]
    assert f"2 school(s) now use {conn_name}" in r.text
    assert len(re.findall(rf"data-testid=\"connection-\d+\">{re.escape(conn_name)}<", r.text)) == 2
    with app.app_context(), database.connection_context():
        assigned = {s.id for s in School.select().where(School.sync_connection == conn_id)}
        assert assigned == {schools[1], schools[2]}
        entry = AuditLog.select().where(AuditLog.action == "schools.set_sync_connection").get()
        assert sorted(entry.details["schools"]) == sorted([schools[1], schools[2]])


def test_bulk_without_selection_says_so(app, live, login):
    admin = login("District Admin")
    admin.page("/settings/schools/")
    r = admin.post_form("/settings/schools/bulk/set-sync-connection", {"connection_id": ""}, htmx=True)
    assert r.status_code == 422 and "Select at least one school" in r.text


def test_bulk_as_plain_form_post_redirects_with_message(app, live, login):
    schools, conn_id, conn_name = _ids(app)
    admin = login("District Admin")
    admin.page("/settings/schools/")
    r = admin.post_form("/settings/schools/bulk/set-sync-connection",
                        {"school_ids": str(schools[0]), "connection_id": str(conn_id)})
    assert r.status_code == 302
    assert "1 school(s) now use" in admin.get("/settings/schools/").text


def test_edit_school_primary_tab_assigns_connection(app, live, login):
    schools, conn_id, conn_name = _ids(app)
    admin = login("District Admin")
    page = admin.page(f"/settings/schools/{schools[0]}/edit")
    assert "Primary" in page.text and "API Sync Connection" in page.text
    r = admin.post_form(f"/settings/schools/{schools[0]}/edit", {
        "name": "Riverside Elementary", "school_number": "101", "low_grade": "K", "high_grade": "5",
        "sync_connection": str(conn_id)})
    assert r.status_code == 302
    with app.app_context(), database.connection_context():
        assert School.get_by_id(schools[0]).sync_connection_id == conn_id
        assert AuditLog.select().where(AuditLog.action == "school.update").count() == 1


def test_edit_school_bad_input_is_shown_in_place(app, live, login):
    schools, conn_id, _ = _ids(app)
    admin = login("District Admin")
    admin.page(f"/settings/schools/{schools[0]}/edit")
    r = admin.post_form(f"/settings/schools/{schools[0]}/edit", {
        "name": "", "school_number": "102", "low_grade": "5", "high_grade": "K", "sync_connection": "99999"})
    assert r.status_code == 422
    assert "Enter the school&#39;s name." in r.text or "Enter the school's name." in r.text
    assert "Another school already has this number." in r.text
    assert "must not be below" in r.text
    assert "Choose one of your sync connections." in r.text
    with app.app_context(), database.connection_context():
        assert School.get_by_id(schools[0]).name == "Riverside Elementary"
