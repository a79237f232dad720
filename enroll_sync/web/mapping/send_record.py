"""Send Record: save the form's mapping, preview the exact body for the example
shown, and "OK, Continue" exports exactly that record (``sync.send_record``)."""
from __future__ import annotations

from flask import request
from flask_login import current_user

from ...ids import parse_id
from ...models import Registration
from ...sync import mappings
from ...sync.links import link_scope
from ...sync.mappings.examples import Example, pick_example, resolve_examples
from ...sync.send_record import (REGISTRATION_MODULE_NOTE, PreviewChanged, SendRecordError, preview_record,
                                 send_record as send_one)
from .. import audit, org_id, render
from . import bp, field_sections, get_connection, get_kind, layout, need, no_store
from .editor import posted_states, save_states, saved_states


def _send_dialog(conn, kind, **context):
    context.setdefault("preview", None)
    context.setdefault("outcome", None)
    context.setdefault("error", None)
    html = render("mapping/send_record.html", "send-record",
                  **layout(conn, kind, "fields"), **context)
    return no_store(html)


@bp.route("/<connection_id>/mapping/<kind>/send-record", methods=["POST"])
@need
def send_record_preview(connection_id, kind):
    """Send Record: save the form's mapping, then preview the exact body for the example shown."""
    conn = get_connection(connection_id)
    kind = get_kind(kind)
    if not current_user.organization.uses_registration_module:
        return _send_dialog(conn, kind, error=REGISTRATION_MODULE_NOTE), 409
    step_map = mappings.step_classes()
    mapping = mappings.load(conn, kind)
    examples = resolve_examples(org_id(), mapping, link_scope(conn))
    example = pick_example(examples, request.form.get("example"))
    if example is None:
        return _send_dialog(conn, kind, error="Add a Registration Example or Student Example on the Configure tab "
                                              "first: the test record is the one shown in Mapped Value."), 409
    sections, fields_error = field_sections(conn)
    if fields_error:
        return _send_dialog(conn, kind, error=f"Could not read the SIS's fields: {fields_error}"), 502
    posted = posted_states(step_map)
    proposed = sorted(k for k, s in posted.items() if s.get("proposed"))
    if proposed:
        n = len(proposed)
        return _send_dialog(conn, kind, error=(
            f"{n} row{'s are' if n != 1 else ' is'} still “Proposed” by Auto-map. Review "
            f"{'them' if n != 1 else 'it'} first: Save keeps a proposal, Discard drops it. Nothing was saved "
            f"or sent.")), 409
    if posted:
        mapping = save_states(conn, kind, mapping, {**saved_states(mapping), **posted}, sections, step_map)
    try:
        preview = preview_record(conn, example.registration, mapping=mapping, sections=sections)
    except SendRecordError as exc:
        return _send_dialog(conn, kind, error=exc.message), exc.status
    return _send_dialog(conn, kind, preview=preview, example=example, saved_version=mapping.version)


@bp.route("/<connection_id>/mapping/<kind>/send-record/continue", methods=["POST"])
@need
def send_record(connection_id, kind):
    """OK, Continue: export the previewed record through the adapter and show the outcome."""
    conn = get_connection(connection_id)
    kind = get_kind(kind)
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
        outcome = send_one(conn, reg, current_user._get_current_object(), fingerprint=fingerprint)
    except PreviewChanged as exc:
        return _send_dialog(conn, kind, preview=exc.preview, error=exc.message,
                            example=Example("registration", str(reg.form_id), reg)), 409
    except SendRecordError as exc:
        return _send_dialog(conn, kind, error=exc.message), exc.status
    audit("mapping.test_record", "Registration", reg.id, connection=conn.id, job=outcome.job.id,
          status=outcome.status, sis_id=outcome.item.sis_id)
    return _send_dialog(conn, kind, outcome=outcome, reg=Registration.get_by_id(reg.id))
