"""Settings > Sync Service > a connection > Import from SIS: preview an import, run it,
schedule it daily, and watch an import job (progress, Cancel, Resume, per-student
outcomes with the reason, the problems as CSV). Sync Service Full Access; everything
scoped to the signed-in user's organization. An import job's page and its CSV are read-only
for whoever may read Sync Logs (View Registrations).

An import job is also a Sync Logs entry (kind Import); its page lives here because its
records are SIS students, not registrations.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, flash, redirect, request, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block

from .. import security
from ..db import database
from ..ids import parse_id
from ..models import (IMPORT_CREATED, IMPORT_JOB_KINDS, IMPORT_STATUSES, IMPORT_UPDATED, JOB_FAILED, ImportItem,
                      ImportRun, ImportState, SyncConnection, SyncJob, User, utcnow)
from ..sync.imports.fields import import_state
from ..sync.imports.jobs import (PROBLEM_STATUSES, ImportRefused, active_import, cancel_import, import_progress,
                                 readiness, resume_import, school_numbers, start_import)
from ..sync.imports.schedule import parse_time
from ..sync.mappings import IMPORT_STUDENT, KINDS, load
from . import audit, get_scoped_or_404, page_arg, render
from .job_pages import csv_download

log = logging.getLogger("enroll_sync.web")

bp = Blueprint("imports", __name__, url_prefix="/settings/sync-service")
need = security.require_permission(security.SYNC_FULL_ACCESS)
#: an import job's page is a Sync Logs entry: read-only for whoever may read Sync Logs
read = security.require_permission(security.VIEW_REGISTRATIONS)

ITEMS_PER_PAGE = 50
#: how many students with per-field differences a preview shows
SAMPLE = 20


def _enqueue(job: SyncJob) -> None:
    from ..sync.queue import enqueue_import
    try:
        enqueue_import(current_app, job.id)
    except Exception:  # the queue is down: worker recovery enqueues it later
        log.exception("could not enqueue import job %s", job.id)
        flash("The import was saved but the queue could not be reached; it starts when a sync worker is back.",
              "warning")


def _import_job(job_id) -> SyncJob | None:
    """The import job ``job_id`` of this district (404 for none; None for a job of another kind)."""
    job = get_scoped_or_404(SyncJob, job_id)
    return job if job.kind in IMPORT_JOB_KINDS else None


def _not_an_import(job_id):
    return redirect(url_for("sync_logs.job", job_id=parse_id(job_id)))


# --------------------------------------------------------------------------- a connection's imports

@bp.route("/<connection_id>/import")
@need
def import_page(connection_id):
    conn = get_scoped_or_404(SyncConnection, connection_id)
    state = import_state(conn)
    problem = readiness(conn, current_app)
    jobs = list(SyncJob.select(SyncJob, ImportRun).join(ImportRun, on=(ImportRun.job == SyncJob.id), attr="run")
                .where(ImportRun.connection == conn.id).order_by(SyncJob.id.desc()).limit(10))
    mapping = load(conn, IMPORT_STUDENT)
    return render("imports/connection.html", None, conn=conn, state=state, problem=problem, jobs=jobs,
                  running=active_import(conn), mapping=mapping, schools=school_numbers(conn),
                  kind_label=KINDS[IMPORT_STUDENT].label)


def _start(connection_id, *, preview: bool):
    conn = get_scoped_or_404(SyncConnection, connection_id)
    from_preview = None
    full = bool(request.form.get("full"))
    if not preview and request.form.get("preview"):
        from_preview = _import_job(request.form.get("preview"))
        if from_preview is not None:  # read what the preview read
            full = ImportRun.get(ImportRun.job == from_preview.id).since is None
    try:
        with database.atomic():
            job = start_import(current_app, conn, current_user.id, preview=preview, from_preview=from_preview,
                               full=full)
            audit("import.preview" if preview else "import.start", "SyncJob", job.id, connection=conn.id,
                  full=full, from_preview=from_preview.id if from_preview else None)
    except ImportRefused as exc:
        flash(str(exc), "error")
        if exc.job is not None:
            return redirect(url_for("imports.import_job", job_id=exc.job.id))
        return redirect(url_for("imports.import_page", connection_id=conn.id))
    _enqueue(job)
    flash(("Previewing the import: nothing is written until you run it." if preview else
           f"Importing from {conn.name}."), "success")
    return redirect(url_for("imports.import_job", job_id=job.id))


@bp.route("/<connection_id>/import/preview", methods=["POST"])
@need
def preview(connection_id):
    """A preview: what the import would do, nothing written."""
    return _start(connection_id, preview=True)


@bp.route("/<connection_id>/import/run", methods=["POST"])
@need
def run(connection_id):
    """Run the import (usually from its preview's page)."""
    return _start(connection_id, preview=False)


@bp.route("/<connection_id>/import/schedule", methods=["POST"])
@need
def schedule(connection_id):
    conn = get_scoped_or_404(SyncConnection, connection_id)
    try:
        daily_at = parse_time(request.form.get("daily_at"))
    except ValueError as exc:
        flash(str(exc), "error")
        return redirect(url_for("imports.import_page", connection_id=conn.id))
    state = import_state(conn)
    with database.atomic():
        ImportState.update(daily_at=daily_at, updated_at=utcnow(), updated_by=current_user.id).where(
            ImportState.id == state.id).execute()
        audit("import.schedule", "SyncConnection", conn.id, daily_at=daily_at)
    flash(f"{conn.name} imports every day at {daily_at} (server time)." if daily_at else
          f"{conn.name} has no scheduled import.", "success")
    return redirect(url_for("imports.import_page", connection_id=conn.id))


# --------------------------------------------------------------------------- an import job

def _sample(job: SyncJob) -> list[ImportItem]:
    """Students with per-field differences, for the preview's sample."""
    return list(ImportItem.select().where((ImportItem.job == job.id) & ImportItem.status.in_(
        [IMPORT_UPDATED, IMPORT_CREATED]) & ImportItem.changes.is_null(False))
        .order_by(ImportItem.status.desc(), ImportItem.id).limit(SAMPLE))


@bp.route("/imports/<job_id>")
@read
def import_job(job_id):
    job = _import_job(job_id)
    if job is None:
        return _not_an_import(job_id)
    status = request.args.get("status", "")
    if status not in IMPORT_STATUSES:
        status = ""
    page = page_arg()
    q = ImportItem.select().where(ImportItem.job == job.id)
    if status:
        q = q.where(ImportItem.status == status)
    shown = q.count()
    items = list(q.order_by(ImportItem.id).paginate(page, ITEMS_PER_PAGE))
    progress = import_progress(job)
    conn = SyncConnection.get_or_none(SyncConnection.id == progress.run.connection_id)
    labels = {}
    if conn is not None:
        try:
            labels = {f.key: f.label for s in KINDS[IMPORT_STUDENT].targets(conn) for f in s.fields}
        except Exception:
            labels = {}
    creator = User.get_or_none(User.id == job.created_by_id) if job.created_by_id else None
    started = list(SyncJob.select().join(ImportRun, on=(ImportRun.job == SyncJob.id))
                   .where(ImportRun.from_preview == job.id).order_by(SyncJob.id.desc()))
    return render("imports/job.html", "import-items", job=job, progress=progress, run=progress.run, conn=conn,
                  items=items, status=status, statuses=IMPORT_STATUSES, page=page,
                  pages=max(1, -(-shown // ITEMS_PER_PAGE)), shown=shown, creator=creator, labels=labels,
                  sample=_sample(job) if progress.run.preview and progress.finished else [],
                  started=started, can_run=conn is not None and active_import(conn) is None)


@bp.route("/imports/<job_id>/progress")
@read
def import_job_progress(job_id):
    job = _import_job(job_id)
    if job is None:
        return _not_an_import(job_id)
    progress = import_progress(job)
    resp = Response(render_block("imports/job.html", "import_progress", job=job, progress=progress,
                                 run=progress.run), mimetype="text/html")
    if progress.finished and request.headers.get("HX-Request"):
        resp.headers["HX-Refresh"] = "true"  # the outcomes, the sample and Run import appear
    return resp


@bp.route("/imports/<job_id>/cancel", methods=["POST"])
@need
def cancel(job_id):
    job = _import_job(job_id)
    if job is None:
        return _not_an_import(job_id)
    if cancel_import(job, current_user.name):
        audit("import.cancel", "SyncJob", job.id)
        flash(f"Cancelled import #{job.id}: nothing after the page being read is imported.", "success")
    else:
        flash(f"Import #{job.id} is no longer running; nothing was cancelled.", "info")
    return redirect(url_for("imports.import_job", job_id=job.id))


@bp.route("/imports/<job_id>/resume", methods=["POST"])
@need
def resume(job_id):
    job = _import_job(job_id)
    if job is None:
        return _not_an_import(job_id)
    if job.status == JOB_FAILED and resume_import(job):
        audit("import.resume", "SyncJob", job.id)
        _enqueue(job)
        flash(f"Resuming import #{job.id} after its last recorded page.", "success")
    else:
        flash(f"Import #{job.id} did not stop on an error; nothing to resume.", "info")
    return redirect(url_for("imports.import_job", job_id=job.id))


@bp.route("/imports/<job_id>/problems.csv")
@read
def problems_csv(job_id):
    """The students the import could not import (conflicts and failures), with the reason."""
    job = _import_job(job_id)
    if job is None:
        return _not_an_import(job_id)
    header = ["SIS ID", "Student", "School", "Outcome", "Reason", "When (UTC)"]

    def rows():
        q = (ImportItem.select().where((ImportItem.job == job.id) & ImportItem.status.in_(list(PROBLEM_STATUSES)))
             .order_by(ImportItem.id))
        for item in q.iterator():
            yield (item.sis_id, item.name, item.school or "", item.status, item.reason or "",
                   item.finished_at.strftime("%Y-%m-%d %H:%M:%S") if item.finished_at else "")

    return csv_download(f"import-{job.id}-problems.csv", header, rows())


__all__ = ["bp"]
