"""Configure Mapping > History: every saved version of a connection's mapping, what
each changed, Download and Restore; and Import of a mapping downloaded from another
connection of the same SIS type (Sandbox to Production). Sync Service Full Access."""
from __future__ import annotations

import json
import logging

from flask import Response, abort, flash, redirect, request, url_for
from flask_login import current_user

from ...adapters import AdapterError
from ...ids import parse_id
from ...db import database
from ...mapping.engine import flatten_targets
from ...models import User
from ...redaction import scrub
from ...sync import mappings
from ...sync.connections import adapter_label, safe_secret_values
from ...sync.mappings.versions import (MAX_DOCUMENT_BYTES, MappingImportError, document, get_version, history,
                                       read_document, save_rows)
from .. import audit, render
from . import bp, get_connection, get_kind, layout, need

log = logging.getLogger("enroll_sync.web.mapping_history")



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
def history_page(connection_id, kind, import_error=None, status=200):
    conn, kind = get_connection(connection_id), get_kind(kind)
    mapping = mappings.load(conn, kind)
    entries = history(mapping)
    users = {u.id: u.name for u in User.select(User.id, User.name).where(
        User.id.in_([e.version.saved_by_id for e in entries if e.version.saved_by_id]))} if entries else {}
    return render("mapping/history.html", None, entries=entries, users=users, mapping=mapping,
                  import_error=import_error, max_mb=MAX_DOCUMENT_BYTES // (1024 * 1024),
                  **layout(conn, kind, "history")), status


@bp.route("/<connection_id>/mapping/<kind>/history/<version>.json")
@need
def download_version(connection_id, kind, version):
    conn, kind = get_connection(connection_id), get_kind(kind)
    kept = get_version(mappings.load(conn, kind), parse_id(version) or -1)
    if kept is None:
        abort(404)
    return _download(document(conn, kind, kept.rows or [], kept.version), _filename(conn, kind, kept.version))


@bp.route("/<connection_id>/mapping/<kind>/history/<version>/restore", methods=["POST"])
@need
def restore_version(connection_id, kind, version):
    conn, kind = get_connection(connection_id), get_kind(kind)
    mapping = mappings.load(conn, kind)
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
    return redirect(url_for("mapping.history_page", connection_id=conn.id, kind=kind))


@bp.route("/<connection_id>/mapping/<kind>/import", methods=["POST"])
@need
def import_mapping(connection_id, kind):
    conn, kind = get_connection(connection_id), get_kind(kind)
    upload = request.files.get("mapping_file")
    if upload is None or not upload.filename:
        return history_page(connection_id, kind, import_error="Choose a mapping file (.json) to import.", status=422)
    try:
        imported = read_document(upload.read(MAX_DOCUMENT_BYTES + 1), conn, kind,
                                 lambda: set(flatten_targets(mappings.KINDS[kind].targets(conn))), adapter_label(conn.adapter))
    except MappingImportError as exc:
        return history_page(connection_id, kind, import_error=str(exc), status=422)
    except Exception as exc:  # the SIS's fields decide which rows fit; without them nothing is imported
        message = str(exc) if isinstance(exc, (AdapterError, ValueError)) else "see the log"
        if not isinstance(exc, (AdapterError, ValueError)):
            log.exception("reading the fields of connection %s for an import failed", conn.id)
        return history_page(connection_id, kind, status=502, import_error=(
            f"The SIS's fields could not be read, so nothing was imported: {scrub(message, safe_secret_values(conn))}"))
    mapping = mappings.load(conn, kind)
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
    return redirect(url_for("mapping.history_page", connection_id=conn.id, kind=kind))
