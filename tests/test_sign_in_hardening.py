"""Sign-in under attack and after sign-out: the rate limit holds against parallel
guesses (SQLite and PostgreSQL), counts per account and per address, believes
X-Forwarded-For only behind a configured proxy; a copied session cookie is dead after
sign-out; the CSRF token changes at sign-in; creating a user says nothing about other
districts' accounts."""
from __future__ import annotations

import threading

import pytest
from werkzeug.security import generate_password_hash

from enroll_sync.catalog import install_catalog
from enroll_sync.models import LoginThrottle, Organization, User
from enroll_sync.testing import DEMO_PASSWORD, ROLE_EMAIL, LiveServer, Session, db, sign_in
from tests.test_sync_support import BACKENDS, backend_app

VIEWER = ROLE_EMAIL["Viewer"]


def _fresh(url):
    s = Session(base_url=url, follow_redirects=False, timeout=60)
    s.page("/login")
    return s


def parallel_sign_ins(url, attempts, n, headers=None):
    """``n`` sign-ins at the same moment, each from its own session: status codes."""
    sessions = [_fresh(url) for _ in range(n)]
    barrier = threading.Barrier(n)
    codes = [None] * n

    def go(i):
        email, password = attempts(i)
        barrier.wait()
        codes[i] = sessions[i].post_form("/login", {"email": email, "password": password},
                                         headers=headers(i) if headers else None).status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in sessions:
        s.close()
    return codes


@pytest.mark.parametrize("backend", BACKENDS)
def test_parallel_wrong_passwords_beyond_the_limit_are_refused(backend, tmp_path):
    gen = backend_app(backend, tmp_path, LOGIN_MAX_ATTEMPTS="5")
    app = next(gen)
    try:
        with LiveServer(app) as server:
            codes = parallel_sign_ins(server.url, lambda i: (VIEWER, f"wrong-{i}"), 30)
            assert codes.count(401) == 5, codes  # exactly the limit was checked
            assert codes.count(429) == 25, codes
            # the right password is refused too while the limit holds
            r = _fresh(server.url).post_form("/login", {"email": VIEWER, "password": DEMO_PASSWORD})
            assert r.status_code == 429 and "Too many" in r.text
            # another account from the same address is not locked out by it
            r = _fresh(server.url).post_form("/login", {"email": ROLE_EMAIL["Registrar"], "password": DEMO_PASSWORD})
            assert r.status_code == 302
    finally:
        next(gen, None)


def test_the_address_limit_is_its_own_and_forwarded_addresses_need_a_trusted_proxy(tmp_path):
    for proxies, expect_forwarded_believed in (("0", False), ("1", True)):
        gen = backend_app("sqlite", tmp_path / proxies, LOGIN_MAX_ATTEMPTS="50",
                          LOGIN_MAX_ATTEMPTS_PER_ADDRESS="3", TRUSTED_PROXIES=proxies)
        app = next(gen)
        try:
            with LiveServer(app) as server:
                # four different unknown emails from one client who rotates X-Forwarded-For
                codes = [_fresh(server.url).post_form(
                    "/login", {"email": f"guess{i}@example.org", "password": "x"},
                    headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)]
                if expect_forwarded_believed:
                    # behind the proxy each forwarded address is a client of its own
                    assert codes == [401, 401, 401, 401], codes
                    # and one client locked out does not lock out the others behind the proxy
                    same = [_fresh(server.url).post_form(
                        "/login", {"email": f"again{i}@example.org", "password": "x"},
                        headers={"X-Forwarded-For": "203.0.113.9"}).status_code for i in range(4)]
                    assert same == [401, 401, 401, 429], same
                    r = _fresh(server.url).post_form("/login", {"email": VIEWER, "password": DEMO_PASSWORD},
                                                     headers={"X-Forwarded-For": "203.0.113.10"})
                    assert r.status_code == 302
                else:
                    # nobody vouches for the header: it is the same peer every time
                    assert codes == [401, 401, 401, 429], codes
        finally:
            next(gen, None)


def test_successful_sign_ins_do_not_use_up_the_address(tmp_path):
    gen = backend_app("sqlite", tmp_path, LOGIN_MAX_ATTEMPTS_PER_ADDRESS="3")
    app = next(gen)
    try:
        with LiveServer(app) as server:
            for _ in range(6):  # a school signing in all morning from one address
                sign_in(server.url, "Viewer").close()
            with db(app):
                assert not LoginThrottle.select().where(LoginThrottle.count > 0).exists()
    finally:
        next(gen, None)


def test_a_copied_session_cookie_is_dead_after_sign_out(live):
    s = sign_in(live.url, "Registrar")
    thief = Session(base_url=live.url, follow_redirects=False, timeout=30)
    for cookie in s.cookies.jar:
        thief.cookies.set(cookie.name, cookie.value)
    assert thief.get("/registrations/").status_code == 200  # the copy works while the session lives
    r = s.post_form("/logout", {})
    assert r.status_code == 302
    r = thief.get("/registrations/")
    assert r.status_code == 302 and "/login" in r.headers["location"]
    # signing in again works, with a new session
    assert sign_in(live.url, "Registrar").get("/registrations/").status_code == 200


def test_the_csrf_token_changes_at_sign_in(live):
    s = Session(base_url=live.url, follow_redirects=False, timeout=30)
    s.page("/login")
    before = s.csrf
    r = s.post_form("/login", {"email": VIEWER, "password": DEMO_PASSWORD})
    assert r.status_code == 302
    # the token of the signed-out page no longer works
    r = s.post("/logout", data={"csrf_token": before})
    assert r.status_code == 400 and "expired" in r.text
    s.page("/", follow_redirects=True)
    assert s.csrf and s.csrf != before
    assert s.post_form("/logout", {}).status_code == 302


@pytest.fixture
def other_district(app):
    with db(app):
        org = Organization.create(name="Elsewhere District", slug="elsewhere")
        install_catalog(org)
        User.create(organization=org, email="pat@shared.example", name="Pat Elsewhere", role="District Admin",
                    password_hash=generate_password_hash("elsewhere-pass-123"))
    return org


def test_creating_a_user_says_nothing_about_other_districts(app, live, login, other_district):
    admin = login("District Admin")
    admin.page("/settings/users/")
    form = {"name": "Pat Here", "email": "pat@shared.example", "role": "Viewer", "password": "riverside-pass-123"}
    r = admin.post_form("/settings/users/", form)
    assert r.status_code == 302, r.text[:300]  # the other district's account is not mentioned
    admin.page("/settings/users/")
    r = admin.post_form("/settings/users/", form)
    assert r.status_code == 422 and "already exists" in r.text  # this district's own account is
    # each person signs in to their own district with their own password
    here = sign_in(live.url, "pat@shared.example", "riverside-pass-123")  # a Viewer in Riverside
    assert here.get("/registrations/").status_code == 200 and here.get("/settings/users/").status_code == 403
    there = sign_in(live.url, "pat@shared.example", "elsewhere-pass-123")  # a District Admin elsewhere
    page = there.get("/settings/users/")
    assert page.status_code == 200 and "Pat Elsewhere" in page.text and "Dana Admin" not in page.text
    with db(app):
        assert User.select().where(User.email == "pat@shared.example").count() == 2
