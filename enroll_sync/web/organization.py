"""Settings > District: the organization's own settings.

- This district uses Enroll's Registration module (gates every export).
- Hold a sync for approval when it would update more than N students the SIS already
  has (``Organization.hold_updates_over``; blank: never hold). See docs/bulk_sync.md
  "Holding a large update".
"""
from __future__ import annotations

import re

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user

from .. import security
from ..db import database
from ..models import Organization
from . import audit, render

bp = Blueprint("organization", __name__, url_prefix="/settings/district")

#: the largest value an integer column holds on every database we run on
HOLD_MAX = 2_147_483_647
_WHOLE_NUMBER = re.compile(r"[0-9]+")


def parse_hold_limit(raw: str | None) -> tuple[int | None, str | None]:
    """The "hold a sync" field: (limit or None for blank, error message or None).
    A whole number from 0 up; thousands separators (1,000) and spaces are allowed."""
    text = (raw or "").strip().replace(",", "").replace(" ", "")
    if not text:
        return None, None
    if not _WHOLE_NUMBER.fullmatch(text):  # ASCII digits only: no sign, decimal point or exponent
        return None, ("Enter a whole number of students (0 or more), or leave it blank to never hold a sync.")
    value = int(text)
    if value > HOLD_MAX:
        return None, f"Enter a number no larger than {HOLD_MAX:,}, or leave it blank to never hold a sync."
    return value, None


@bp.route("/", methods=["GET", "POST"])
@security.require_permission(security.MANAGE_DISTRICT)
def settings():
    org = Organization.get_by_id(current_user.organization_id)
    errors: dict[str, str] = {}
    form = {"hold_updates_over": "" if org.hold_updates_over is None else str(org.hold_updates_over)}
    if request.method == "POST":
        uses = request.form.get("uses_registration_module") == "on"
        raw_limit = request.form.get("hold_updates_over", "")
        limit, error = parse_hold_limit(raw_limit)
        if error:
            # nothing is saved while the form has an error; the form keeps what was typed
            errors["hold_updates_over"] = error
            form["hold_updates_over"] = raw_limit[:50]
            org.uses_registration_module = uses
            return render("organization/settings.html", None, org=org, form=form, errors=errors), 422
        with database.atomic():
            if uses != org.uses_registration_module:
                org.uses_registration_module = uses
                org.save()
                audit("organization.registration_module", "Organization", org.id, uses_registration_module=uses)
            if limit != org.hold_updates_over:
                before = org.hold_updates_over
                org.hold_updates_over = limit
                org.save()
                audit("organization.hold_updates_over", "Organization", org.id, hold_updates_over=limit,
                      before=before)
        flash("Saved the district settings.", "success")
        return redirect(url_for("organization.settings"))
    return render("organization/settings.html", None, org=org, form=form, errors=errors)
