"""Settings > Users: create, set role, deactivate."""
from __future__ import annotations

from enroll_sync.db import database
from enroll_sync.models import AuditLog, User
from tests.conftest import Session, sign_in


def _uid(app, email):
    with app.app_context(), database.connection_context():
        return User.get(User.email == email).id


def test_create_user_who_can_then_sign_in(app, live, login):
    admin = login("District Admin")
    admin.page("/settings/users/")
    r = admin.post_form("/settings/users/", {"name": "Nora New", "email": "Nora@Riverside.example",
                                             "role": "Registrar", "password": "a-long-temporary-pw"})
    assert r.status_code == 302
    nora = sign_in(live.url, "nora@riverside.example", "a-long-temporary-pw")
    assert nora.get("/registrations/").status_code == 200
    assert nora.get("/settings/users/").status_code == 403
    with app.app_context(), database.connection_context():
        assert AuditLog.select().where(AuditLog.action == "user.create").count() == 1


def test_bad_user_form_shows_errors_in_place(app, live, login):
    admin = login("District Admin")
    admin.page("/settings/users/")
    r = admin.post_form("/settings/users/", {"name": "", "email": "viewer@riverside.example",
                                             "role": "Emperor", "password": "short"})
    assert r.status_code == 422
    for msg in ("Enter the person", "already exists", "Choose a role", "at least 10 characters"):
        assert msg in r.text
    r = admin.post_form("/settings/users/", {"name": "X", "email": "not-an-email", "role": "Viewer",
                                             "password": "a-long-temporary-pw"})
    assert "Enter a valid email address" in r.text


def test_set_role_and_deactivate(app, live, login):
    admin = login("District Admin")
    viewer = login("Viewer")
    vid = _uid(app, "viewer@riverside.example")
    admin.page("/settings/users/")
    assert admin.post_form(f"/settings/users/{vid}", {"action": "role", "role": "Registrar"}).status_code == 302
    with app.app_context(), database.connection_context():
        assert User.get_by_id(vid).role == "Registrar"
    assert admin.post_form(f"/settings/users/{vid}", {"action": "deactivate"}).status_code == 302
    assert viewer.get("/registrations/").status_code == 302  # signed out
    s = Session(base_url=live.url)
    s.page("/login")
    assert s.post_form("/login", {"email": "viewer@riverside.example", "password": "enroll-sync-demo"}).status_code == 401


def test_admin_cannot_demote_themself(app, live, login):
    admin = login("District Admin")
    me = _uid(app, "admin@riverside.example")
    admin.page("/settings/users/")
    admin.post_form(f"/settings/users/{me}", {"action": "role", "role": "Viewer"})
    with app.app_context(), database.connection_context():
        assert User.get_by_id(me).role == "District Admin"
