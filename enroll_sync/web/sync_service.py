"""Settings > Sync Service: the Sync Service Login page (one card per connection),
Add Sync Connection / Edit, Test Connection, and Configure Mapping > Export Student
Mapping with its Configure and Field Mapping tabs and Send Record.

Every view needs Sync Service Full Access and reads only the signed-in user's
organization. The Field Mapping form holds the mapping being edited until Save;
its rows re-render through ``mapping_row`` (an HTMX partial) when a cell changes.
See ``mapping_ui`` for the form's names and ``enroll_sync.test_record`` for Send
Record.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback

from flask import (Blueprint, abort, current_app, flash, make_response, redirect, render_template, request,
                   url_for)
from flask_login import current_user

from .. import security
from ..app import error_response
from ..adapters import AdapterError, CheckResult
from ..catalog import source_values
from ..connections import (ENVIRONMENTS, SettingsError, adapter_classes, create_connection, open_adapter,
                           secret_values, target_sections, update_connection)
from ..db import database
from ..ids import parse_id
from ..mapping_versions import canonical, save_rows
from ..mapping.codes import UNMATCHED_POLICIES
from ..mapping.engine import MAPPING_TYPES, compile_mapping
from ..models import Mapping, Registration, School, SyncConnection, utcnow
from ..security import secret_box
from ..sync.redact import scrub
from ..test_record import (EXPORT_STUDENT, REGISTRATION_MODULE_NOTE, PreviewChanged, TestRecordError,
                           load_mapping, preview_test_record, send_test_record)
from . import audit, get_scoped_or_404, is_htmx, org_id, render, scoped
from . import mapping_ui as ui

log = logging.getLogger("enroll_sync.web.sync_service")

bp = Blueprint("sync_service", __name__, url_prefix="/settings/sync-service")

#: mappings a connection has (the left sidebar); only exports for now
MAPPING_KINDS = {EXPORT_STUDENT: "Export Student Mapping"}
GENERIC_FAILURE = "Something went wrong while talking to the SIS. The error was logged for your administrator."

need = security.require_permission(security.SYNC_FULL_ACCESS)


# --------------------------------------------------------------------------- helpers

def _conn(connection_id) -> SyncConnection:
    return get_scoped_or_404(SyncConnection, connection_id)


def _kind(kind: str) -> str:
    if kind not in MAPPING_KINDS:
        abort(404)
    return kind


def _secrets(conn) -> list[str]:
    try:
        return secret_values(conn)
    except Exception:  # undecryptable secrets: nothing to redact, and nothing to show either
        return []


def _log_unexpected(what: str, conn, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    log.error("%s for connection %s (%s) failed unexpectedly:\n%s", what, conn.id, conn.adapter,
              scrub(text, _secrets(conn)))


def _adapter_label(name: str) -> str:
    cls = adapter_classes().get(name)
    return (cls.label or cls.name) if cls else f"{name} (not installed)"


#: after the SIS's field list could not be read, the editor's pages and partials reuse
#: that answer this long instead of waiting for the SIS again (Refresh fields always asks)
FIELD_FAILURE_TTL = 30.0


def _sections(conn, refresh: bool = False):
    """(the SIS's field sections, an error message for the admin or None)."""
    failures = current_app.extensions.setdefault("enroll_sync.field_failures", {})
    stamp = (conn.id, conn.updated_at)
    if not refresh and not conn.fields_cache:
        known = failures.get(stamp)
        if known and time.monotonic() - known[0] < FIELD_FAILURE_TTL:
            return [], known[1]
    try:
        sections = target_sections(conn, refresh=refresh)
    except AdapterError as exc:
        message = scrub(str(exc), _secrets(conn))
    except ValueError as exc:  # e.g. secrets that cannot be decrypted with this key
        message = str(exc)
    except Exception as exc:
        _log_unexpected("Reading the SIS's fields", conn, exc)
        message = GENERIC_FAILURE
    else:
        failures.pop(stamp, None)
        return sections, None
    failures[stamp] = (time.monotonic(), message)
    return [], message


def _card(conn, details=None) -> dict:
    schools = list(scoped(School).where(School.sync_connection == conn.id).order_by(School.name))
    return {"conn": conn, "label": _adapter_label(conn.adapter), "schools": schools, "details": details or {},
            "environment": dict(ENVIRONMENTS).get(conn.environment, conn.environment)}


def _no_store(resp):
    resp = make_response(resp)
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- Sync Service Login

@bp.route("/")
@need
def connections():
    conns = list(scoped(SyncConnection).order_by(SyncConnection.name, SyncConnection.id))
    return render("sync_service/connections.html", "connection-list", cards=[_card(c) for c in conns],
                  adapters=adapter_classes())


@bp.route("/<connection_id>/test", methods=["POST"])
@need
def test_connection(connection_id):
    conn = _conn(connection_id)
    details = {}
    secrets = _secrets(conn)
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
            _log_unexpected("Test Connection", conn, exc)
            ok, message = False, GENERIC_FAILURE
    except Exception as exc:
        _log_unexpected("Test Connection", conn, exc)
        ok, message = False, GENERIC_FAILURE
    message = scrub(message, secrets)
    details = scrub(details, secrets)
    conn.last_check_at, conn.last_check_ok, conn.last_check_message = utcnow(), ok, message
    with database.atomic():
        SyncConnection.update(last_check_at=conn.last_check_at, last_check_ok=ok, last_check_message=message).where(
            SyncConnection.id == conn.id).execute()
        audit("connection.test", "SyncConnection", conn.id, ok=ok)
    if is_htmx():
        return render_template("sync_service/_card.html", card=_card(conn, details))
    flash(f"{conn.name}: {message}", "success" if ok else "error")
    return redirect(url_for("sync_service.connections"))


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
    return render("sync_service/choose_adapter.html", None, adapters=adapter_classes(), error=None)


@bp.route("/new/<adapter>", methods=["GET", "POST"])
@need
def new_connection_settings(adapter):
    classes = adapter_classes()
    cls = classes.get(adapter)
    if cls is None:
        return render("sync_service/choose_adapter.html", None, adapters=classes,
                      error=f"The SIS adapter “{adapter}” is not installed. Choose one of the SIS types below."), 404
    errors, values = {}, {}
    name, environment = "", "sandbox"
    if request.method == "POST":
        name = request.form.get("name", "")
        environment = request.form.get("environment", "")
        values, upload_errors = _settings_submitted(request.form, request.files)
        try:
            if upload_errors:
                raise SettingsError(upload_errors)
            with database.atomic():
                conn = create_connection(current_user.organization, adapter, name, environment, values)
                audit("connection.create", "SyncConnection", conn.id, adapter=adapter, name=conn.name,
                      environment=conn.environment, settings=conn.settings)
        except SettingsError as exc:
            errors = exc.errors
        except AdapterError as exc:
            errors = {"_": str(exc)}
        else:
            flash(f"Added {conn.name}. Test the connection, then Configure Mapping.", "success")
            return redirect(url_for("sync_service.connections"))
    schema = cls.settings_schema()
    if request.method == "GET":
        values = {f.key: f.default for f in schema if not f.secret and f.default is not None}
    return render("sync_service/connection_form.html", None, cls=cls, schema=schema, values=values,
                  stored_secrets=set(), errors=errors, name=name, environment=environment,
                  environments=ENVIRONMENTS, conn=None), (422 if errors else 200)


@bp.route("/<connection_id>/edit", methods=["GET", "POST"])
@need
def edit_connection(connection_id):
    conn = _conn(connection_id)
    cls = adapter_classes().get(conn.adapter)
    if cls is None:
        flash(f"The SIS adapter “{conn.adapter}” of {conn.name} is not installed, so its settings cannot be edited.",
              "error")
        return redirect(url_for("sync_service.connections"))
    schema = cls.settings_schema()
    try:
        stored = set(secret_box().open(conn.secrets))
    except ValueError:
        stored = set()
    errors = {}
    name, environment, values = conn.name, conn.environment, dict(conn.settings or {})
    if request.method == "POST":
        name = request.form.get("name", "")
        environment = request.form.get("environment", "")
        values, upload_errors = _settings_submitted(request.form, request.files)
        changed_secrets = sorted(f.key for f in schema if f.secret and values.get(f.key))
        try:
            if upload_errors:
                raise SettingsError(upload_errors)
            with database.atomic():
                update_connection(conn, name, environment, values)
                audit("connection.update", "SyncConnection", conn.id, name=conn.name, environment=conn.environment,
                      settings=conn.settings, secrets_changed=changed_secrets)
        except SettingsError as exc:
            errors = exc.errors
        except (AdapterError, ValueError) as exc:
            errors = {"_": str(exc)}
        else:
            flash(f"Saved {conn.name}.", "success")
            return redirect(url_for("sync_service.connections"))
    return render("sync_service/connection_form.html", None, cls=cls, schema=schema, values=values,
                  stored_secrets=stored, errors=errors, name=name, environment=environment,
                  environments=ENVIRONMENTS, conn=conn), (422 if errors else 200)


# --------------------------------------------------------------------------- Configure Mapping

def _layout(conn, kind=None, tab=None) -> dict:
    return {"conn": conn, "kind": kind, "tab": tab, "kinds": MAPPING_KINDS,
            "exports_allowed": current_user.organization.uses_registration_module,
            "module_note": REGISTRATION_MODULE_NOTE, "adapter_label": _adapter_label(conn.adapter)}


@bp.route("/<connection_id>/mapping/")
@need
def mapping_home(connection_id):
    conn = _conn(connection_id)
    return render("sync_service/mapping_home.html", None, **_layout(conn))


@bp.route("/<connection_id>/mapping/<kind>/configure", methods=["GET", "POST"])
@need
def configure(connection_id, kind):
    conn = _conn(connection_id)
    kind = _kind(kind)
    mapping = load_mapping(conn, kind)
    regs = list(mapping.registration_examples or []) if mapping else []
    students = list(mapping.student_examples or []) if mapping else []
    errors, status = {}, 200
    if request.method == "POST":
        reg_in = request.form.getlist("registration_example")
        stu_in = request.form.getlist("student_example")
        clean_regs, clean_students, errors = ui.check_examples(org_id(), reg_in, stu_in)
        if errors:
            regs, students, status = reg_in, stu_in, 422
        else:
            with database.atomic():
                if mapping is None:  # examples first: version 1 is the first save of rows
                    mapping = Mapping.create(connection=conn, kind=kind, version=0)
                mapping.registration_examples, mapping.student_examples = clean_regs, clean_students
                mapping.updated_at, mapping.updated_by = utcnow(), current_user.id
                mapping.save()
                audit("mapping.examples", "Mapping", mapping.id, connection=conn.id,
                      registration_examples=clean_regs, student_examples=clean_students)
            flash("Saved the examples. Next, map fields on the Field Mapping tab.", "success")
            return redirect(url_for("sync_service.configure", connection_id=conn.id, kind=kind))
    # five inputs each (more only to show the message on an extra one that was posted)
    regs = (list(regs) + [""] * ui.MAX_EXAMPLES)[: max(ui.MAX_EXAMPLES, len(regs))]
    students = (list(students) + [""] * ui.MAX_EXAMPLES)[: max(ui.MAX_EXAMPLES, len(students))]
    examples = ui.resolve_examples(org_id(), mapping) if status == 200 else []
    return render("sync_service/configure.html", "configure-form", regs=regs, students=students, errors=errors,
                  examples=examples, max_examples=ui.MAX_EXAMPLES, **_layout(conn, kind, "configure")), status


def _saved_states(mapping) -> dict[str, dict]:
    states = {}
    for row in (mapping.rows or []) if mapping else []:
        if isinstance(row, dict) and isinstance(row.get("to"), str) and row["to"] not in states:
            states[row["to"]] = ui.state_from_saved(row)
    return states


def _posted_states(step_map, catalog=None) -> dict[str, dict]:
    catalog = catalog or ui.load_catalog(org_id())
    return {key: ui.resolve_fields(ui.parse_row(request.form, key, step_map), catalog, step_map)
            for key in ui.posted_keys(request.form)}


def _rows_to_save(states: dict[str, dict], mapping, sections, step_map) -> list[dict]:
    """The posted rows over the saved ones (rows not in the form are kept), in SIS field order."""
    merged = _saved_states(mapping)
    merged.update(states)
    order = {k: i for i, k in enumerate(ui.flatten(sections))}
    rows = [r for r in (ui.saved_row(s, step_map) for s in merged.values()) if r is not None]
    rows.sort(key=lambda r: order.get(r["to"], len(order)))
    return rows


def _dirty(states, mapping, sections, step_map) -> bool:
    saved = [r for r in (mapping.rows or [])] if mapping else []
    return canonical(_rows_to_save(states, mapping, sections, step_map)) != canonical(saved or [])


def _editor_context(conn, mapping, example_value):
    step_map = current_app.extensions["enroll_sync.steps"]
    sections, fields_error = _sections(conn)
    catalog = ui.load_catalog(org_id())
    examples = ui.resolve_examples(org_id(), mapping)
    example = ui.pick_example(examples, example_value)
    ctx = ui.EditorContext(org_id=org_id(), catalog=catalog, sections=sections, targets=ui.flatten(sections),
                           step_map=step_map, source=source_values(example.registration) if example else None,
                           today=dt.date.today())
    return ctx, examples, example, fields_error


def _field_mapping_page(conn, kind, mapping, states, *, example_value=None, notes=None, message=None,
                        error=None, saved=False, status=200):
    ctx, examples, example, fields_error = _editor_context(conn, mapping, example_value)
    step_map = ctx.step_map
    sections = ui.build_sections(states, ctx, notes)
    rows = [ui.engine_row(s, step_map) for s in states.values()]
    compiled = compile_mapping(rows, ctx.sections, step_map, source_fields=ctx.catalog.keys)
    summary = ui.summary(compiled, examples, ctx.today) if ctx.sections else None
    dirty = _dirty(states, mapping, ctx.sections, step_map) if ctx.sections else False
    resp = render("sync_service/fields.html", "field-mapping", sections=sections, ctx=ctx, examples=examples,
                  example=example, fields_error=fields_error, message=message, error=error, summary=summary,
                  dirty=dirty, saved=saved, mapping=mapping, types=MAPPING_TYPES, policies=UNMATCHED_POLICIES,
                  step_catalog=list(step_map.values()), ui=ui, **_layout(conn, kind, "fields"))
    return _no_store((resp, status))


@bp.route("/<connection_id>/mapping/<kind>/fields", methods=["GET", "POST"])
@need
def field_mapping(connection_id, kind):
    conn = _conn(connection_id)
    kind = _kind(kind)
    mapping = load_mapping(conn, kind)
    if request.method == "GET":
        return _field_mapping_page(conn, kind, mapping, _saved_states(mapping),
                                   example_value=request.args.get("example"))
    step_map = current_app.extensions["enroll_sync.steps"]
    saved_states = _saved_states(mapping)
    states = {**saved_states, **_posted_states(step_map)}
    action = request.form.get("action") or "save"
    example_value = request.form.get("example")
    notes, message, error = {}, None, None
    row_key = ui.action_row(action)
    if row_key is not None:  # a row button in a plain form post (no JavaScript)
        if row_key in states:
            note = ui.apply_action(states[row_key], action, request.form, step_map)
            if note:
                notes[row_key] = note
        return _field_mapping_page(conn, kind, mapping, states, example_value=example_value, notes=notes)
    if action == "example":
        return _field_mapping_page(conn, kind, mapping, states, example_value=example_value)
    if action == "automap":
        catalog = ui.load_catalog(org_id())
        sections, fields_error = _sections(conn)
        keys = ui.propose(states, catalog, sections) if sections else []
        if keys:
            message = (f"Auto-map proposed {len(keys)} row(s), marked “Proposed”. Review them, discard any you "
                       "do not want, then Save.")
        elif not sections:
            error = fields_error
        else:
            message = "Auto-map found nothing more to propose: every remaining field needs a choice of yours."
        return _field_mapping_page(conn, kind, mapping, states, example_value=example_value, message=message,
                                   error=error)
    if action != "save":
        return _field_mapping_page(conn, kind, mapping, states, example_value=example_value,
                                   error="Unknown action."), 400
    sections, fields_error = _sections(conn)
    if not ui.posted_keys(request.form):
        return _field_mapping_page(conn, kind, mapping, states, example_value=example_value,
                                   error="Nothing to save: the form held no mapping rows. Reload the page and "
                                         "try again.", status=400)
    mapping = _save_rows(conn, kind, mapping, states, sections, step_map)
    for s in states.values():
        s.pop("proposed", None)
    return _field_mapping_page(conn, kind, mapping, states, example_value=example_value,
                               message=f"Saved the Export Student Mapping (version {mapping.version}).", saved=True)


def _save_rows(conn, kind, mapping, states, sections, step_map):
    rows = _rows_to_save(states, mapping, sections, step_map)
    with database.atomic():
        mapping, changed = save_rows(conn, kind, mapping, rows, current_user.id)
        if changed:
            audit("mapping.save", "Mapping", mapping.id, connection=conn.id, kind=kind, version=mapping.version,
                  mapped=[r["to"] for r in rows])
    return mapping


@bp.route("/<connection_id>/mapping/<kind>/row", methods=["POST"])
@need
def mapping_row(connection_id, kind):
    """One row of the Field Mapping tab, re-rendered from the posted form (HTMX partial)."""
    conn = _conn(connection_id)
    kind = _kind(kind)
    step_map = current_app.extensions["enroll_sync.steps"]
    action = request.form.get("action") or ""
    key = ui.action_row(action) or request.form.get("row") or ""
    if not key or request.form.get(ui.name(key, "to")) != key:
        return error_response("errors/400.html", 400, "Which row? Reload the page and try again.")
    mapping = load_mapping(conn, kind)
    ctx, examples, example, fields_error = _editor_context(conn, mapping, request.form.get("example"))
    states = {**_saved_states(mapping), **_posted_states(step_map)}
    state = states[key]
    note = ui.apply_action(state, action, request.form, step_map) if ui.action_row(action) == key else None
    row = ui.build_row(state, ctx, note)
    section = ui.section_of(key, ctx.sections)
    section_rows = [ui.build_row(states.get(f.key) or {"to": f.key, "type": "do_not_map"}, ctx)
                    for f in section.fields] if section is not ui.OTHER_SECTION else [row]
    section_view = ui.SectionView(section, section_rows)
    dirty = _dirty(states, mapping, ctx.sections, step_map) if ctx.sections else True
    html = render_template("sync_service/_row.html", row=row, ctx=ctx, types=MAPPING_TYPES,
                           policies=UNMATCHED_POLICIES, step_catalog=list(step_map.values()), ui=ui,
                           row_url=url_for("sync_service.mapping_row", connection_id=conn.id, kind=kind),
                           oob_section=section_view, oob_dirty=dirty)
    return _no_store(html)


@bp.route("/<connection_id>/mapping/<kind>/refresh", methods=["POST"])
@need
def refresh_fields(connection_id, kind):
    conn = _conn(connection_id)
    kind = _kind(kind)
    mapping = load_mapping(conn, kind)
    step_map = current_app.extensions["enroll_sync.steps"]
    states = {**_saved_states(mapping), **_posted_states(step_map)}
    sections, error = _sections(conn, refresh=True)
    message = None
    if not error:
        n = sum(len(s.fields) for s in sections)
        message = f"Refreshed fields: {n} fields in {len(sections)} sections from {_adapter_label(conn.adapter)}."
        audit("connection.refresh_fields", "SyncConnection", conn.id, fields=n)
    return _field_mapping_page(conn, kind, mapping, states, example_value=request.form.get("example"),
                               message=message, error=error and f"Could not refresh the fields: {error}",
                               status=200 if not error else 502)


# --------------------------------------------------------------------------- Send Record

def _send_dialog(conn, kind, **context):
    context.setdefault("preview", None)
    context.setdefault("outcome", None)
    context.setdefault("error", None)
    html = render("sync_service/send_record.html", "send-record",
                  **_layout(conn, kind, "fields"), **context)
    return _no_store(html)


@bp.route("/<connection_id>/mapping/<kind>/send-record", methods=["POST"])
@need
def send_record_preview(connection_id, kind):
    """Send Record: save the form's mapping, then preview the exact body for the example shown."""
    conn = _conn(connection_id)
    kind = _kind(kind)
    if not current_user.organization.uses_registration_module:
        return _send_dialog(conn, kind, error=REGISTRATION_MODULE_NOTE), 409
    step_map = current_app.extensions["enroll_sync.steps"]
    mapping = load_mapping(conn, kind)
    examples = ui.resolve_examples(org_id(), mapping)
    example = ui.pick_example(examples, request.form.get("example"))
    if example is None:
        return _send_dialog(conn, kind, error="Add a Registration Example or Student Example on the Configure tab "
                                              "first: the test record is the one shown in Mapped Value."), 409
    sections, fields_error = _sections(conn)
    if fields_error:
        return _send_dialog(conn, kind, error=f"Could not read the SIS's fields: {fields_error}"), 502
    posted = _posted_states(step_map)
    proposed = sorted(k for k, s in posted.items() if s.get("proposed"))
    if proposed:
        n = len(proposed)
        return _send_dialog(conn, kind, error=(
            f"{n} row{'s are' if n != 1 else ' is'} still “Proposed” by Auto-map. Review "
            f"{'them' if n != 1 else 'it'} first: Save keeps a proposal, Discard drops it. Nothing was saved "
            f"or sent.")), 409
    if posted:
        mapping = _save_rows(conn, kind, mapping, {**_saved_states(mapping), **posted}, sections, step_map)
    try:
        preview = preview_test_record(conn, example.registration, mapping=mapping, sections=sections)
    except TestRecordError as exc:
        return _send_dialog(conn, kind, error=exc.message), exc.status
    return _send_dialog(conn, kind, preview=preview, example=example, saved_version=mapping.version)


@bp.route("/<connection_id>/mapping/<kind>/send-record/continue", methods=["POST"])
@need
def send_record(connection_id, kind):
    """OK, Continue: export the previewed record through the adapter and show the outcome."""
    conn = _conn(connection_id)
    kind = _kind(kind)
    if not current_user.organization.uses_registration_module:
        return _send_dialog(conn, kind, error=REGISTRATION_MODULE_NOTE), 409
    reg = None
    raw = request.form.get("registration_id", "")
    if parse_id(raw) is not None:
        reg = Registration.get_or_none((Registration.id == parse_id(raw)) & (Registration.organization == org_id()))
    fingerprint = request.form.get("fingerprint", "")
    if reg is None or not fingerprint:
        return _send_dialog(conn, kind, error="Open the preview with Send Record first; nothing was sent."), 400
    try:
        outcome = send_test_record(conn, reg, current_user._get_current_object(), fingerprint=fingerprint)
    except PreviewChanged as exc:
        return _send_dialog(conn, kind, preview=exc.preview, error=exc.message,
                            example=ui.Example("registration", str(reg.form_id), reg)), 409
    except TestRecordError as exc:
        return _send_dialog(conn, kind, error=exc.message), exc.status
    audit("mapping.test_record", "Registration", reg.id, connection=conn.id, job=outcome.job.id,
          status=outcome.status, sis_id=outcome.item.sis_id)
    return _send_dialog(conn, kind, outcome=outcome, reg=Registration.get_by_id(reg.id))
