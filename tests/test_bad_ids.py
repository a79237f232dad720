"""Ids come from URLs and forms that people type, bookmark and tamper with. A mistyped
or hostile id is "not found" or a message at the field, never a 500: not a number too
large for the database's integer columns, not a Unicode digit that ``int()`` accepts
or refuses, not a negative number."""
from __future__ import annotations

import pytest

from enroll_sync.db import database
from enroll_sync.ids import MAX_ID, parse_id
from enroll_sync.models import Registration, SyncJob

from .test_permissions import sample_args

BAD_IDS = ["99999999999999999999999", str(MAX_ID + 1), "²", "١٢", "-1", "1_000", "0x10", "1e3", " "]
ID_ARGS = {"school_id", "form_id", "registration_id", "connection_id", "user_id", "job_id", "version"}


@pytest.mark.parametrize("raw, expected", [
    ("42", 42), (" 42 ", 42), (str(MAX_ID), MAX_ID), (7, 7),
    *[(bad, None) for bad in BAD_IDS], (None, None), (True, None), (-3, None), (MAX_ID + 1, None)])
def test_parse_id(raw, expected):
    assert parse_id(raw) == expected


def id_routes(app):
    args = sample_args(app)
    for rule in app.url_map.iter_rules():
        ids = [a for a in rule.arguments if a in ID_ARGS]
        if not ids or rule.endpoint == "auth.logout":
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, ids, method, args


def test_every_route_answers_404_to_an_id_that_is_not_one(app, live, login):
    s = login("District Admin")
    checked, failures = 0, []
    for rule, ids, method, args in id_routes(app):
        for bad in BAD_IDS:
            path = rule.rule
            for a in rule.arguments:
                value = bad if a in ids else str(args[a])
                for form in (f"<{a}>", f"<int:{a}>", f"<string:{a}>"):
                    path = path.replace(form, value.strip() or "%20")
            r = s.get(path) if method == "GET" else s.post_form(path, {})
            checked += 1
            if r.status_code != 404:
                failures.append(f"{method} {path}: {r.status_code}")
    assert checked > 50
    assert not failures, "\n".join(failures)


def test_bad_ids_in_forms_and_filters_are_ignored_or_refused(app, live, login):
    registrar = login("Registrar")
    for bad in BAD_IDS:
        # a Quick Filter school and a search term: the list renders, the bad value matches nothing
        r = registrar.get("/registrations/", params={"school": bad, "q": bad})
        assert r.status_code == 200, (bad, r.status_code)
        # Sync to SIS with tampered checkboxes and bounds: a confirmation that selects nothing
        r = registrar.post_form("/registrations/sync/confirm",
                                {"registration_ids": bad, "upto": bad, "school": bad}, htmx=True)
        assert r.status_code in (200, 400, 422), (bad, r.status_code, r.text[:300])
        r = registrar.post_form("/registrations/sync", {"registration_ids": bad, "upto": bad}, htmx=True)
        assert r.status_code in (200, 400, 422), (bad, r.status_code, r.text[:300])
    with app.app_context(), database.connection_context():
        assert SyncJob.select().count() == 0, "a job started from ids that name no registration"

    admin = login("District Admin")
    page = admin.page("/settings/schools/")
    assert page.status_code == 200
    for bad in BAD_IDS:
        r = admin.post_form("/settings/schools/bulk/set-sync-connection", {"school_ids": bad}, htmx=True)
        assert r.status_code in (200, 400, 422), (bad, r.status_code)
        assert "Select at least one school." in r.text

    sync_admin = login("Sync Admin")
    with app.app_context(), database.connection_context():
        conn_id = sample_args(app)["connection_id"]
        known = Registration.select().first().form_id
    url = f"/settings/sync-service/{conn_id}/mapping/export_student/configure"
    sync_admin.page(url)
    for bad in BAD_IDS[:5]:
        r = sync_admin.post_form(url, {"registration_example": [bad, str(known)]})
        assert r.status_code in (200, 422), (bad, r.status_code)
        assert "is not a Registration Form ID" in r.text, bad
