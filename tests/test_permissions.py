"""The permission matrix: every route x every permission set, full page and HTMX, over
real HTTP.

Each view declares what it needs with ``require_permission``; this test reads that
declaration from the URL map, so a new route without one fails here, and checks the
server's answer for a user holding each single permission, each preset (the four
roles of the walkthrough), no permission at all, and a visitor who is not signed in.
Access is decided by the permissions a user holds, never by a role name.
"""
from __future__ import annotations

import pytest
from werkzeug.security import generate_password_hash

from enroll_sync import security
from enroll_sync.db import database
from enroll_sync.sync.mappings.versions import save_rows
from enroll_sync.models import Organization, Registration, School, SisLink, SyncConnection, SyncJob, User
from tests.conftest import sign_in

PUBLIC = {"static", "auth.login"}
LOGIN_ONLY = {"auth.logout", "home.index", "home.running_jobs"}  # these decide per permission inside
SKIP = {"auth.logout"}  # would sign the session out; tested in test_auth
PASSWORD = "matrix-password-1"


def permission_sets() -> dict[str, frozenset]:
    """name -> permissions: none, every single permission, every preset (duplicates once)."""
    sets = {"no permission": frozenset()}
    sets.update({f"only {p}": frozenset({p}) for p in security.PERMISSIONS})
    sets.update({f"preset {name}": perms for name, perms in security.PRESETS.items()})
    out, seen = {}, set()
    for name, perms in sets.items():
        if perms not in seen:
            seen.add(perms)
            out[name] = perms
    return out


def test_the_sets_cover_every_permission_and_preset():
    sets = permission_sets()
    assert frozenset() in sets.values()
    for p in security.PERMISSIONS:
        assert frozenset({p}) in sets.values()
    for perms in security.PRESETS.values():
        assert perms in sets.values()


def make_users(app) -> dict[str, str]:
    """A user of the demo district per permission set: name -> email."""
    emails = {}
    with app.app_context(), database.connection_context():
        org = Organization.select().first()
        for i, (name, perms) in enumerate(permission_sets().items()):
            email = f"matrix-{i}@riverside.example"
            User.create(organization=org, email=email, name=f"Matrix {name}", permissions=sorted(perms),
                        password_hash=generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"))
            emails[name] = email
    return emails


def sample_args(app):
    """A real value for every URL argument used by the routes."""
    with app.app_context(), database.connection_context():
        conn = SyncConnection.select().first()
        job = SyncJob.create(organization=conn.organization, kind="bulk")
        mapping, _ = save_rows(conn, "export_student", None, [
            {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"}], None)
        reg = Registration.select().order_by(Registration.form_id).first()
        link = SisLink.create(organization=conn.organization, student=reg.student_id, connection=conn,
                              sis_id="5000", how="set by hand")
        return {
            "school_id": School.select().first().id,
            "form_id": reg.form_id,
            "link_id": link.id,
            "registration_id": Registration.select().first().id,
            "connection_id": conn.id,
            "user_id": User.get(User.email == "viewer@riverside.example").id,
            "job_id": job.id,
            "kind": "export_student",
            "adapter": conn.adapter,
            "filename": "app.css",
            "version": mapping.version,
        }


def routes(app):
    args = sample_args(app)
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or rule.endpoint in SKIP:
            continue
        missing = [a for a in rule.arguments if a not in args]
        assert not missing, f"add a sample value for {missing} of {rule.rule} to sample_args()"
        path = rule.rule
        for a in rule.arguments:
            path = path.replace(f"<{a}>", str(args[a]))
            for conv in ("int", "string", "path"):
                path = path.replace(f"<{conv}:{a}>", str(args[a]))
        view = app.view_functions[rule.endpoint]
        needed = getattr(view, "required_permissions", None)
        if rule.endpoint not in LOGIN_ONLY:
            assert needed, f"{rule.endpoint} ({rule.rule}) declares no permission: use security.require_permission"
            assert all(p in security.PERMISSIONS for p in needed), f"{rule.endpoint}: unknown permission {needed}"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, path, tuple(needed or ())))
    return out


#: what an allowed request may answer: the page, a redirect after a change, or a message
#: about the (empty) form it was sent; never "not found", "method not allowed" or a 500
ALLOWED_POST = {200, 302, 400, 409, 422, 502}


def test_every_route_for_every_permission_set(app, live, anon):
    emails = make_users(app)
    table = routes(app)
    assert len(table) >= 10
    sets = permission_sets()
    sessions = {name: sign_in(live.url, email, PASSWORD) for name, email in emails.items()}
    failures = []
    try:
        for endpoint, method, path, needed in table:
            for htmx in (False, True):
                how = "HTMX " if htmx else ""
                headers = {"HX-Request": "true"} if htmx else {}

                def call(s):
                    return s.get(path, headers=headers) if method == "GET" else s.post_form(path, {}, htmx=htmx)

                # not signed in: sent to the sign-in page (HTMX: told to go there with HX-Redirect)
                r = call(anon)
                signed_out = ((r.status_code == 401 and "/login" in r.headers.get("HX-Redirect", "")) if htmx
                              else (r.status_code == 302 and "/login" in r.headers["location"]))
                if not signed_out:
                    failures.append(f"anonymous {how}{method} {path}: {r.status_code}")
                for name, s in sessions.items():
                    allowed = set(needed) <= sets[name]
                    r = call(s)
                    if allowed:
                        ok = (r.status_code in (200, 302)) if method == "GET" else (r.status_code in ALLOWED_POST)
                        if not ok:
                            failures.append(f"{name}: {how}{method} {path}: {r.status_code}, expected access")
                    elif r.status_code != 403:
                        failures.append(f"{name}: {how}{method} {path}: {r.status_code}, expected 403")
                    else:
                        missing = [p for p in needed if p not in sets[name]]
                        if "which you do not have" not in r.text or not all(p in r.text for p in missing):
                            failures.append(f"{name}: {how}{method} {path}: 403 without naming {missing}")
                        if htmx and "<html" in r.text:
                            failures.append(f"{name}: HTMX {method} {path}: a whole page for a 403")
    finally:
        for s in sessions.values():
            s.close()
    assert not failures, f"{len(failures)} problem(s):\n" + "\n".join(failures)


@pytest.mark.parametrize("name", ["no permission", "only View Registrations", "preset Registrar",
                                  "preset District Admin"])
def test_pages_show_only_what_the_permissions_allow(app, live, name):
    """The navigation and the buttons follow the permissions (a courtesy: the server
    refuses anyway, as the matrix shows)."""
    perms = permission_sets()[name]
    email = make_users(app)[name]
    s = sign_in(live.url, email, PASSWORD)
    try:
        home = s.get("/")
        assert home.status_code == 200
        assert ('href="/registrations/"' in home.text) == (security.VIEW_REGISTRATIONS in perms)
        assert ('href="/settings/sync-logs/"' in home.text) == (security.VIEW_REGISTRATIONS in perms)
        assert ('href="/settings/users/"' in home.text) == (security.MANAGE_USERS in perms)
        assert ('href="/settings/district/"' in home.text) == (security.MANAGE_DISTRICT in perms)
        if not perms:
            assert 'data-testid="no-permissions"' in home.text
        if security.VIEW_REGISTRATIONS in perms:
            regs = s.get("/registrations/")
            can_sync = security.EDIT_REGISTRATIONS in perms
            assert ("Bulk Actions" in regs.text) == can_sync
            assert ('name="registration_ids"' in regs.text) == can_sync
    finally:
        s.close()


def test_deactivated_user_is_signed_out(app, live, login):
    viewer = login("Viewer")
    assert viewer.get("/registrations/").status_code == 200
    with app.app_context(), database.connection_context():
        User.update(active=False).where(User.email == "viewer@riverside.example").execute()
    r = viewer.get("/registrations/")
    assert r.status_code == 302 and "/login" in r.headers["location"]


def test_every_post_needs_the_csrf_token(app, live, login):
    """Every state change, full page or HTMX, is refused without the page's CSRF token,
    before the view runs (so it changes nothing)."""
    admin = login("District Admin")
    failures = []
    for endpoint, method, path, needed in routes(app):
        if method != "POST":
            continue
        for htmx in (False, True):
            r = admin.post_form(path, {"action": "save", "name": "x"}, csrf=False, htmx=htmx)
            if r.status_code != 400 or "This form has expired" not in r.text:
                failures.append(f"{'HTMX ' if htmx else ''}POST {path}: {r.status_code}")
    assert not failures, "\n".join(failures)
