"""Roles, permissions, the permission decorator and secrets at rest.

Permissions are checked on the server for every route and every HTMX partial with
``@require_permission(...)``; templates hide buttons with ``current_user.can(...)``
only as a courtesy.
"""
from __future__ import annotations

import functools
import json

from cryptography.fernet import Fernet, InvalidToken
from flask import abort, current_app
from flask_login import current_user, login_required

from . import redaction

SYNC_FULL_ACCESS = "Sync Service Full Access"
VIEW_REGISTRATIONS = "View Registrations"
EDIT_REGISTRATIONS = "Edit Registrations"
MANAGE_SCHOOLS = "Manage Schools"
MANAGE_USERS = "Manage Users"
PERMISSIONS = (SYNC_FULL_ACCESS, VIEW_REGISTRATIONS, EDIT_REGISTRATIONS, MANAGE_SCHOOLS, MANAGE_USERS)

ROLES = {
    "District Admin": frozenset(PERMISSIONS),
    "Sync Admin": frozenset({SYNC_FULL_ACCESS, VIEW_REGISTRATIONS}),
    "Registrar": frozenset({VIEW_REGISTRATIONS, EDIT_REGISTRATIONS}),
    "Viewer": frozenset({VIEW_REGISTRATIONS}),
}


def role_permissions(role: str) -> frozenset:
    return ROLES.get(role, frozenset())


def require_permission(*permissions: str):
    """Route decorator: signed in, active, and holding every one of ``permissions``."""

    def decorator(view):
        @functools.wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not all(current_user.can(p) for p in permissions):
                abort(403)
            return view(*args, **kwargs)

        wrapped.required_permissions = permissions
        return wrapped

    return decorator


# --------------------------------------------------------------------------- secrets at rest

class SecretBox:
    """Fernet encryption of a connection's secret settings."""

    def __init__(self, key: str):
        self._fernet = Fernet(key.encode() if isinstance(key, str) else key)

    def seal(self, values: dict) -> str:
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, token: str) -> dict:
        if not token:
            return {}
        try:
            values = json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise ValueError("The stored connection secrets cannot be decrypted with this ENROLL_SYNC_ENCRYPTION_KEY.") from exc
        redaction.remember(values.values() if isinstance(values, dict) else ())
        return values


def secret_box(app=None) -> SecretBox:
    app = app or current_app
    box = app.extensions.get("enroll_sync.secrets")
    if box is None:
        box = app.extensions["enroll_sync.secrets"] = SecretBox(app.config["ENCRYPTION_KEY"])
    return box
