"""A sync job's page, shared by Registrations (where a registrar watches the sync they
started) and Sync Logs: the records filterable by status with the SIS's reason, the
self-polling progress component (header, bar, records/s line and the buttons, so the
page settles into its final state the moment the job ends), Cancel sync, approving a
Held job, and the failures as CSV. Each blueprint's routes check their own permission
and call these; a button is shown only when the route behind it would let the
signed-in user through (``may``), so the page is read-only to a viewer."""
from __future__ import annotations

import csv
import io
import logging

from flask import Response, current_app, flash, redirect, request, stream_with_context, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block

from .. import security
from ..db import database
from ..models import ITEM_STATUSES, JOB_HELD, Registration, School, Student, SyncItem, SyncJob, User
from ..sync.jobs import PENDING_INLINE_MAX, approve_job, cancel_job
from ..sync.progress import failed_items, job_progress, rate_series
from . import audit, may, page_arg, render

log = logging.getLogger("enroll_sync.web")

ITEMS_PER_PAGE = 50


def _action_url(job: SyncJob, area: str, action: str) -> str | None:
    """The route of ``action`` (cancel, approve) the signed-in user may use: this area's,
    else the other area's, else None (the button is not shown)."""
    for a in (area, "sync_logs" if area == "registrations" else "registrations"):
        if may(f"{a}.job_{action}"):
            return url_for(f"{a}.job_{action}", job_id=job.id)
    return None


def _urls(job: SyncJob, area: str) -> dict:
    progress_endpoint = "registrations.job_progress" if area == "registrations" else "sync_logs.job_progress_view"
    return {
        "job": lambda **kw: url_for(f"{area}.job", job_id=job.id, **kw),
        "progress": url_for(progress_endpoint, job_id=job.id),
        "csv": url_for(f"{area}.job_failures_csv", job_id=job.id),
        "retry": url_for("registrations.job_retry", job_id=job.id) if may("registrations.job_retry") else None,
        "cancel": _action_url(job, area, "cancel"),
        "approve": _action_url(job, area, "approve"),
    }


def _approvers(job: SyncJob) -> list[User]:
    """Who may approve a held job: active users of the district holding Sync Service
    Full Access (and View Registrations, to see the job), not the one who started it."""
    q = User.select().where((User.organization == job.organization_id) & (User.active == True))  # noqa: E712
    if job.created_by_id:
        q = q.where(User.id != job.created_by_id)
    return [u for u in q.order_by(User.name)
            if u.can(security.SYNC_FULL_ACCESS) and u.can(security.VIEW_REGISTRATIONS)][:10]


def hold_context(job: SyncJob) -> dict:
    """What the job page says about approval: who may approve a Held job, whether the
    signed-in user may, and who approved it once it was."""
    out = {"can_approve": False, "approvers": [], "approved_by": None, "pending_inline_max": PENDING_INLINE_MAX}
    if job.approved_by_id:
        out["approved_by"] = User.get_or_none(User.id == job.approved_by_id)
    if job.status != JOB_HELD:
        return out
    out["approvers"] = _approvers(job)
    out["can_approve"] = _action_url(job, "sync_logs", "approve") is not None and current_user.id != job.created_by_id
    return out


def job_page(job: SyncJob, area: str):
    status = request.args.get("status", "")
    if status not in ITEM_STATUSES:
        status = ""
    page = page_arg()
    q = (SyncItem.select(SyncItem, Registration, Student, School)
         .join(Registration, on=(SyncItem.registration == Registration.id))
         .join(Student, on=(Registration.student == Student.id))
         .switch(Registration).join(School, on=(Registration.school == School.id))
         .where(SyncItem.job == job.id))
    if status:
        q = q.where(SyncItem.status == status)
    shown = q.count()
    items = list(q.order_by(SyncItem.id).paginate(page, ITEMS_PER_PAGE))
    return render("jobs/job.html", "job-items", items=items, status=status, statuses=ITEM_STATUSES, page=page,
                  pages=max(1, -(-shown // ITEMS_PER_PAGE)), shown=shown, **_progress_context(job, area),
                  **hold_context(job))


def _progress_context(job: SyncJob, area: str) -> dict:
    """What the self-polling part of the page needs (the whole page needs it too)."""
    progress = job_progress(job)
    creator = User.get_or_none(User.id == job.created_by_id) if job.created_by_id else None
    return {"job": job, "progress": progress, "rates": rate_series(progress), "creator": creator, "area": area,
            "urls": _urls(job, area)}


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
    from ..sync.queue import enqueue_job  # noqa: PLC0415 (huey loads only when a job is started)
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
    ctx = _progress_context(job, area)
    progress = ctx["progress"]
    resp = Response(render_block("jobs/job.html", "job_progress", **ctx), mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    if progress.finished and request.headers.get("HX-Request"):
        resp.headers["HX-Trigger"] = "sync-job-finished"  # the records table reloads once
    return resp


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value) -> str:
    text = "" if value is None else str(value)
    # a spreadsheet must not run a value as a formula (CSV injection)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_download(filename: str, header: list[str], rows) -> Response:
    """``rows`` as a streamed CSV download, every cell safe to open in a spreadsheet."""
    def lines():
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        yield buf.getvalue()
        for row in rows:
            buf.seek(0)
            buf.truncate()
            writer.writerow([_cell(v) for v in row])
            yield buf.getvalue()

    resp = Response(stream_with_context(lines()), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return resp


def failures_csv(job: SyncJob):
    """The job's Failed and Partial Sync records with the SIS's reasons, streamed."""
    header = ["Registration Form ID", "Student", "SchoolMint ID", "SIS ID", "School", "Grade", "Sync Status",
              "Reason", "Errors", "When (UTC)"]

    def rows():
        for item in failed_items(job):
            reg = item.registration
            errors = "; ".join(
                (f"{e.get('field')}: " if e.get("field") else "") + str(e.get("message", ""))
                for e in (item.errors or []) if isinstance(e, dict))
            yield (reg.form_id, reg.student_name, reg.student.schoolmint_id, item.sis_id or "",
                   reg.school.name, reg.grade, item.status, item.reason or "", errors,
                   item.finished_at.strftime("%Y-%m-%d %H:%M:%S") if item.finished_at else "")

    return csv_download(f"sync-job-{job.id}-failures.csv", header, rows())
