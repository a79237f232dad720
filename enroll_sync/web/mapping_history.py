"""Configure Mapping > History: every saved version of a connection's mapping, what
each changed, Download and Restore; and Import of a mapping downloaded from another
connection of the same SIS type (Sandbox to Production). Sync Service Full Access."""
from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, abort, flash, redirect, request, url_for
from flask_login import current_user

from ..adapters import AdapterError
from ..connections import target_sections
from ..db import database
from ..ids import parse_id
from ..mapping.engine import flatten_targets
from ..mapping_versions import (MAX_DOCUMENT_BYTES, MappingImportError, document, get_version, history,
                                read_document, save_rows)
from ..models import User
from ..sync.redact import scrub
from ..test_record import load_mapping
from . import audit, render
from .sync_service import _adapter_label, _conn, _kind, _layout, _secrets, need

log = logging.getLogger("enroll_sync.web.mapping_history")

bp = Blueprint("mapping_history", __name__, url_prefix="/settings/sync-service")


def _download(payload: dict, filename: str) -> Response:
    resp = Response(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", mimetype="application/json")
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _filename(conn, kind, version) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in conn.name).strip("-").lower() or "connection"
    return f"{safe}-{kind.replace('_', '-')}-v{version}.json"


@bp.route("/<connection_id>/mapping/<kind>/history")
@need
def index(connection_id, kind, import_error=None, status=200):
    conn, kind = _conn(connection_id), _kind(kind)
    mapping = load_mapping(conn, kind)
    entries = history(mapping)
    users = {u.id: u.name for u in User.select(User.id, User.name).where(
        User.id.in_([e.version.saved_by_id for e in entries if e.version.saved_by_id]))} if entries else {}
    return render("sync_service/history.html", None, entries=entries, users=users, mapping=mapping,
                  import_error=import_error, max_mb=MAX_DOCUMENT_BYTES // (1024 * 1024),
                  **_layout(conn, kind, "history")), status


@bp.route("/<connection_id>/mapping/<kind>/history/<version>.json")
@need
def download(connection_id, kind, version):
    conn, kind = _conn(connection_id), _kind(kind)
    kept = get_version(load_mapping(conn, kind), parse_id(version) or -1)
    if kept is None:
        abort(404)
    return _download(document(conn, kind, kept.rows or [], kept.version), _filename(conn, kind, kept.version))


@bp.route("/<connection_id>/mapping/<kind>/history/<version>/restore", methods=["POST"])
@need
def restore(connection_id, kind, version):
    conn, kind = _conn(connection_id), _kind(kind)
    mapping = load_mapping(conn, kind)
    kept = get_version(mapping, parse_id(version) or -1)
    if kept is None:
        abort(404)
    with database.atomic():
        mapping, changed = save_rows(conn, kind, mapping, list(kept.rows or []), current_user.id,
                                     note=f"Restored version {kept.version}")
        if changed:
            audit("mapping.restore", "Mapping", mapping.id, connection=conn.id, kind=kind,
                  restored=kept.version, version=mapping.version)
    if changed:
        flash(f"Restored version {kept.version} as version {mapping.version}.", "success")
    else:
        flash(f"Version {kept.version} is what the mapping already holds; nothing changed.", "info")
    return redirect(url_for("mapping_history.index", connection_id=conn.id, kind=kind))


@bp.route("/<connection_id>/mapping/<kind>/import", methods=["POST"])
@need
def import_mapping(connection_id, kind):
    conn, kind = _conn(connection_id), _kind(kind)
    upload = request.files.get("mapping_file")
    if upload is None or not upload.filename:
        return index(connection_id, kind, import_error="Choose a mapping file (.json) to import.", status=422)
    try:
        imported = read_document(upload.read(MAX_DOCUMENT_BYTES + 1), conn, kind,
                                 lambda: set(flatten_targets(target_sections(conn))), _adapter_label(conn.adapter))
    except MappingImportError as exc:
        return index(connection_id, kind, import_error=str(exc), status=422)
    except Exception as exc:  # the SIS's fields decide which rows fit; without them nothing is imported
        message = str(exc) if isinstance(exc, (AdapterError, ValueError)) else "see the log"
        if not isinstance(exc, (AdapterError, ValueError)):
            log.exception("reading the fields of connection %s for an import failed", conn.id)
        return index(connection_id, kind, status=502, import_error=(
            f"The SIS's fields could not be read, so nothing was imported: {scrub(message, _secrets(conn))}"))
    mapping = load_mapping(conn, kind)
    with database.atomic():
        mapping, changed = save_rows(conn, kind, mapping, imported.rows, current_user.id,
                                     note=f"Imported from {imported.source}"[:250])
        if changed:
            audit("mapping.import", "Mapping", mapping.id, connection=conn.id, kind=kind, version=mapping.version,
                  source=imported.source, left_out=imported.unknown_fields)
    message = (f"Imported {len(imported.rows)} row(s) from {imported.source} as version {mapping.version}."
               if changed else f"The mapping from {imported.source} is what this mapping already holds; "
                               f"nothing changed.")
    if imported.unknown_fields:
        message += (f" Left out {len(imported.unknown_fields)} row(s) for fields {conn.name} does not have: "
                    f"{', '.join(imported.unknown_fields)}.")
    if imported.unreadable:
        message += f" {imported.unreadable} row(s) could not be read and were left out."
    flash(message, "success" if changed else "info")
    return redirect(url_for("mapping_history.index", connection_id=conn.id, kind=kind))
