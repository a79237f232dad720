"""Web layer: one blueprint per area and the helpers they share."""
from __future__ import annotations

import importlib

from flask import abort, current_app, render_template, request, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block

from ..ids import parse_id
from ..models import AuditLog

#: modules under enroll_sync.web that define ``bp``
BLUEPRINTS = ("auth", "home", "schools", "registrations", "users", "organization", "connections", "mapping",
              "sync_logs", "imports")


def register_blueprints(app):
    for name in BLUEPRINTS:
        module = importlib.import_module(f"{__name__}.{name}")
        app.register_blueprint(module.bp)
    from .templating import init_templating
    init_templating(app)


def may(endpoint: str, user=None) -> bool:
    """Whether ``user`` (the signed-in user) holds every permission the route ``endpoint``
    declares with ``require_permission``: a page shows a button only when the route
    behind it would answer, so the two never disagree."""
    user = user or current_user
    if not getattr(user, "is_authenticated", False):
        return False
    view = current_app.view_functions.get(endpoint)
    needed = getattr(view, "required_permissions", None)
    if view is None or needed is None:
        return False
    return all(user.can(p) for p in needed)


def job_url(job_id: int, **args) -> str:
    """Where a sync job's page is for the signed-in user: under Registrations for those
    who may sync (they watch the syncs they start there), else under Sync Logs."""
    area = "registrations" if may("registrations.sync_start") else "sync_logs"
    return url_for(f"{area}.job", job_id=job_id, **args)


def is_htmx() -> bool:
    return bool(getattr(request, "htmx", False))


def render(template: str, block: str | None = None, **context):
    """The whole page on a normal request; only ``block`` on an HTMX request.

    The block's name equals the id of the element it renders, so ``hx-target`` and
    the fragment agree (the house rule): pass the element id (``school-list``); the
    Jinja block carries the same name with underscores (``school_list``).
    """
    if block and is_htmx() and not request.headers.get("HX-Boosted"):
        return render_block(template, block.replace("-", "_"), **context)
    return render_template(template, **context)


def page_arg(name: str = "page") -> int:
    """The page number asked for in the query string (1 when missing or not a number)."""
    try:
        return max(1, min(int(request.args.get(name, 1)), 100000))
    except (TypeError, ValueError):
        return 1


def org_id() -> int:
    return current_user.organization_id


def scoped(model, *fields):
    """``model.select()`` limited to the signed-in user's organization."""
    return model.select(*fields).where(model.organization == org_id())


def get_scoped_or_404(model, pk):
    pk = parse_id(pk)
    if pk is None:
        abort(404)
    obj = model.get_or_none((model.id == pk) & (model.organization == org_id()))
    if obj is None:
        abort(404)
    return obj


def audit(action: str, object_type: str, object_id=None, **details):
    AuditLog.create(organization=org_id(), user=current_user.id, action=action,
                    object_type=object_type, object_id=None if object_id is None else str(object_id),
                    details=details)
