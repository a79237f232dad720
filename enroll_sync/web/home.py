"""The landing page after sign-in."""
from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required

from .. import security

bp = Blueprint("home", __name__)


@bp.route("/")
@login_required
def index():
    if current_user.can(security.VIEW_REGISTRATIONS):
        return redirect(url_for("registrations.index"))
    if current_user.can(security.SYNC_FULL_ACCESS):
        return redirect(url_for("sync_service.connections"))
    return render_template("home.html")
