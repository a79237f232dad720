"""The Registrations module: the list with Quick Filters, Bulk Actions > Sync to SIS,
the confirmation and "Proceed with Sync", the sync job a registrar watches, and
one registration's page with its Sync Status and history.

Permissions: viewing (the list, a registration, a job's page) needs View
Registrations; syncing (the confirmation, Proceed with Sync, Retry failed, Cancel
sync) needs View Registrations + Edit Registrations, as the walkthrough says. The same
job page is also served under Settings > Sync Service > Sync Logs (``sync_logs``).
"""
from __future__ import annotations

import dataclasses
import logging

from flask import Blueprint, abort, current_app, flash, make_response, redirect, request, url_for
from flask_login import current_user
from peewee import fn

from .. import security
from ..ids import parse_id
from ..db import database
from ..models import (JOB_HELD, AuditLog, SisLink, REGISTRATION_STATUSES, SYNC_FAILED, SYNC_PARTIAL, SYNC_STATUSES,
                      FormField, Organization, Registration, School, Student, SyncJob)
from ..sync.jobs import create_job, create_retry_job
from ..sync.plan import plan_sync
from ..sync.links import link_scope, links_of_student
from ..sync.links import unlink as unlink_link
from ..sync.overview import status_reasons
from ..sync.progress import registration_history, running_jobs
from ..sync.selection import DEFAULT_SORT, SORTS, RegistrationFilter, Selection
from . import audit, get_scoped_or_404, is_htmx, job_url, may, org_id, render, scoped
from .job_pages import (approve_response, cancel_response, enqueue_or_warn, failures_csv, job_page,
                        job_progress_fragment)

log = logging.getLogger("enroll_sync.web")

bp = Blueprint("registrations", __name__, url_prefix="/registrations")

PAGE_SIZE = 50
#: rows per page a registrar may choose (``per_page``)
PAGE_SIZES = (25, 50, 100)
GRADES = ("PK", "TK", "K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12")
SYNC = (security.VIEW_REGISTRATIONS, security.EDIT_REGISTRATIONS)


def can_sync(user=None) -> bool:
    user = user or current_user
    return all(user.can(p) for p in SYNC)


# --------------------------------------------------------------------------- the list

def _sort_args(args) -> tuple[str, str]:
    sort = args.get("sort", DEFAULT_SORT[0])
    if sort not in SORTS:
        sort = DEFAULT_SORT[0]
    direction = args.get("dir", "asc" if sort != DEFAULT_SORT[0] else DEFAULT_SORT[1])
    return sort, ("desc" if direction == "desc" else "asc")


def _page_arg(args) -> int:
    try:
        return max(1, min(int(args.get("page", 1)), 100000))
    except (TypeError, ValueError):
        return 1


def _per_page_arg(args) -> int:
    try:
        n = int(args.get("per_page", PAGE_SIZE))
    except (TypeError, ValueError):
        return PAGE_SIZE
    return n if n in PAGE_SIZES else PAGE_SIZE


def _list_url(flt: RegistrationFilter, sort: str, direction: str, page: int = 1, per_page: int = PAGE_SIZE,
              **changes) -> str:
    args = {**flt.to_args()}
    if (sort, direction) != DEFAULT_SORT:
        args.update(sort=sort, dir=direction)
    if per_page != PAGE_SIZE:
        args["per_page"] = per_page
    if page > 1:
        args["page"] = page
    args.update(changes)
    args = {k: v for k, v in args.items() if v not in (None, "")}
    return url_for("registrations.index", **args)


def _choices():
    schools = list(scoped(School).order_by(School.name))
    years = [y for (y,) in scoped(Registration, fn.DISTINCT(Registration.school_year))
             .order_by(Registration.school_year.desc()).tuples()]
    return {"schools": schools, "school_years": years, "grades": GRADES,
            "statuses": REGISTRATION_STATUSES, "sync_statuses": SYNC_STATUSES}


@bp.route("/")
@security.require_permission(security.VIEW_REGISTRATIONS)
def index():
    flt = RegistrationFilter.from_args(request.args)
    sort, direction = _sort_args(request.args)
    page = _page_arg(request.args)
    per_page = _per_page_arg(request.args)
    query = flt.query(org_id(), Registration, Student, School)
    total = query.count()
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    column = SORTS[sort]
    order = [column.desc() if direction == "desc" else column.asc()]
    if sort != "form_id":
        order.append(Registration.form_id.desc() if direction == "desc" else Registration.form_id.asc())
    rows = list(query.order_by(*order).paginate(page, per_page))
    reasons = status_reasons(r.id for r in rows if r.sync_status in (SYNC_FAILED, SYNC_PARTIAL))

    def sort_url(key):
        new_dir = "desc" if (key == sort and direction == "asc") else "asc"
        if key != sort and key in ("form_id", "submitted", "last_synced"):
            new_dir = "desc"
        return _list_url(flt, key, new_dir, per_page=per_page)

    resp = make_response(render(
        "registrations/index.html", "registration-list", rows=rows, page=page, pages=pages, total=total,
        flt=flt, sort=sort, direction=direction, sort_url=sort_url, reasons=reasons, per_page=per_page,
        page_sizes=PAGE_SIZES, page_url=lambda p: _list_url(flt, sort, direction, p, per_page),
        can_sync=can_sync(), **_choices()))
    if is_htmx():
        # the address bar shows the filter without the empty fields of the form
        resp.headers["HX-Push-Url"] = _list_url(flt, sort, direction, page, per_page)
    return resp


# --------------------------------------------------------------------------- Sync to SIS

def _selection_from_form() -> Selection:
    sel = Selection.from_form(request.form)
    if sel.all_matching and sel.upto is None:
        upto = scoped(Registration, fn.MAX(Registration.id)).scalar()
        sel = dataclasses.replace(sel, upto=upto or 0)
    return sel


def _back_url(sel: Selection) -> str:
    return url_for("registrations.index", **sel.filter.to_args())


def _hold_limit() -> int | None:
    """Settings > District: hold a sync that would update more than this many students."""
    return Organization.select(Organization.hold_updates_over).where(Organization.id == org_id()).scalar()


def _confirm(sel: Selection, *, error: str | None = None, status: int = 200):
    plan = None if sel.empty else plan_sync(current_app, org_id(), sel)
    if error is None and plan is not None and plan.will_sync == 0:
        error = "None of the selected registrations can be synced; see why below."
        status = 422
    return render("registrations/confirm.html", "sync-confirm", plan=plan, selection=sel, error=error,
                  back_url=_back_url(sel), hold_limit=_hold_limit()), status


@bp.route("/sync/confirm", methods=["POST"])
@security.require_permission(*SYNC)
def sync_confirm():
    """Bulk Actions > Sync to SIS: how many will sync, how many are skipped and why."""
    sel = _selection_from_form()
    if sel.empty:
        return _confirm(sel, error="Select at least one registration, or select all registrations matching "
                                   "this filter.", status=422)
    return _confirm(sel)


@bp.route("/sync/dry-run", methods=["POST"])
@security.require_permission(*SYNC)
def sync_dry_run():
    """Dry run (in the Sync to SIS confirmation): map the selection as the job would and
    count would create / would update / would fail; nothing is written or sent."""
    from ..sync.dry_run import dry_run
    sel = _selection_from_form()
    result, error, status = None, None, 200
    if sel.empty:
        error, status = ("Select at least one registration, or select all registrations matching this "
                         "filter."), 422
    else:
        result = dry_run(current_app, org_id(), sel)
    return render("registrations/confirm.html", "sync-dry-run", plan=result.plan if result else None,
                  selection=sel, dry_run=result, dry_run_error=error, back_url=_back_url(sel),
                  hold_limit=_hold_limit()), status


@bp.route("/sync", methods=["POST"])
@security.require_permission(*SYNC)
def sync_start():
    """Proceed with Sync: create the job and hand it to the workers, unless it is Held
    for approval (it would update more students than Settings > District allows)."""
    sel = _selection_from_form()
    if sel.empty:
        return _confirm(sel, error="Select at least one registration, or select all registrations matching "
                                   "this filter.", status=422)
    job = create_job(current_app, org_id(), current_user.id, sel)
    if job is None:
        return _confirm(sel, error="None of the selected registrations can be synced; see why below.",
                        status=422)
    audit("sync.start", "SyncJob", job.id, total=job.total, all_matching=sel.all_matching,
          filter=sel.filter.to_args() if sel.all_matching else None,
          registrations=None if sel.all_matching else list(sel.ids), **_hold_details(job))
    if job.status != JOB_HELD:
        _enqueue(job)
    target = url_for("registrations.job", job_id=job.id)
    if is_htmx():
        resp = current_app.response_class("", 200)
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target)


def _hold_details(job: SyncJob) -> dict:
    """For the audit entry: how many it would update, and whether it is held."""
    if job.would_update is None:
        return {}
    details = {"would_update": job.would_update}
    if job.status == JOB_HELD:
        details.update(held=True, hold_limit=job.hold_limit)
    return details


_enqueue = enqueue_or_warn


# --------------------------------------------------------------------------- the job, for a registrar

@bp.route("/sync-jobs/<job_id>")
@security.require_permission(security.VIEW_REGISTRATIONS)
def job(job_id):
    """The job page (read-only to those who may not sync: no Cancel, no Retry failed)."""
    return job_page(get_scoped_or_404(SyncJob, job_id), area="registrations")


@bp.route("/sync-jobs/<job_id>/progress")
@security.require_permission(security.VIEW_REGISTRATIONS)
def job_progress(job_id):
    return job_progress_fragment(get_scoped_or_404(SyncJob, job_id), area="registrations")


@bp.route("/sync-jobs/<job_id>/failures.csv")
@security.require_permission(security.VIEW_REGISTRATIONS)
def job_failures_csv(job_id):
    return failures_csv(get_scoped_or_404(SyncJob, job_id))


@bp.route("/sync-jobs/<job_id>/cancel", methods=["POST"])
@security.require_permission(*SYNC)
def job_cancel(job_id):
    """Cancel sync: what was not sent yet is skipped."""
    return cancel_response(get_scoped_or_404(SyncJob, job_id), area="registrations")


@bp.route("/sync-jobs/<job_id>/approve", methods=["POST"])
@security.require_permission(*SYNC, security.SYNC_FULL_ACCESS)
def job_approve(job_id):
    """Approve and start a job Held for approval (a second person with Sync Service Full
    Access; a District Admin has it)."""
    return approve_response(get_scoped_or_404(SyncJob, job_id), area="registrations")


@bp.route("/sync-jobs/<job_id>/retry", methods=["POST"])
@security.require_permission(*SYNC)
def job_retry(job_id):
    """Retry failed: a new job of only the failed records."""
    old = get_scoped_or_404(SyncJob, job_id)
    area = "sync_logs" if request.form.get("area") == "sync_logs" else "registrations"
    new = create_retry_job(current_app, old, current_user.id)
    if new is None:
        flash("This job has no failed records to retry.", "info")
        target = url_for(f"{area}.job", job_id=old.id)
    else:
        audit("sync.retry_failed", "SyncJob", new.id, retry_of=old.id, total=new.total, **_hold_details(new))
        if new.status == JOB_HELD:
            flash(f"Job #{new.id} (Retry failed of job #{old.id}) is held for approval: it would update "
                  f"{new.would_update} students the SIS already has.", "warning")
        else:
            _enqueue(new)
            flash(f"Retrying {new.total} failed record(s) of job #{old.id}.", "success")
        target = url_for(f"{area}.job", job_id=new.id)
    if is_htmx():
        resp = current_app.response_class("", 200)
        resp.headers["HX-Redirect"] = target
        return resp
    return redirect(target)


# --------------------------------------------------------------------------- one registration

@bp.route("/<form_id>")
@security.require_permission(security.VIEW_REGISTRATIONS)
def detail(form_id):
    fid = parse_id(form_id)
    if fid is None:
        abort(404)
    reg = Registration.get_or_none((Registration.form_id == fid) & (Registration.organization == org_id()))
    if reg is None:
        abort(404)
    fields = list(scoped(FormField).order_by(FormField.position))
    sections: dict[str, list] = {}
    for f in fields:
        sections.setdefault(f.section, []).append((f, reg.answers.get(f.key, "")))
    links = links_of_student(reg.student_id)
    current = link_scope(reg.school.sync_connection) if reg.school.sync_connection_id else None
    current_link = next((v for v in links if v.usable and v.link.connection_id == current), None)
    link_changes = list(scoped(AuditLog).where((AuditLog.object_type == "SisLink")
                                               & (AuditLog.object_id == str(reg.student_id)))
                        .order_by(AuditLog.at.desc()).limit(20))
    from ..sync.imports.profiles import returning_student
    returning = returning_student(reg.student_id, reg.school.sync_connection if reg.school.sync_connection_id else None)
    return render("registrations/detail.html", None, reg=reg, sections=sections,
                  history=registration_history(reg), can_sync=can_sync(), links=links, current_link=current_link,
                  link_changes=link_changes, can_unlink=may("registrations.unlink"), returning=returning)


@bp.route("/<form_id>/links/<link_id>/unlink", methods=["POST"])
@security.require_permission(security.VIEW_REGISTRATIONS, security.SYNC_FULL_ACCESS)
def unlink(form_id, link_id):
    """Unlink: forget the student's id in one connection's SIS (nothing in the SIS changes;
    the next sync through it matches the student again before inserting)."""
    fid, lid = parse_id(form_id), parse_id(link_id)
    reg = Registration.get_or_none((Registration.form_id == fid) & (Registration.organization == org_id())) \
        if fid is not None else None
    link = SisLink.get_or_none((SisLink.id == lid) & (SisLink.organization == org_id())) if lid is not None else None
    if reg is None:
        abort(404)
    if link is None or link.student_id != reg.student_id:  # unlinked meanwhile (a second click, another tab)
        flash("That SIS link was already removed; nothing changed.", "info")
        return redirect(url_for("registrations.detail", form_id=reg.form_id))
    conn_name = link.connection.name if link.connection_id else "an unknown connection"
    with database.atomic():
        audit("link.unlink", "SisLink", reg.student_id, sis_id=link.sis_id, connection=conn_name, how=link.how)
        unlink_link(link)
    flash(f"Unlinked SIS ID {link.sis_id} on {conn_name}. Nothing changed in the SIS; the next sync through "
          f"{conn_name} matches the student again before inserting.", "success")
    return redirect(url_for("registrations.detail", form_id=reg.form_id))


# --------------------------------------------------------------------------- running jobs in the navigation

@bp.app_context_processor
def _running_jobs_nav():
    def running_sync_jobs():
        if not current_user.is_authenticated or not current_user.can(security.VIEW_REGISTRATIONS):
            return []
        try:
            return [(p, job_url(p.job.id)) for p in running_jobs(current_user.organization_id)]
        except Exception:  # the navigation must never break a page
            log.warning("could not list running sync jobs", exc_info=True)
            return []
    return {"running_sync_jobs": running_sync_jobs}
