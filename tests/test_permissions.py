"""The permission matrix: every route x every role, over real HTTP.

Each view declares what it needs with ``require_permission``; this test reads that
declaration from the URL map, so a new route without one fails here, and checks the
server's answer for every demo role and for a visitor who is not signed in.
"""
from __future__ import annotations

import pytest

from enroll_sync import security
from enroll_sync.db import database
from enroll_sync.sync.mappings.versions import save_rows
from enroll_sync.models import Registration, School, SisLink, SyncConnection, SyncJob, User

ROLES = list(security.ROLES)
PUBLIC = {"static", "auth.login"}
LOGIN_ONLY = {"auth.logout", "home.index", "home.running_jobs"}  # these decide per role inside
SKIP = {"auth.logout"}  # would sign the session out; tested in test_auth


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
            "user_id": User.get(User.role == "Viewer").id,
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
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, path, tuple(needed or ())))
    return out


#: what an allowed request may answer: the page, a redirect after a change, or a message
#: about the (empty) form it was sent; never "not found", "method not allowed" or a 500
ALLOWED_POST = {200, 302, 400, 409, 422, 502}


def test_every_route_for_every_role(app, live, login, anon):
    table = routes(app)
    assert len(table) >= 10
    sessions = {role: login(role) for role in ROLES}
    failures = []
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
            for role, s in sessions.items():
                allowed = all(p in security.ROLES[role] for p in needed)
                r = call(s)
                if allowed:
                    ok = (r.status_code in (200, 302)) if method == "GET" else (r.status_code in ALLOWED_POST)
                    if not ok:
                        failures.append(f"{role} {how}{method} {path}: {r.status_code}, expected access")
                elif r.status_code != 403:
                    failures.append(f"{role} {how}{method} {path}: {r.status_code}, expected 403")
                elif "Your role does not include the permission" not in r.text:
                    failures.append(f"{role} {how}{method} {path}: 403 without its message")
    assert not failures, "\n".join(failures)


def test_deactivated_user_is_signed_out(app, live, login):
    viewer = login("Viewer")
    assert viewer.get("/registrations/").status_code == 200
    with app.app_context(), database.connection_context():
        User.update(active=False).where(User.role == "Viewer").execute()
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
