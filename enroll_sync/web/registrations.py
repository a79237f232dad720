"""The Registrations module: the list and one registration's page."""
from __future__ import annotations

from flask import Blueprint

from .. import security
from ..models import FormField, Registration, School, Student, SyncItem
from . import get_scoped_or_404, render, scoped

bp = Blueprint("registrations", __name__, url_prefix="/registrations")

PAGE_SIZE = 50


@bp.route("/")
@security.require_permission(security.VIEW_REGISTRATIONS)
def index():
    from flask import request
    try:
        page = max(1, int(request.args.get("page", 1)))
    except ValueError:
        page = 1
    query = (scoped(Registration, Registration, Student, School)
             .join(Student).switch(Registration).join(School)
             .order_by(Registration.form_id.desc()))
    total = query.count()
    rows = list(query.paginate(page, PAGE_SIZE))
    return render("registrations/index.html", "registration-list", rows=rows, page=page, total=total,
                  pages=max(1, -(-total // PAGE_SIZE)))


@bp.route("/<form_id>")
@security.require_permission(security.VIEW_REGISTRATIONS)
def detail(form_id):
    from flask import abort
    from . import org_id
    try:
        fid = int(form_id)
    except ValueError:
        abort(404)
    reg = Registration.get_or_none((Registration.form_id == fid) & (Registration.organization == org_id()))
    if reg is None:
        abort(404)
    fields = list(scoped(FormField).order_by(FormField.position))
    sections: dict[str, list] = {}
    for f in fields:
        sections.setdefault(f.section, []).append((f, reg.answers.get(f.key, "")))
    history = list(SyncItem.select().where(SyncItem.registration == reg).order_by(SyncItem.id.desc()))
    return render("registrations/detail.html", None, reg=reg, sections=sections, history=history)
