"""The Flask application factory."""
from __future__ import annotations

import logging

from flask import Flask, current_app, render_template, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from htmx_flask import Htmx

from . import db as dbmod
from . import log_redaction
from .config import load_config
from .plugins import adapter_classes, build_plugin_manager, step_classes
from .resources import resource_dir

log = logging.getLogger("enroll_sync")


def build_app(config: dict | None = None) -> Flask:
    cfg = load_config(config)
    log_redaction.install()
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
    _errors(app)

    from .web import register_blueprints
    register_blueprints(app)

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "text/html":
            resp.headers.add("Vary", "HX-Request")
        return resp

    return app


def _login_manager(app):
    from .models import User

    lm = LoginManager(app)
    lm.login_view = "auth.login"
    lm.login_message = "Please sign in to continue."
    lm.session_protection = "strong"

    @lm.user_loader
    def load_user(user_id):
        return User.get_or_none((User.id == int(user_id)) & (User.active == True))  # noqa: E712

    @lm.unauthorized_handler
    def unauthorized():
        from flask import redirect, url_for
        if request.headers.get("HX-Request"):
            resp = app.response_class("", 401)
            resp.headers["HX-Redirect"] = url_for("auth.login")
            return resp
        return redirect(url_for("auth.login", next=request.full_path if request.method == "GET" else None))


ERROR_MESSAGES = {
    400: "This form has expired or was not sent from Enroll Sync. Reload the page and try again.",
    403: "Your role does not include the permission this needs. Ask a district admin if you need it.",
    404: "That no longer exists, or it belongs to another organization. Reload the page.",
    405: "That action is not available here.",
    413: "The file or form is larger than Enroll Sync accepts.",
    500: "Enroll Sync hit an unexpected error. It has been logged; try again, and tell your administrator if it keeps happening.",
}


def error_response(template, code, message=None, error=None):
    """A full error page, or for an HTMX request a message swapped into the page's
    flash area (``#flashes``) so the admin sees it where they are working."""
    message = message or ERROR_MESSAGES.get(code, "")
    if request.headers.get("HX-Request"):
        resp = current_app.response_class(
            render_template("errors/_htmx.html", message=message, code=code), code)
        resp.headers["HX-Retarget"] = "#flashes"
        resp.headers["HX-Reswap"] = "innerHTML"
        resp.headers["X-Enroll-Sync-Error"] = str(code)
        return resp
    return render_template(template, error=error, message=message), code


def _errors(app):
    def page(template, code):
        def handler(error):
            return error_response(template, code, error=error)
        return handler

    app.register_error_handler(403, page("errors/403.html", 403))
    app.register_error_handler(404, page("errors/404.html", 404))
    app.register_error_handler(405, page("errors/405.html", 405))
    app.register_error_handler(413, page("errors/413.html", 413))

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return error_response("errors/400.html", 400, error=error)

    @app.errorhandler(500)
    def server_error(error):
        log.exception("Unhandled error")
        return error_response("errors/500.html", 500, error=error)
