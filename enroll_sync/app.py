"""The Flask application factory."""
from __future__ import annotations

import logging

from flask import Flask, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from htmx_flask import Htmx

from . import db as dbmod
from .redaction import install_log_redaction
from .config import load_config
from .plugins import adapter_classes, build_plugin_manager, step_classes
from .resources import resource_dir

log = logging.getLogger("enroll_sync")


def build_app(config: dict | None = None) -> Flask:
    cfg = load_config(config)
    install_log_redaction()
    # one line per SIS request at INFO would flood the log and print URLs
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = Flask("enroll_sync", template_folder=str(resource_dir("templates")),
                static_folder=str(resource_dir("static")), instance_path=cfg["INSTANCE_PATH"])
    app.config.update(cfg)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg["SECURE_COOKIES"],
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=20 * 1024 * 1024,
    )

    dbmod.bind(app.config["DATABASE_URL"])
    dbmod.init_app(app)

    pm = build_plugin_manager(load_entrypoints=app.config["LOAD_PLUGINS"],
                              extra_plugins=app.config.get("EXTRA_PLUGINS", ()))
    app.extensions["enroll_sync.plugins"] = pm
    app.extensions["enroll_sync.adapters"] = adapter_classes(pm)
    app.extensions["enroll_sync.steps"] = step_classes(pm)

    CSRFProtect(app)
    Htmx(app)
    _login_manager(app)

    from .web import register_blueprints
    from .web.errors import register_error_handlers
    from .web.inputs import init_input_rules
    register_error_handlers(app)
    init_input_rules(app)
    register_blueprints(app)
    _trust_proxies(app)

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "text/html":
            resp.headers.add("Vary", "HX-Request")
        return resp

    return app


def _trust_proxies(app):
    """Behind ``TRUSTED_PROXIES`` reverse proxies, believe that many hops of their
    X-Forwarded-For/-Proto/-Host/-Port (the client's address for the sign-in rate limit,
    https for redirects and cookies). With none configured the headers are ignored:
    anyone could send them."""
    hops = int(app.config.get("TRUSTED_PROXIES") or 0)
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)


def _login_manager(app):
    from .ids import parse_id
    from .models import User

    lm = LoginManager(app)
    lm.login_view = "auth.login"
    lm.login_message = "Please sign in to continue."
    lm.session_protection = "strong"

    @lm.user_loader
    def load_user(user_id):
        from .web.auth import session_is_current
        uid = parse_id(user_id)
        user = User.get_or_none((User.id == uid) & (User.active == True)) if uid is not None else None  # noqa: E712
        # a session from before the user's last sign-out (a copied cookie) signs nobody in
        return user if user is not None and session_is_current(user) else None

    @lm.unauthorized_handler
    def unauthorized():
        from flask import redirect, url_for
        if request.headers.get("HX-Request"):
            resp = app.response_class("", 401)
            resp.headers["HX-Redirect"] = url_for("auth.login")
            return resp
        return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))
