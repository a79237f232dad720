"""Settings > Users (Manage Users): invite people, grant named permissions, deactivate.

A user's access is the set of permissions ticked for them (``security.PERMISSIONS``);
the presets (Viewer, Registrar, Sync Admin, District Admin) only fill the boxes. A new
user starts with no permission ticked: least privilege until an admin grants more.
"""
from __future__ import annotations

import re

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user
from peewee import IntegrityError
from werkzeug.security import generate_password_hash

from .. import security
from ..db import database
from ..inputs import EMAIL_MAX, PASSWORD_MAX, field_problem, limit_of
from ..models import User
from . import audit, get_scoped_or_404, render, scoped

bp = Blueprint("users", __name__, url_prefix="/settings/users")

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _users():
    return list(scoped(User).order_by(User.name))


def permissions_from_form(form) -> tuple[list[str] | None, str | None]:
    """The permissions ticked (``permissions``), or a preset named by ``preset`` (or the
    older ``role`` field) when none is ticked: (permissions, error)."""
    ticked = form.getlist("permissions")
    unknown = [p for p in ticked if p not in security.PERMISSIONS]
    if unknown:
        return None, "Choose permissions from the list."
    preset = (form.get("preset") or form.get("role") or "").strip()
    if not ticked and preset:
        if preset not in security.PRESETS:
            return None, "Choose a preset from the list, or tick the permissions."
        return security.normalize(security.PRESETS[preset]), None
    return security.normalize(ticked), None


def _page(errors=None, form=None, status=200):
    return render("users/index.html", None, users=_users(), presets=security.PRESETS,
                  permissions=security.PERMISSIONS, descriptions=security.DESCRIPTIONS,
                  errors=errors or {}, form=form or {"permissions": []}), status


@bp.route("/", methods=["GET", "POST"])
@security.require_permission(security.MANAGE_USERS)
def index():
    if request.method != "POST":
        return _page()
    errors = {}
    form = {k: (request.form.get(k) or "").strip() for k in ("name", "email")}
    password = request.form.get("password") or ""
    form["email"] = form["email"].lower()
    perms, perm_error = permissions_from_form(request.form)
    form["permissions"] = perms if perms is not None else []
    if not form["name"]:
        errors["name"] = "Enter the person's name."
    else:
        field_problem(errors, "name", form["name"], limit_of(User.name), "The name")
    if field_problem(errors, "email", form["email"], EMAIL_MAX, "The email address"):
        pass  # the message is at the field
    elif not EMAIL.match(form["email"]):
        errors["email"] = "Enter a valid email address."
    elif scoped(User).where(User.email == form["email"]).exists():
        # only this district's accounts: another district's are none of its business
        errors["email"] = "An account with this email already exists."
    if perm_error:
        errors["permissions"] = perm_error
    if len(password) < 10:
        errors["password"] = "Use a temporary password of at least 10 characters."
    elif len(password) > PASSWORD_MAX:
        errors["password"] = f"Use a temporary password of at most {PASSWORD_MAX:,} characters."
    if errors:
        return _page(errors, form, 422)
    try:
        with database.atomic():
            user = User.create(organization=current_user.organization_id, name=form["name"], email=form["email"],
                               permissions=perms, password_hash=generate_password_hash(password))
            audit("user.create", "User", user.id, email=user.email, permissions=user.permissions, preset=user.role)
    except IntegrityError:  # created meanwhile (a second click, another admin)
        return _page({"email": "An account with this email already exists."}, form, 422)
    granted = ", ".join(user.permissions) if user.permissions else "no permission yet"
    flash(f"Created {user.name} ({granted}).", "success")
    return redirect(url_for("users.index"))


@bp.route("/<user_id>", methods=["POST"])
@security.require_permission(security.MANAGE_USERS)
def update(user_id):
    user = get_scoped_or_404(User, user_id)
    action = request.form.get("action")
    if user.id == current_user.id and action in ("deactivate", "role", "permissions"):
        flash("You cannot change your own permissions or deactivate yourself.", "error")
        return redirect(url_for("users.index"))
    if action in ("permissions", "role"):
        perms, error = permissions_from_form(request.form)
        if error:
            flash(error, "error")
            return redirect(url_for("users.index"))
        user.permissions = perms
        user.role = ""  # save() names the preset the permissions equal
        label = security.preset_of(perms)
        msg = (f"{user.name} now has: {', '.join(perms)}" if perms else f"{user.name} now has no permission") + \
            (f" ({label})." if label else ".")
        action = "permissions"
    elif action == "deactivate":
        user.active = False
        msg = f"{user.name} is deactivated and can no longer sign in."
    elif action == "activate":
        user.active = True
        msg = f"{user.name} is active again."
    else:
        flash("Unknown action.", "error")
        return redirect(url_for("users.index"))
    with database.atomic():
        user.save()
        audit(f"user.{action}", "User", user.id, permissions=user.permissions, preset=user.role, active=user.active)
    flash(msg, "success")
    return redirect(url_for("users.index"))
