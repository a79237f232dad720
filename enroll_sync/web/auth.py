"""Sign in and sign out, with a rate limit on failed attempts.

- **Rate limit, atomic.** Before a password is checked, the attempt is counted for the
  account (the email) and for the client's address, in one statement per key that takes
  the row's lock (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``): thirty parallel
  guesses get thirty different counts, and only those within the limit are checked. A
  sign-in that succeeds takes its attempt back. The address is the client's own only
  behind a configured proxy (``ENROLL_SYNC_TRUSTED_PROXIES``, see ``app.py``); the
  address limit is higher than the account limit, because a school network often shares
  one address.
- **Sessions.** Signing in starts a new session (and so a new CSRF token); the session
  carries the user's ``session_version``, which sign-out raises: a cookie copied before
  sign-out signs nobody in after it.
- **Uniform answers.** Unknown email, wrong password and a deactivated account get the
  same answer, after the same work (a password hash is checked either way).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import random
from urllib.parse import urlparse

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

from ..db import database, is_sqlite, write_tx
from ..inputs import EMAIL_MAX, PASSWORD_MAX
from ..models import LoginThrottle, User, utcnow

bp = Blueprint("auth", __name__)

#: the session key holding the user's session_version
SESSION_VERSION = "_sv"
#: the most accounts (in different districts) one email is checked against
MAX_ACCOUNTS_PER_EMAIL = 10

_dummy_hash: str | None = None


def _dummy() -> str:
    """A real hash to check against when the email is unknown, so timing does not tell."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = generate_password_hash("not-a-password")
    return _dummy_hash


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parts = urlparse(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


# --------------------------------------------------------------------------- the rate limit

def client_address() -> str:
    """The client's address as the rate limit counts it: the connecting peer, or behind
    a configured proxy the address it forwarded; an IPv6 client by its /64 network
    (one machine holds a whole /64)."""
    raw = request.remote_addr or ""
    try:
        addr = ipaddress.ip_address(raw.strip())
    except ValueError:
        # a forwarded value that is not an address: count it under the proxy's own
        orig = request.environ.get("werkzeug.proxy_fix.orig", {}).get("REMOTE_ADDR") or "unknown"
        return str(orig)[:64]
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def account_key(email: str) -> str:
    # a digest: fixed length whatever was typed, and no address kept in clear
    return "account:" + hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()


def _sql(text: str) -> str:
    return text if is_sqlite() else text.replace("?", "%s")


_RESERVE = ('INSERT INTO "loginthrottle" ("key", "window_start", "count") VALUES (?, ?, 1) '
            'ON CONFLICT ("key") DO UPDATE SET '
            '"count" = CASE WHEN "loginthrottle"."window_start" < ? THEN 1 ELSE "loginthrottle"."count" + 1 END, '
            '"window_start" = CASE WHEN "loginthrottle"."window_start" < ? THEN excluded."window_start" '
            'ELSE "loginthrottle"."window_start" END '
            'RETURNING "count"')


def reserve_attempt(limits: dict[str, int]) -> bool:
    """Count one attempt against each key of ``limits`` (key -> most attempts in the
    window), atomically; True when every count is within its limit."""
    now = utcnow()
    since = now - dt.timedelta(seconds=current_app.config["LOGIN_WINDOW_SECONDS"])
    within = True
    with write_tx():
        for key in sorted(limits):  # one order everywhere: two attempts never wait on each other in a circle
            count = database.execute_sql(_sql(_RESERVE), (key, now, since, since)).fetchone()[0]
            if count > limits[key]:
                within = False
        if random.random() < 0.02:  # now and then, forget windows long over
            LoginThrottle.delete().where(LoginThrottle.window_start < since).execute()
    return within


def release_attempt(account: str, address: str) -> None:
    """A sign-in succeeded: its account starts afresh, and its address gets the attempt back."""
    with write_tx():
        LoginThrottle.delete().where(LoginThrottle.key == account).execute()
        LoginThrottle.update(count=LoginThrottle.count - 1).where(
            (LoginThrottle.key == address) & (LoginThrottle.count > 0)).execute()


# --------------------------------------------------------------------------- sign in and out

def _check(email: str, password: str) -> User | None:
    """The active account ``email`` and ``password`` sign in to, or None; the same work
    whether or not the email has an account."""
    candidates = []
    if email and len(email) <= EMAIL_MAX:
        candidates = list(User.select().where(User.email == email).order_by(User.id).limit(MAX_ACCOUNTS_PER_EMAIL))
    if not password or len(password) > PASSWORD_MAX:
        check_password_hash(_dummy(), "x")
        return None
    found = None
    for user in candidates or [None]:
        ok = check_password_hash(user.password_hash if user else _dummy(), password)
        if ok and user is not None and user.active and found is None:
            found = user
    return found


def start_session(user: User) -> None:
    """A new session for ``user``: nothing of the signed-out session is kept (its CSRF
    token included), and it carries the user's session version."""
    session.clear()
    login_user(user)
    session[SESSION_VERSION] = user.session_version


def session_is_current(user: User) -> bool:
    """Whether the session cookie of this request was made since ``user`` last signed out."""
    return session.get(SESSION_VERSION) == user.session_version


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    error = None
    email = ""
    status = 200
    if request.method == "POST":
        email = (request.form.get("email") or "").strip().lower()
        password = request.form.get("password") or ""
        account, address = account_key(email), "address:" + client_address()
        if not reserve_attempt({account: current_app.config["LOGIN_MAX_ATTEMPTS"],
                                address: current_app.config["LOGIN_MAX_ATTEMPTS_PER_ADDRESS"]}):
            error = "Too many failed sign-in attempts. Wait a few minutes and try again."
            status = 429
        else:
            user = _check(email, password)
            if user is not None:
                release_attempt(account, address)
                User.update(last_login_at=utcnow()).where(User.id == user.id).execute()
                start_session(user)
                return redirect(_safe_next(request.args.get("next")) or url_for("home.index"))
            error = "That email and password do not match an active account."
            status = 401
        email = email[:EMAIL_MAX]
    return render_template("auth/login.html", error=error, email=email), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    # every session of this user made before now stops working, a copied cookie included
    User.update(session_version=User.session_version + 1).where(User.id == current_user.id).execute()
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
