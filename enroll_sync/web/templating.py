"""Template globals and filters: navigation, permissions, dates, durations, JSON."""
from __future__ import annotations

import json

from flask_login import current_user

from .. import security
from . import job_url, may


def init_templating(app):
    @app.context_processor
    def globals_():
        return {"P": security, "current_user": current_user, "may": may, "job_url": job_url}

    app.add_template_filter(format_dt, "dt")
    app.add_template_filter(pretty_json, "pretty_json")
    app.add_template_filter(duration, "duration")


def format_dt(value, fmt="%b %d, %Y %I:%M %p"):
    return value.strftime(fmt) + " UTC" if value else ""


def pretty_json(value):
    """A payload or SIS answer as readable JSON (accents as they are; escaped by Jinja)."""
    if value is None:
        return ""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def duration(seconds):
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"
