"""Configure Mapping: everything under Settings > Sync Service > a connection's
mappings, one blueprint in several modules:

- ``editor``: the mapping kinds (left sidebar), the Configure and Field Mapping tabs,
  the row partial and Refresh fields;
- ``form``: the Field Mapping form's state and what each row shows;
- ``send_record``: Send Record's preview and "OK, Continue";
- ``history``: versions, Download, Restore and Import.

The helpers below are what those modules share. Sync Service Full Access;
everything scoped to the signed-in user's organization.
"""
from __future__ import annotations

import logging
import time

from flask import Blueprint, abort, current_app, make_response
from flask_login import current_user

from ... import security
from ...adapters import AdapterError
from ...models import SyncConnection
from ...redaction import log_unexpected, scrub
from ...sync import mappings
from ...sync.connections import adapter_label, safe_secret_values
from ...sync.send_record import REGISTRATION_MODULE_NOTE
from .. import get_scoped_or_404
from ..errors import SIS_FAILURE as GENERIC_FAILURE

log = logging.getLogger("enroll_sync.web.mapping")

bp = Blueprint("mapping", __name__, url_prefix="/settings/sync-service")


#: after the SIS's field list could not be read, the editor's pages and partials reuse
#: that answer this long instead of waiting for the SIS again (Refresh fields always asks)
FIELD_FAILURE_TTL = 30.0

need = security.require_permission(security.SYNC_FULL_ACCESS)


def get_connection(connection_id) -> SyncConnection:
    return get_scoped_or_404(SyncConnection, connection_id)


def get_kind(kind: str) -> str:
    """``kind`` when it is a mapping kind, else 404."""
    if mappings.get_kind(kind) is None:
        abort(404)
    return kind


def layout(conn, kind=None, tab=None) -> dict:
    """What every Configure Mapping page shows around its tab."""
    return {"conn": conn, "kind": kind, "tab": tab, "kinds": {k: v.label for k, v in mappings.KINDS.items()},
            "kind_label": mappings.KINDS[kind].label if kind else None,
            "exports_allowed": current_user.organization.uses_registration_module,
            "module_note": REGISTRATION_MODULE_NOTE, "adapter_label": adapter_label(conn.adapter)}


def field_sections(conn, refresh: bool = False, kind: str = mappings.EXPORT_STUDENT):
    """(the SIS's field sections of ``kind``, an error message for the admin or None)."""
    failures = current_app.extensions.setdefault("enroll_sync.field_failures", {})
    stamp = (conn.id, kind, conn.updated_at)
    if not refresh and not conn.fields_cache:
        known = failures.get(stamp)
        if known and time.monotonic() - known[0] < FIELD_FAILURE_TTL:
            return [], known[1]
    try:
        sections = mappings.KINDS[kind].targets(conn, refresh=refresh)
    except AdapterError as exc:
        message = scrub(str(exc), safe_secret_values(conn))
    except ValueError as exc:  # e.g. secrets that cannot be decrypted with this key
        message = str(exc)
    except Exception as exc:
        log_unexpected(log, "Reading the SIS's fields", conn, exc, safe_secret_values(conn))
        message = GENERIC_FAILURE
    else:
        failures.pop(stamp, None)
        return sections, None
    failures[stamp] = (time.monotonic(), message)
    return [], message


def no_store(resp):
    resp = make_response(resp)
    resp.headers["Cache-Control"] = "no-store"
    return resp


from . import editor, history, send_record  # noqa: E402,F401  (their routes register on bp)
