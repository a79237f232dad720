"""Settings > District: the organization's own settings."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user

from .. import security
from ..db import database
from ..models import Organization
from . import audit, render

bp = Blueprint("organization", __name__, url_prefix="/settings/district")


@bp.route("/", methods=["GET", "POST"])
@security.require_permission(security.MANAGE_USERS)
def settings():
    org = Organization.get_by_id(current_user.organization_id)
    if request.method == "POST":
        uses = request.form.get("uses_registration_module") == "on"
        if uses != org.uses_registration_module:
            with database.atomic():
                org.uses_registration_module = uses
                org.save()
                audit("organization.registration_module", "Organization", org.id, uses_registration_module=uses)
        flash("Saved the district settings.", "success")
        return redirect(url_for("organization.settings"))
    return render("organization/settings.html", None, org=org)
