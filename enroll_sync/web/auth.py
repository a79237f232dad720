"""Sign in and sign out, with a rate limit on failed attempts."""
from __future__ import annotations

import datetime as dt
from urllib.parse import urlparse

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.security import check_password_hash, generate_password_hash

from ..models import LoginAttempt, User, utcnow

bp = Blueprint("auth", __name__)

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


def _too_many(keys) -> bool:
    window = dt.timedelta(seconds=current_app.config["LOGIN_WINDOW_SECONDS"])
    since = utcnow() - window
    limit = current_app.config["LOGIN_MAX_ATTEMPTS"]
    for key in keys:
        if LoginAttempt.select().where((LoginAttempt.key == key) & (LoginAttempt.at > since)).count() >= limit:
            return True
    return False


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
        keys = [f"email:{email}", f"ip:{request.remote_addr}"]
        if _too_many(keys):
            error = "Too many failed sign-in attempts. Wait a few minutes and try again."
            status = 429
        else:
            user = User.get_or_none(User.email == email) if email else None
            ok = check_password_hash(user.password_hash if user else _dummy(), password) if password else False
            if user and ok and user.active:
                LoginAttempt.delete().where(LoginAttempt.key == f"email:{email}").execute()
                user.last_login_at = utcnow()
                user.save()
                login_user(user)
                return redirect(_safe_next(request.args.get("next")) or url_for("home.index"))
            for key in keys:
                LoginAttempt.create(key=key)
            error = "That email and password do not match an active account."
            status = 401
    return render_template("auth/login.html", error=error, email=email), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
