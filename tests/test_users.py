"""Settings > Users: invite, grant named permissions (presets fill them), deactivate."""
from __future__ import annotations

from enroll_sync import security
from enroll_sync.db import database
from enroll_sync.models import AuditLog, User
from tests.conftest import Session, sign_in


def _uid(app, email):
    with app.app_context(), database.connection_context():
        return User.get(User.email == email).id


def _user(app, email) -> User:
    with app.app_context(), database.connection_context():
        return User.get(User.email == email)


def test_create_user_with_permissions_who_can_then_sign_in(app, live, login):
    admin = login("District Admin")
    admin.page("/settings/users/")
    r = admin.post_form("/settings/users/", {"name": "Nora New", "email": "Nora@Riverside.example",
                                             "permissions": [security.VIEW_REGISTRATIONS, security.EDIT_REGISTRATIONS],
                                             "password": "a-long-temporary-pw"})
    assert r.status_code == 302
    nora = _user(app, "nora@riverside.example")
    assert nora.permissions == [security.VIEW_REGISTRATIONS, security.EDIT_REGISTRATIONS]
    assert nora.role == "Registrar"  # the preset those permissions equal, as a label
    s = sign_in(live.url, "nora@riverside.example", "a-long-temporary-pw")
    assert s.get("/registrations/").status_code == 200
    assert s.get("/settings/users/").status_code == 403
    with app.app_context(), database.connection_context():
        entry = AuditLog.get(AuditLog.action == "user.create")
        assert entry.details["permissions"] == nora.permissions


def test_a_new_user_starts_with_no_permission(app, live, login):
    """Least privilege: the invite form ticks nothing, and a user created without ticks
    can sign in but sees nothing until an admin grants a permission."""
    admin = login("District Admin")
    page = admin.page("/settings/users/")
    invite = page.text[page.text.index('id="invite"'):]
    assert 'name="permissions"' in invite and " checked" not in invite
    r = admin.post_form("/settings/users/", {"name": "Lee Least", "email": "lee@riverside.example",
                                             "password": "a-long-temporary-pw"})
    assert r.status_code == 302
    lee = _user(app, "lee@riverside.example")
    assert lee.permissions == [] and lee.role == security.CUSTOM
    s = sign_in(live.url, "lee@riverside.example", "a-long-temporary-pw")
    home = s.get("/")
    assert home.status_code == 200 and 'data-testid="no-permissions"' in home.text
    for path in ("/registrations/", "/settings/sync-logs/", "/settings/sync-service/", "/settings/schools/"):
        assert s.get(path).status_code == 403, path


def test_a_preset_fills_the_permissions(app, live, login):
    admin = login("District Admin")
    admin.page("/settings/users/")
    r = admin.post_form("/settings/users/", {"name": "Sue Sync", "email": "sue@riverside.example",
                                             "preset": "Sync Admin", "password": "a-long-temporary-pw"})
    assert r.status_code == 302
    assert set(_user(app, "sue@riverside.example").permissions) == set(security.PRESETS["Sync Admin"])


def test_bad_user_form_shows_errors_in_place(app, live, login):
    admin = login("District Admin")
    admin.page("/settings/users/")
    r = admin.post_form("/settings/users/", {"name": "", "email": "viewer@riverside.example",
                                             "preset": "Emperor", "password": "short"})
    assert r.status_code == 422
    for msg in ("Enter the person", "already exists", "Choose a preset from the list", "at least 10 characters"):
        assert msg in r.text
    r = admin.post_form("/settings/users/", {"name": "X", "email": "x@riverside.example",
                                             "permissions": ["Launch Missiles"], "password": "a-long-temporary-pw"})
    assert r.status_code == 422 and "Choose permissions from the list" in r.text
    r = admin.post_form("/settings/users/", {"name": "X", "email": "not-an-email", "preset": "Viewer",
                                             "password": "a-long-temporary-pw"})
    assert "Enter a valid email address" in r.text


def test_grant_permissions_one_by_one_and_deactivate(app, live, login):
    admin = login("District Admin")
    viewer = login("Viewer")
    vid = _uid(app, "viewer@riverside.example")
    admin.page("/settings/users/")
    assert viewer.get("/settings/schools/").status_code == 403
    r = admin.post_form(f"/settings/users/{vid}", {"action": "permissions",
                                                   "permissions": [security.VIEW_REGISTRATIONS, security.MANAGE_SCHOOLS]})
    assert r.status_code == 302
    u = _user(app, "viewer@riverside.example")
    assert u.permissions == [security.VIEW_REGISTRATIONS, security.MANAGE_SCHOOLS] and u.role == security.CUSTOM
    assert viewer.get("/settings/schools/").status_code == 200  # at once, same session
    # the older form of the action (a role name) applies that preset
    assert admin.post_form(f"/settings/users/{vid}", {"action": "role", "role": "Registrar"}).status_code == 302
    assert _user(app, "viewer@riverside.example").role == "Registrar"
    assert admin.post_form(f"/settings/users/{vid}", {"action": "deactivate"}).status_code == 302
    assert viewer.get("/registrations/").status_code == 302  # signed out
    s = Session(base_url=live.url)
    s.page("/login")
    assert s.post_form("/login", {"email": "viewer@riverside.example", "password": "enroll-sync-demo"}).status_code == 401


def test_admin_cannot_change_their_own_permissions(app, live, login):
    admin = login("District Admin")
    me = _uid(app, "admin@riverside.example")
    admin.page("/settings/users/")
    admin.post_form(f"/settings/users/{me}", {"action": "permissions", "permissions": [security.VIEW_REGISTRATIONS]})
    admin.post_form(f"/settings/users/{me}", {"action": "role", "role": "Viewer"})
    u = _user(app, "admin@riverside.example")
    assert u.role == "District Admin" and set(u.permissions) == set(security.PERMISSIONS)


def test_the_cli_and_older_callers_create_users_from_a_preset(app):
    with app.app_context(), database.connection_context():
        org = User.get(User.email == "admin@riverside.example").organization
        u = User.create(organization=org, email="old@riverside.example", name="Old Style", role="Sync Admin",
                        password_hash="x")
        assert set(u.permissions) == set(security.PRESETS["Sync Admin"]) and u.role == "Sync Admin"
        assert u.can(security.SYNC_FULL_ACCESS) and not u.can(security.EDIT_REGISTRATIONS)
        odd = User.create(organization=org, email="odd@riverside.example", name="Odd", role="Emperor", password_hash="x")
        assert odd.permissions == [] and odd.role == security.CUSTOM
