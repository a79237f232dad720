"""The landing page after sign-in."""
from flask import Blueprint, make_response, redirect, render_template, url_for
from flask_login import current_user, login_required

from .. import security

bp = Blueprint("home", __name__)


@bp.route("/")
@login_required
def index():
    if current_user.can(security.VIEW_REGISTRATIONS):
        return redirect(url_for("registrations.index"))
    if current_user.can(security.SYNC_FULL_ACCESS):
        return redirect(url_for("connections.connections"))
    return render_template("home.html")


@bp.route("/running-jobs")
@login_required
def running_jobs():
    """The navigation's running-jobs item, polled while a job runs. What it lists is
    decided per role by ``running_sync_jobs`` (registrars: Registrations; Sync Admins:
    Sync Logs; others: nothing)."""
    resp = make_response(render_template("_running_jobs.html"))
    resp.headers["Cache-Control"] = "no-store"
    return resp
