"""Configure Mapping: the mapping kinds of a connection (left sidebar), the Configure
tab (Registration and Student Examples) and the Field Mapping tab.

The Field Mapping form holds the mapping being edited until Save; its rows
re-render through ``mapping_row`` (an HTMX partial) when a cell changes. The form's
names and what each row shows are in ``form``."""
from __future__ import annotations

import datetime as dt

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from ...db import database
from ...mapping.codes import UNMATCHED_POLICIES
from ...mapping.engine import MAPPING_TYPES
from ...sync import mappings
from ...sync.connections import adapter_label
from ...sync.links import link_scope
from ...sync.mappings.examples import MAX_EXAMPLES, check_examples, pick_example, resolve_examples
from ...sync.mappings.versions import canonical, save_rows
from .. import audit, org_id, render
from ..errors import error_response
from . import bp, field_sections, get_connection, get_kind, layout, need, no_store
from . import form as ui


@bp.route("/<connection_id>/mapping/")
@need
def mapping_home(connection_id):
    conn = get_connection(connection_id)
    return render("mapping/mapping_home.html", None, **layout(conn))


@bp.route("/<connection_id>/mapping/<kind>/configure", methods=["GET", "POST"])
@need
def configure(connection_id, kind):
    conn = get_connection(connection_id)
    kind = get_kind(kind)
    mapping = mappings.load(conn, kind)
    regs = list(mapping.registration_examples or []) if mapping else []
    students = list(mapping.student_examples or []) if mapping else []
    errors, status = {}, 200
    if request.method == "POST":
        reg_in = request.form.getlist("registration_example")
        stu_in = request.form.getlist("student_example")
        clean_regs, clean_students, errors = check_examples(org_id(), reg_in, stu_in, link_scope(conn))
        if errors:
            regs, students, status = reg_in, stu_in, 422
        else:
            with database.atomic():
                mapping = mappings.save_examples(conn, kind, clean_regs, clean_students, current_user.id)
                audit("mapping.examples", "Mapping", mapping.id, connection=conn.id,
                      registration_examples=clean_regs, student_examples=clean_students)
            flash("Saved the examples. Next, map fields on the Field Mapping tab.", "success")
            return redirect(url_for("mapping.configure", connection_id=conn.id, kind=kind))
    # five inputs each (more only to show the message on an extra one that was posted)
    regs = (list(regs) + [""] * MAX_EXAMPLES)[: max(MAX_EXAMPLES, len(regs))]
    students = (list(students) + [""] * MAX_EXAMPLES)[: max(MAX_EXAMPLES, len(students))]
    examples = resolve_examples(org_id(), mapping, link_scope(conn)) if status == 200 else []
    return render("mapping/configure.html", "configure-form", regs=regs, students=students, errors=errors,
                  examples=examples, max_examples=MAX_EXAMPLES, **layout(conn, kind, "configure")), status


def saved_states(mapping) -> dict[str, dict]:
    states = {}
    for row in (mapping.rows or []) if mapping else []:
        if isinstance(row, dict) and isinstance(row.get("to"), str) and row["to"] not in states:
            states[row["to"]] = ui.state_from_saved(row)
    return states


def posted_states(step_map, catalog=None) -> dict[str, dict]:
    catalog = catalog or ui.load_catalog(org_id())
    return {key: ui.resolve_fields(ui.parse_row(request.form, key, step_map), catalog, step_map)
            for key in ui.posted_keys(request.form)}


def _rows_to_save(states: dict[str, dict], mapping, sections, step_map) -> list[dict]:
    """The posted rows over the saved ones (rows not in the form are kept), in SIS field order."""
    merged = saved_states(mapping)
    merged.update(states)
    order = {k: i for i, k in enumerate(ui.flatten(sections))}
    rows = [r for r in (ui.saved_row(s, step_map) for s in merged.values()) if r is not None]
    rows.sort(key=lambda r: order.get(r["to"], len(order)))
    return rows


def _dirty(states, mapping, sections, step_map) -> bool:
    saved = [r for r in (mapping.rows or [])] if mapping else []
    return canonical(_rows_to_save(states, mapping, sections, step_map)) != canonical(saved or [])


def _editor_context(conn, mapping, example_value):
    step_map = mappings.step_classes()
    sections, fields_error = field_sections(conn)
    catalog = ui.load_catalog(org_id())
    examples = resolve_examples(org_id(), mapping, link_scope(conn))
    example = pick_example(examples, example_value)
    ctx = ui.EditorContext(org_id=org_id(), catalog=catalog, sections=sections, targets=ui.flatten(sections),
                           step_map=step_map, source=example.source if example else None,
                           today=dt.date.today())
    return ctx, examples, example, fields_error


def _field_mapping_page(conn, kind, mapping, states, *, example_value=None, notes=None, message=None,
                        error=None, saved=False, status=200):
    ctx, examples, example, fields_error = _editor_context(conn, mapping, example_value)
    step_map = ctx.step_map
    sections = ui.build_sections(states, ctx, notes)
    rows = [ui.engine_row(s, step_map) for s in states.values()]
    compiled = mappings.compile_rows(conn, rows, ctx.sections, kind, source_fields=ctx.catalog.keys)
    summary = ui.summary(compiled, examples, ctx.today) if ctx.sections else None
    dirty = _dirty(states, mapping, ctx.sections, step_map) if ctx.sections else False
    resp = render("mapping/fields.html", "field-mapping", sections=sections, ctx=ctx, examples=examples,
                  example=example, fields_error=fields_error, message=message, error=error, summary=summary,
                  dirty=dirty, saved=saved, mapping=mapping, types=MAPPING_TYPES, policies=UNMATCHED_POLICIES,
                  step_catalog=list(step_map.values()), ui=ui, **layout(conn, kind, "fields"))
    return no_store((resp, status))


@bp.route("/<connection_id>/mapping/<kind>/fields", methods=["GET", "POST"])
@need
def field_mapping(connection_id, kind):
    conn = get_connection(connection_id)
    kind = get_kind(kind)
    mapping = mappings.load(conn, kind)
    if request.method == "GET":
        return _field_mapping_page(conn, kind, mapping, saved_states(mapping),
                                   example_value=request.args.get("example"))
    step_map = mappings.step_classes()
    saved = saved_states(mapping)
    states = {**saved, **posted_states(step_map)}
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
        sections, fields_error = field_sections(conn)
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
    sections, fields_error = field_sections(conn)
    if not ui.posted_keys(request.form):
        return _field_mapping_page(conn, kind, mapping, states, example_value=example_value,
                                   error="Nothing to save: the form held no mapping rows. Reload the page and "
                                         "try again.", status=400)
    mapping = save_states(conn, kind, mapping, states, sections, step_map)
    for s in states.values():
        s.pop("proposed", None)
    return _field_mapping_page(conn, kind, mapping, states, example_value=example_value,
                               message=f"Saved the Export Student Mapping (version {mapping.version}).", saved=True)


def save_states(conn, kind, mapping, states, sections, step_map):
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
    conn = get_connection(connection_id)
    kind = get_kind(kind)
    step_map = mappings.step_classes()
    action = request.form.get("action") or ""
    key = ui.action_row(action) or request.form.get("row") or ""
    if not key or request.form.get(ui.name(key, "to")) != key:
        return error_response("errors/400.html", 400, "Which row? Reload the page and try again.")
    mapping = mappings.load(conn, kind)
    ctx, examples, example, fields_error = _editor_context(conn, mapping, request.form.get("example"))
    states = {**saved_states(mapping), **posted_states(step_map)}
    state = states[key]
    note = ui.apply_action(state, action, request.form, step_map) if ui.action_row(action) == key else None
    row = ui.build_row(state, ctx, note)
    section = ui.section_of(key, ctx.sections)
    section_rows = [ui.build_row(states.get(f.key) or {"to": f.key, "type": "do_not_map"}, ctx)
                    for f in section.fields] if section is not ui.OTHER_SECTION else [row]
    section_view = ui.SectionView(section, section_rows)
    dirty = _dirty(states, mapping, ctx.sections, step_map) if ctx.sections else True
    html = render_template("mapping/_row.html", row=row, ctx=ctx, types=MAPPING_TYPES,
                           policies=UNMATCHED_POLICIES, step_catalog=list(step_map.values()), ui=ui,
                           row_url=url_for("mapping.mapping_row", connection_id=conn.id, kind=kind),
                           oob_section=section_view, oob_dirty=dirty)
    return no_store(html)


@bp.route("/<connection_id>/mapping/<kind>/refresh", methods=["POST"])
@need
def refresh_fields(connection_id, kind):
    conn = get_connection(connection_id)
    kind = get_kind(kind)
    mapping = mappings.load(conn, kind)
    step_map = mappings.step_classes()
    states = {**saved_states(mapping), **posted_states(step_map)}
    sections, error = field_sections(conn, refresh=True)
    message = None
    if not error:
        n = sum(len(s.fields) for s in sections)
        message = f"Refreshed fields: {n} fields in {len(sections)} sections from {adapter_label(conn.adapter)}."
        audit("connection.refresh_fields", "SyncConnection", conn.id, fields=n)
    return _field_mapping_page(conn, kind, mapping, states, example_value=request.form.get("example"),
                               message=message, error=error and f"Could not refresh the fields: {error}",
                               status=200 if not error else 502)
