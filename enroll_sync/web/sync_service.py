"""Settings > Sync Service (placeholder until the Sync Service UI lands)."""
from flask import Blueprint

from .. import security
from ..models import SyncConnection
from . import render, scoped

bp = Blueprint("sync_service", __name__, url_prefix="/settings/sync-service")


@bp.route("/")
@security.require_permission(security.SYNC_FULL_ACCESS)
def connections():
    return render("sync_service/connections.html", None, connections=list(scoped(SyncConnection)))
