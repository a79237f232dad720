"""Settings > Users (Manage Users): create, set role, deactivate."""
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


@bp.route("/", methods=["GET", "POST"])
@security.require_permission(security.MANAGE_USERS)
def index():
    errors = {}
    form = {}
    if request.method == "POST":
        form = {k: (request.form.get(k) or "").strip() for k in ("name", "email", "role")}
        password = request.form.get("password") or ""
        form["email"] = form["email"].lower()
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
        if form["role"] not in security.ROLES:
            errors["role"] = "Choose a role."
        if len(password) < 10:
            errors["password"] = "Use a temporary password of at least 10 characters."
        elif len(password) > PASSWORD_MAX:
            errors["password"] = f"Use a temporary password of at most {PASSWORD_MAX:,} characters."
        if not errors:
            try:
                with database.atomic():
                    user = User.create(organization=current_user.organization_id, name=form["name"],
                                       email=form["email"], role=form["role"],
                                       password_hash=generate_password_hash(password))
                    audit("user.create", "User", user.id, email=user.email, role=user.role)
            except IntegrityError:  # created meanwhile (a second click, another admin)
                errors["email"] = "An account with this email already exists."
            else:
                flash(f"Created {user.name} ({user.role}).", "success")
                return redirect(url_for("users.index"))
    return render("users/index.html", None, users=_users(), roles=security.ROLES, errors=errors, form=form), (422 if errors else 200)


@bp.route("/<user_id>", methods=["POST"])
@security.require_permission(security.MANAGE_USERS)
def update(user_id):
    user = get_scoped_or_404(User, user_id)
    action = request.form.get("action")
    if user.id == current_user.id and action in ("deactivate", "role"):
        flash("You cannot change your own role or deactivate yourself.", "error")
        return redirect(url_for("users.index"))
    if action == "role":
        role = request.form.get("role")
        if role not in security.ROLES:
            flash("Choose a role.", "error")
            return redirect(url_for("users.index"))
        user.role = role
        msg = f"{user.name} is now {role}."
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
        audit(f"user.{action}", "User", user.id, role=user.role, active=user.active)
    flash(msg, "success")
    return redirect(url_for("users.index"))
