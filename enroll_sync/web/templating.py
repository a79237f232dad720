"""Template globals: navigation, permissions, CSRF token for HTMX."""
from __future__ import annotations

from flask_login import current_user

from .. import security


def init_templating(app):
    @app.context_processor
    def globals_():
        return {"P": security, "current_user": current_user}

    @app.template_filter("dt")
    def format_dt(value, fmt="%b %d, %Y %I:%M %p"):
        return value.strftime(fmt) + " UTC" if value else ""
