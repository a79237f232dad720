"""Named permissions, the presets that grant them, the permission decorator and
secrets at rest.

A user holds a set of named permissions (``User.permissions``), granted one by one
under Settings > Users. The four roles a district knows (District Admin, Sync Admin,
Registrar, Viewer) are only presets: a name for a set of permissions, applied when an
admin invites or edits someone. Nothing checks a role name.

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
MANAGE_DISTRICT = "Manage District Settings"
#: every permission, in the order the Users page lists them
PERMISSIONS = (VIEW_REGISTRATIONS, EDIT_REGISTRATIONS, SYNC_FULL_ACCESS, MANAGE_SCHOOLS, MANAGE_USERS,
               MANAGE_DISTRICT)

#: what each permission lets a person do (shown beside its checkbox)
DESCRIPTIONS = {
    VIEW_REGISTRATIONS: "See registrations, their Sync Status and history, Sync Logs and every sync job "
                        "(read-only); the dashboard.",
    EDIT_REGISTRATIONS: "With View Registrations: Bulk Actions > Sync to SIS, Proceed with Sync, Retry failed, "
                        "Cancel sync.",
    SYNC_FULL_ACCESS: "Sync Service: add and edit connections, Configure Mapping, Send Record, unlink SIS IDs, "
                      "approve a held sync.",
    MANAGE_SCHOOLS: "Schools/Programs: edit schools and assign their sync connection.",
    MANAGE_USERS: "Users: invite people, grant and remove permissions, deactivate accounts.",
    MANAGE_DISTRICT: "District: the Registration module switch and the limit that holds a large sync.",
}

#: the four roles of the walkthrough, as presets (name -> permissions); least first
PRESETS = {
    "Viewer": frozenset({VIEW_REGISTRATIONS}),
    "Registrar": frozenset({VIEW_REGISTRATIONS, EDIT_REGISTRATIONS}),
    "Sync Admin": frozenset({SYNC_FULL_ACCESS, VIEW_REGISTRATIONS}),
    "District Admin": frozenset(PERMISSIONS),
}
#: the old name of PRESETS (kept for callers written before named permissions)
ROLES = PRESETS
#: what a user whose permissions match no preset is called
CUSTOM = "Custom"


def normalize(permissions) -> list[str]:
    """Known permission names only, once each, in ``PERMISSIONS`` order."""
    given = set(permissions or ())
    return [p for p in PERMISSIONS if p in given]


def preset_of(permissions) -> str | None:
    """The name of the preset that grants exactly ``permissions`` (None: none does)."""
    given = frozenset(normalize(permissions))
    return next((name for name, perms in PRESETS.items() if perms == given), None)


def missing_message(missing) -> str:
    names = " + ".join(missing)
    plural = "s" if len(missing) > 1 else ""
    return (f"This needs the {names} permission{plural}, which you do not have. Ask a district admin to "
            f"grant it under Settings > Users.")


def require_permission(*permissions: str):
    """Route decorator: signed in, active, and holding every one of ``permissions``."""
    unknown = [p for p in permissions if p not in PERMISSIONS]
    assert not unknown, f"unknown permission(s) {unknown}"

    def decorator(view):
        @functools.wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            missing = [p for p in permissions if not current_user.can(p)]
            if missing:
                abort(403, description=missing_message(missing))
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
