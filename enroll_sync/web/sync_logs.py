"""Settings > Sync Service > Sync Logs: every sync job with its counts per Sync
Status, a job's records filterable by status with the SIS's reason, the failures as
CSV, and (for users who may sync) Retry failed.

A job Held for approval (it would update more students the SIS already has than the
district's limit) shows who may approve it; a second person with Sync Service Full
Access approves and starts it here (``approve_response``), never the one who started it.

Sync Logs need Sync Service Full Access, like the rest of Settings > Sync Service.
A registrar (View + Edit Registrations, no Sync Service access) watches the jobs
they start from the Registrations module instead: the same job page is served
there (``registrations.job``) by the helpers below, so both show the same thing.
"""
from __future__ import annotations

import csv
import io
import logging

from flask import Blueprint, Response, current_app, flash, redirect, request, stream_with_context, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block

from .. import security
from ..db import database
from ..models import JOB_HELD, Registration, School, Student, SyncItem, SyncJob, User
from ..sync.jobs import (FINAL_STATUSES, ITEM_STATUSES, PENDING_INLINE_MAX, approve_job, cancel_job, counts_for,
                         failed_items, job_progress)
from . import audit, get_scoped_or_404, render, scoped

log = logging.getLogger("enroll_sync.web")

bp = Blueprint("sync_logs", __name__, url_prefix="/settings/sync-logs")

JOBS_PER_PAGE = 25
ITEMS_PER_PAGE = 50


def _page(name="page") -> int:
    try:
        return max(1, min(int(request.args.get(name, 1)), 100000))
    except (TypeError, ValueError):
        return 1


@bp.route("/")
@security.require_permission(security.SYNC_FULL_ACCESS)
def index():
    page = _page()
    query = scoped(SyncJob).order_by(SyncJob.id.desc())
    total = query.count()
    jobs = list(query.paginate(page, JOBS_PER_PAGE))
    creators = {u.id: u for u in User.select().where(User.id.in_([j.created_by_id for j in jobs if j.created_by_id]))}
    return render("sync_logs/index.html", "sync-log-list", jobs=jobs, counts=counts_for([j.id for j in jobs]),
                  creators=creators, page=page, pages=max(1, -(-total // JOBS_PER_PAGE)), total=total,
                  statuses=FINAL_STATUSES)


@bp.route("/<job_id>")
@security.require_permission(security.SYNC_FULL_ACCESS)
def job(job_id):
    return job_page(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/progress")
@security.require_permission(security.SYNC_FULL_ACCESS)
def job_progress_view(job_id):
    return job_progress_fragment(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/cancel", methods=["POST"])
@security.require_permission(security.SYNC_FULL_ACCESS)
def job_cancel(job_id):
    return cancel_response(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/approve", methods=["POST"])
@security.require_permission(security.SYNC_FULL_ACCESS)
def job_approve(job_id):
    """Approve and start a job Held for approval (a second person, not its creator)."""
    return approve_response(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/failures.csv")
@security.require_permission(security.SYNC_FULL_ACCESS)
def job_failures_csv(job_id):
    return failures_csv(get_scoped_or_404(SyncJob, job_id))


# --------------------------------------------------------------------------- shared with registrations

def _urls(job: SyncJob, area: str) -> dict:
    progress_endpoint = "registrations.job_progress" if area == "registrations" else "sync_logs.job_progress_view"
    return {
        "job": lambda **kw: url_for(f"{area}.job", job_id=job.id, **kw),
        "progress": url_for(progress_endpoint, job_id=job.id),
        "csv": url_for(f"{area}.job_failures_csv", job_id=job.id),
        "retry": url_for("registrations.job_retry", job_id=job.id),
        "cancel": url_for(f"{area}.job_cancel", job_id=job.id),
        "approve": url_for(f"{area}.job_approve", job_id=job.id),
    }


def _approver_roles() -> list[str]:
    """The roles that may approve a held job (those with Sync Service Full Access)."""
    return [role for role, perms in security.ROLES.items() if security.SYNC_FULL_ACCESS in perms]


def hold_context(job: SyncJob) -> dict:
    """What the job page says about approval: who may approve a Held job, whether the
    signed-in user may, and who approved it once it was."""
    out = {"can_approve": False, "approvers": [], "approved_by": None, "pending_inline_max": PENDING_INLINE_MAX}
    if job.approved_by_id:
        out["approved_by"] = User.get_or_none(User.id == job.approved_by_id)
    if job.status != JOB_HELD:
        return out
    q = User.select().where((User.organization == job.organization_id) & (User.active == True)  # noqa: E712
                            & User.role.in_(_approver_roles()))
    if job.created_by_id:
        q = q.where(User.id != job.created_by_id)
    out["approvers"] = list(q.order_by(User.name).limit(10))
    out["can_approve"] = current_user.can(security.SYNC_FULL_ACCESS) and current_user.id != job.created_by_id
    return out


def job_page(job: SyncJob, area: str):
    status = request.args.get("status", "")
    if status not in ITEM_STATUSES:
        status = ""
    page = _page()
    q = (SyncItem.select(SyncItem, Registration, Student, School)
         .join(Registration, on=(SyncItem.registration == Registration.id))
         .join(Student, on=(Registration.student == Student.id))
         .switch(Registration).join(School, on=(Registration.school == School.id))
         .where(SyncItem.job == job.id))
    if status:
        q = q.where(SyncItem.status == status)
    shown = q.count()
    items = list(q.order_by(SyncItem.id).paginate(page, ITEMS_PER_PAGE))
    progress = job_progress(job)
    creator = User.get_or_none(User.id == job.created_by_id) if job.created_by_id else None
    can_retry = all(current_user.can(p) for p in (security.VIEW_REGISTRATIONS, security.EDIT_REGISTRATIONS))
    return render("sync_logs/job.html", "job-items", job=job, progress=progress, items=items, status=status,
                  statuses=ITEM_STATUSES, page=page, pages=max(1, -(-shown // ITEMS_PER_PAGE)), shown=shown,
                  creator=creator, area=area, urls=_urls(job, area), can_retry=can_retry,
                  can_cancel=True,  # both areas' routes that show this page may cancel (see cancel_response)
                  **hold_context(job))


def cancel_response(job: SyncJob, area: str):
    """Cancel sync, from the job page of either area (each route checks its own permission)."""
    skipped = cancel_job(job, current_user.name)
    if skipped is None:
        flash(f"Job #{job.id} is no longer running; nothing was cancelled.", "info")
    else:
        audit("sync.cancel", "SyncJob", job.id, skipped=skipped)
        flash(f"Cancelled job #{job.id}: {skipped} record(s) not sent were skipped.", "success")
    return redirect(url_for(f"{area}.job", job_id=job.id))


def enqueue_or_warn(job: SyncJob) -> None:
    """Hand a job to the workers; if the queue cannot be reached the job waits (worker
    recovery enqueues it later) and the user is told so."""
    from ..sync.queue import enqueue_job
    try:
        enqueue_job(current_app, job.id)
    except Exception:  # the queue is down: the job waits; worker recovery enqueues it later
        log.exception("could not enqueue sync job %s", job.id)
        flash("The sync job was saved but the queue could not be reached; it will start when a sync "
              "worker is back.", "warning")


def approve_response(job: SyncJob, area: str):
    """Approve and start, from the job page of either area (each route checks Sync Service
    Full Access). The person who started the job may not approve it."""
    if job.status != JOB_HELD:
        flash(f"Job #{job.id} is not waiting for approval; nothing changed.", "info")
    elif job.created_by_id == current_user.id:
        flash(f"You started job #{job.id}, so you cannot approve it: a second person with Sync Service "
              f"Full Access must approve it. Nothing changed.", "error")
    else:
        with database.atomic():
            approved = approve_job(job, current_user.id)
            if approved:
                audit("sync.approve", "SyncJob", job.id, would_update=job.would_update, hold_limit=job.hold_limit,
                      total=job.total)
        if approved:
            enqueue_or_warn(job)  # after the commit, so a worker finds it Queued
            flash(f"Approved job #{job.id}: it is queued and starts when a sync worker picks it up.", "success")
        else:  # approved or cancelled by someone else meanwhile
            flash(f"Job #{job.id} is not waiting for approval any more; nothing changed.", "info")
    return redirect(url_for(f"{area}.job", job_id=job.id))


def job_progress_fragment(job: SyncJob, area: str):
    """Only the progress component (what the page polls), whatever the request."""
    progress = job_progress(job)
    resp = Response(render_block("sync_logs/job.html", "job_progress", job=job, progress=progress, area=area,
                                 urls=_urls(job, area)), mimetype="text/html")
    if progress.finished and request.headers.get("HX-Request"):
        resp.headers["HX-Trigger"] = "sync-job-finished"  # the records table reloads once
    return resp


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    text = "" if value is None else str(value)
    # a spreadsheet must not run a value as a formula (CSV injection)
    return "'" + text if text.startswith(_FORMULA_START) else text


def failures_csv(job: SyncJob):
    """The job's Failed and Partial Sync records with the SIS's reasons, streamed."""
    header = ["Registration Form ID", "Student", "SchoolMint ID", "SIS ID", "School", "Grade", "Sync Status",
              "Reason", "Errors", "When (UTC)"]

    def rows():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        yield buf.getvalue()
        for item in failed_items(job):
            reg = item.registration
            errors = "; ".join(
                (f"{e.get('field')}: " if e.get("field") else "") + str(e.get("message", ""))
                for e in (item.errors or []) if isinstance(e, dict))
            buf.seek(0)
            buf.truncate()
            writer.writerow([_cell(v) for v in (
                reg.form_id, reg.student_name, reg.student.schoolmint_id, item.sis_id or reg.sis_id or "",
                reg.school.name, reg.grade, item.status, item.reason or "", errors,
                item.finished_at.strftime("%Y-%m-%d %H:%M:%S") if item.finished_at else "")])
            yield buf.getvalue()

    resp = Response(stream_with_context(rows()), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="sync-job-{job.id}-failures.csv"'
    return resp
