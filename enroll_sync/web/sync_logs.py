"""Settings > Sync Service > Sync Logs: every sync job with its counts per Sync
Status, a job's records filterable by status with the SIS's reason, the failures as
CSV, and (for users who may sync) Retry failed.

Sync Logs need Sync Service Full Access, like the rest of Settings > Sync Service.
A registrar (View + Edit Registrations, no Sync Service access) watches the jobs
they start from the Registrations module instead: the same job page is served
there (``registrations.job``) by the helpers below, so both show the same thing.
"""
from __future__ import annotations

import csv
import io

from flask import Blueprint, Response, flash, redirect, request, stream_with_context, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block

from .. import security
from ..models import Registration, School, Student, SyncItem, SyncJob, User
from ..sync.jobs import FINAL_STATUSES, ITEM_STATUSES, cancel_job, counts_for, failed_items, job_progress
from . import audit, get_scoped_or_404, render, scoped

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
    }


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
                  can_cancel=True)  # both areas' routes that show this page may cancel (see cancel_response)


def cancel_response(job: SyncJob, area: str):
    """Cancel sync, from the job page of either area (each route checks its own permission)."""
    skipped = cancel_job(job, current_user.name)
    if skipped is None:
        flash(f"Job #{job.id} is no longer running; nothing was cancelled.", "info")
    else:
        audit("sync.cancel", "SyncJob", job.id, skipped=skipped)
        flash(f"Cancelled job #{job.id}: {skipped} record(s) not sent were skipped.", "success")
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
