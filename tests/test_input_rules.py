"""The cases of the fuzz run that found 63 x 500 on PostgreSQL, each answered with a clear
message where the person typed: a NUL byte in any input, a string over 255 characters,
before sign-in, in a Viewer's filters and in admin forms; on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from enroll_sync.models import School, SyncConnection
from enroll_sync.testing import LiveServer, Session, db, sign_in
from tests.test_sync_support import BACKENDS, backend_app

LONG = "x" * 300


@pytest.fixture(params=BACKENDS)
def server(request, tmp_path):
    gen = backend_app(request.param, tmp_path)
    app = next(gen)
    live = LiveServer(app)
    yield app, live
    live.stop()
    next(gen, None)


def test_nul_and_long_values_get_a_message_not_a_500(server):
    app, live = server
    anon = Session(base_url=live.url, follow_redirects=False, timeout=30)
    anon.page("/login")
    r = anon.post_form("/login", {"email": LONG + "@example.org", "password": "whatever-it-is"})
    assert r.status_code == 401 and "do not match" in r.text
    r = anon.post_form("/login", {"email": "a\x00b@example.org", "password": "x"})
    assert r.status_code == 400 and "NUL character" in r.text

    viewer = sign_in(live.url, "Viewer")
    for name in ("q", "grade", "school_year", "status", "page"):
        r = viewer.get("/registrations/", params={name: "a\x00b"})
        assert r.status_code == 400 and "NUL character" in r.text, name
        assert viewer.get("/registrations/", params={name: LONG}).status_code == 200, name

    admin = sign_in(live.url, "District Admin")
    with db(app):
        school = School.select().order_by(School.id).first()
        conn = SyncConnection.select().order_by(SyncConnection.id).first()
    admin.page(f"/settings/schools/{school.id}/edit")
    form = {"name": LONG, "school_number": school.school_number, "low_grade": school.low_grade,
            "high_grade": school.high_grade, "sync_connection": ""}
    r = admin.post_form(f"/settings/schools/{school.id}/edit", form)
    assert r.status_code == 422 and "The name is too long: use at most 255 characters." in r.text
    r = admin.post_form(f"/settings/schools/{school.id}/edit", {**form, "name": "Ok", "school_number": LONG})
    assert r.status_code == 422 and "The school number is too long" in r.text

    r = admin.post_form("/settings/users/", {"name": LONG, "email": "new.person@example.org", "role": "Viewer",
                                             "password": "long-enough-password"})
    assert r.status_code == 422 and "The name is too long" in r.text
    r = admin.post_form("/settings/users/", {"name": "New Person", "email": "n" * 250 + "@example.org",
                                             "role": "Viewer", "password": "long-enough-password"})
    assert r.status_code == 422 and "The email address is too long: use at most 254 characters." in r.text

    r = admin.post_form(f"/settings/sync-service/{conn.id}/edit", {"name": LONG, "environment": "sandbox"})
    assert r.status_code == 422 and "The name is too long" in r.text
    r = admin.post_form(f"/settings/sync-service/{conn.id}/mapping/export_student/configure",
                        {"student_example": LONG})
    assert r.status_code == 422 and "A SIS ID or SchoolMint ID is too long" in r.text
    with db(app):  # nothing was saved
        assert School.get_by_id(school.id).name == school.name
        assert SyncConnection.get_by_id(conn.id).name == conn.name
    for s in (anon, viewer, admin):
        s.close()
