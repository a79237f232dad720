"""Settings > Sync Service > Sync Service Login: one card per connection, Add Sync
Connection (choose the SIS type, then its settings form), Edit, and Test Connection.
Sync Service Full Access; everything scoped to the signed-in user's organization."""
from __future__ import annotations

import logging

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .. import security
from ..adapters import AdapterError, CheckResult
from ..db import database
from ..models import School, SyncConnection, utcnow
from ..redaction import log_unexpected, scrub
from ..security import secret_box
from ..sync.connections import (ENVIRONMENTS, SettingsError, adapter_classes, adapter_label, create_connection,
                                link_partners, open_adapter, safe_secret_values, update_connection)
from . import audit, get_scoped_or_404, is_htmx, org_id, render, scoped
from .errors import SIS_FAILURE as GENERIC_FAILURE

log = logging.getLogger("enroll_sync.web.connections")

bp = Blueprint("connections", __name__, url_prefix="/settings/sync-service")



need = security.require_permission(security.SYNC_FULL_ACCESS)


def _card(conn, details=None) -> dict:
    schools = list(scoped(School).where(School.sync_connection == conn.id).order_by(School.name))
    return {"conn": conn, "label": adapter_label(conn.adapter), "schools": schools, "details": details or {},
            "environment": dict(ENVIRONMENTS).get(conn.environment, conn.environment)}


@bp.route("/")
@need
def connections():
    conns = list(scoped(SyncConnection).order_by(SyncConnection.name, SyncConnection.id))
    return render("connections/connections.html", "connection-list", cards=[_card(c) for c in conns],
                  adapters=adapter_classes())


@bp.route("/<connection_id>/test", methods=["POST"])
@need
def test_connection(connection_id):
    conn = get_scoped_or_404(SyncConnection, connection_id)
    details = {}
    secrets = safe_secret_values(conn)
    try:
        secret_box().open(conn.secrets)
        result = open_adapter(conn).check_connection()
        if not isinstance(result, CheckResult):
            raise TypeError(f"check_connection returned {type(result).__name__}, not CheckResult")
        ok, message = bool(result.ok), str(result.message or ("Connected." if result.ok else "The check failed."))
        details = {str(k): str(v) for k, v in (result.details or {}).items()}
    except AdapterError as exc:
        ok, message = False, str(exc)
    except ValueError as exc:  # raised by the secret box with a plain message
        if "ENCRYPTION_KEY" in str(exc):
            ok, message = False, str(exc)
        else:
            log_unexpected(log, "Test Connection", conn, exc, safe_secret_values(conn))
            ok, message = False, GENERIC_FAILURE
    except Exception as exc:
        log_unexpected(log, "Test Connection", conn, exc, safe_secret_values(conn))
        ok, message = False, GENERIC_FAILURE
    message = scrub(message, secrets)
    details = scrub(details, secrets)
    conn.last_check_at, conn.last_check_ok, conn.last_check_message = utcnow(), ok, message
    with database.atomic():
        SyncConnection.update(last_check_at=conn.last_check_at, last_check_ok=ok, last_check_message=message).where(
            SyncConnection.id == conn.id).execute()
        audit("connection.test", "SyncConnection", conn.id, ok=ok)
    if is_htmx():
        return render_template("connections/_card.html", card=_card(conn, details))
    flash(f"{conn.name}: {message}", "success" if ok else "error")
    return redirect(url_for("connections.connections"))


#: the largest file accepted in place of a text setting (an OpenAPI document, say)
UPLOAD_LIMIT = 5 * 1024 * 1024


UPLOAD_SUFFIX = "__file"


def _settings_submitted(form, files=None) -> tuple[dict, dict]:
    """The settings as typed (``s_<key>``), with the text of a file chosen for a text
    setting (``s_<key>__file``) in place of what its box holds. Returns (values, errors)."""
    values = {k[len("s_"):]: form.get(k) for k in form.keys() if k.startswith("s_")}
    errors = {}
    for field_name in (files.keys() if files else ()):
        if not (field_name.startswith("s_") and field_name.endswith(UPLOAD_SUFFIX)):
            continue
        upload = files.get(field_name)
        if not upload or not upload.filename:
            continue
        key = field_name[len("s_"):-len(UPLOAD_SUFFIX)]
        data = upload.read(UPLOAD_LIMIT + 1)
        if len(data) > UPLOAD_LIMIT:
            errors[key] = f"{upload.filename} is larger than {UPLOAD_LIMIT // (1024 * 1024)} MB."
            continue
        try:
            values[key] = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            errors[key] = f"{upload.filename} is not a text file (UTF-8)."
    return values, errors


@bp.route("/new")
@need
def new_connection():
    return render("connections/choose_adapter.html", None, adapters=adapter_classes(), error=None)


@bp.route("/new/<adapter>", methods=["GET", "POST"])
@need
def new_connection_settings(adapter):
    classes = adapter_classes()
    cls = classes.get(adapter)
    if cls is None:
        return render("connections/choose_adapter.html", None, adapters=classes,
                      error=f"The SIS adapter “{adapter}” is not installed. Choose one of the SIS types below."), 404
    errors, values = {}, {}
    name, environment = "", "sandbox"
    if request.method == "POST":
        name = request.form.get("name", "")
        environment = request.form.get("environment", "")
        shares = request.form.get("shares_links_with", "")
        values, upload_errors = _settings_submitted(request.form, request.files)
        try:
            if upload_errors:
                raise SettingsError(upload_errors)
            with database.atomic():
                conn = create_connection(current_user.organization, adapter, name, environment, values,
                                         shares_links_with=shares)
                audit("connection.create", "SyncConnection", conn.id, adapter=adapter, name=conn.name,
                      environment=conn.environment, settings=conn.settings)
        except SettingsError as exc:
            errors = exc.errors
        except AdapterError as exc:
            errors = {"_": str(exc)}
        else:
            flash(f"Added {conn.name}. Test the connection, then Configure Mapping.", "success")
            return redirect(url_for("connections.connections"))
    schema = cls.settings_schema()
    if request.method == "GET":
        values = {f.key: f.default for f in schema if not f.secret and f.default is not None}
    return render("connections/connection_form.html", None, cls=cls, schema=schema, values=values,
                  stored_secrets=set(), errors=errors, name=name, environment=environment,
                  environments=ENVIRONMENTS, conn=None, shares=shares if request.method == "POST" else "",
                  partners=link_partners(org_id(), adapter)), (422 if errors else 200)


@bp.route("/<connection_id>/edit", methods=["GET", "POST"])
@need
def edit_connection(connection_id):
    conn = get_scoped_or_404(SyncConnection, connection_id)
    cls = adapter_classes().get(conn.adapter)
    if cls is None:
        flash(f"The SIS adapter “{conn.adapter}” of {conn.name} is not installed, so its settings cannot be edited.",
              "error")
        return redirect(url_for("connections.connections"))
    schema = cls.settings_schema()
    try:
        stored = set(secret_box().open(conn.secrets))
    except ValueError:
        stored = set()
    errors = {}
    name, environment, values = conn.name, conn.environment, dict(conn.settings or {})
    shares = str(conn.shares_links_with_id or "")
    if request.method == "POST":
        name = request.form.get("name", "")
        environment = request.form.get("environment", "")
        shares = request.form.get("shares_links_with", "")
        values, upload_errors = _settings_submitted(request.form, request.files)
        changed_secrets = sorted(f.key for f in schema if f.secret and values.get(f.key))
        try:
            if upload_errors:
                raise SettingsError(upload_errors)
            with database.atomic():
                update_connection(conn, name, environment, values, shares_links_with=shares)
                audit("connection.update", "SyncConnection", conn.id, name=conn.name, environment=conn.environment,
                      settings=conn.settings, secrets_changed=changed_secrets,
                      shares_links_with=conn.shares_links_with_id)
        except SettingsError as exc:
            errors = exc.errors
        except (AdapterError, ValueError) as exc:
            errors = {"_": str(exc)}
        else:
            flash(f"Saved {conn.name}.", "success")
            return redirect(url_for("connections.connections"))
    return render("connections/connection_form.html", None, cls=cls, schema=schema, values=values,
                  stored_secrets=stored, errors=errors, name=name, environment=environment,
                  environments=ENVIRONMENTS, conn=conn, shares=shares,
                  partners=link_partners(org_id(), conn.adapter, conn)), (422 if errors else 200)
