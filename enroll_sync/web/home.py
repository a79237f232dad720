"""The dashboard, the home page after sign-in: per school, registrations by Sync
Status (a stacked bar chart with its numbers in a table); the latest sync jobs with
their records/s and outcome; and what needs attention: failed records by reason, syncs
held for approval, connections whose test fails. Each part shows only to those whose
permissions cover it (the route itself only needs a signed-in user)."""
from flask import Blueprint, make_response, render_template
from flask_login import current_user, login_required

from .. import security
from ..models import SYNC_STATUSES
from ..sync import overview
from . import org_id

bp = Blueprint("home", __name__)

#: the dashboard chart's colour per Sync Status (Bootstrap's palette; shared with the badges)
STATUS_COLORS = {
    "Not Synced": "#adb5bd", "Pending": "#0dcaf0", "In Progress": "#0b5ed7",
    "Succeeded": "#198754", "Failed": "#dc3545", "Partial Sync": "#ffc107",
}


@bp.route("/")
@login_required
def index():
    ctx = {"can_view": current_user.can(security.VIEW_REGISTRATIONS),
           "can_sync_service": current_user.can(security.SYNC_FULL_ACCESS)}
    oid = org_id()
    if ctx["can_view"]:
        rows = overview.status_by_school(oid)
        reasons, failed = overview.failure_reasons(oid)
        ctx.update(schools=rows, totals=overview.status_totals(rows), statuses=SYNC_STATUSES,
                   colors=STATUS_COLORS, jobs=overview.recent_jobs(oid), reasons=reasons, failed=failed,
                   held=overview.held_jobs(oid))
    if ctx["can_sync_service"]:
        ctx["failing"] = overview.failing_connections(oid)
    return render_template("home.html", **ctx)


@bp.route("/running-jobs")
@login_required
def running_jobs():
    """The navigation's running-jobs item, polled while a job runs. What it lists is
    decided by permission in ``running_sync_jobs`` (View Registrations sees them)."""
    resp = make_response(render_template("_running_jobs.html"))
    resp.headers["Cache-Control"] = "no-store"
    return resp

