"""Settings > Sync Service > Sync Logs (placeholder until bulk sync lands)."""
from flask import Blueprint

from .. import security
from ..models import SyncJob
from . import render, scoped

bp = Blueprint("sync_logs", __name__, url_prefix="/settings/sync-logs")


@bp.route("/")
@security.require_permission(security.SYNC_FULL_ACCESS)
def index():
    return render("sync_logs/index.html", None, jobs=list(scoped(SyncJob).order_by(SyncJob.id.desc())))
