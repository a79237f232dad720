"""Sign-in: password check, rate limit, cookies, CSRF, redirects."""
from __future__ import annotations

from tests.conftest import ROLE_EMAIL, Session, make_app, sign_in
from enroll_sync.db import database
from enroll_sync.migrations import upgrade
from enroll_sync.demo import load_demo


def test_wrong_password_is_refused(live):
    s = Session(base_url=live.url)
    s.page("/login")
    r = s.post_form("/login", {"email": ROLE_EMAIL["Viewer"], "password": "nope"})
    assert r.status_code == 401
    assert "do not match" in r.text
    assert s.get("/registrations/").status_code == 302


def test_session_cookie_is_httponly_and_samesite(live):
    s = Session(base_url=live.url)
    r = s.page("/login")
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie


def test_sign_in_is_rate_limited(tmp_path):
    from tests.conftest import LiveServer
    app = make_app(tmp_path, LOGIN_MAX_ATTEMPTS="3")
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(None, registrations=1)
    server = LiveServer(app)
    try:
        s = Session(base_url=server.url)
        s.page("/login")
        codes = [s.post_form("/login", {"email": ROLE_EMAIL["Viewer"], "password": "bad"}).status_code
                 for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        # even the right password is refused while the limit holds
        r = s.post_form("/login", {"email": ROLE_EMAIL["Viewer"], "password": "enroll-sync-demo"})
        assert r.status_code == 429 and "Too many" in r.text
    finally:
        server.stop()


def test_csrf_missing_or_wrong_is_rejected(live, login):
    admin = login("District Admin")
    for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}), ({}, {"X-CSRFToken": "forged", "HX-Request": "true"})):
        r = admin.post("/settings/schools/bulk/set-sync-connection", data={"school_ids": "1", **data}, headers=headers)
        assert r.status_code == 400, r.status_code
        assert "expired" in r.text
    # and with the token from the page it is accepted
    admin.page("/settings/schools/")
    r = admin.post_form("/settings/schools/bulk/set-sync-connection", {"school_ids": "1", "connection_id": ""}, htmx=True)
    assert r.status_code == 200


def test_open_redirect_is_ignored(live):
    s = Session(base_url=live.url)
    s.page("/login")
    r = s.post_form("/login?next=https://evil.example/", {"email": ROLE_EMAIL["Viewer"], "password": "enroll-sync-demo"})
    assert r.status_code == 302 and r.headers["location"] == "/"


def test_logout_needs_post(live, login):
    admin = login("District Admin")
    assert admin.get("/logout").status_code == 405
    r = admin.post_form("/logout", {})
    assert r.status_code == 302
    assert admin.get("/registrations/").status_code == 302


def test_htmx_errors_come_back_as_a_message_for_the_flash_area(live, login):
    viewer = login("Viewer")
    r = viewer.post_form("/settings/schools/bulk/set-sync-connection", {"school_ids": "1"}, htmx=True)
    assert r.status_code == 403
    assert r.headers["HX-Retarget"] == "#flashes" and r.headers["HX-Reswap"] == "innerHTML"
    assert "<html" not in r.text and "permission" in r.text
    admin = login("District Admin")
    r = admin.post("/settings/schools/bulk/set-sync-connection", data={"school_ids": "1"},
                   headers={"HX-Request": "true", "X-CSRFToken": "forged"})
    assert r.status_code == 400 and r.headers["HX-Retarget"] == "#flashes"
    assert "expired" in r.text and "<html" not in r.text
