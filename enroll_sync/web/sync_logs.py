"""Settings > Sync Service > Sync Logs: every sync job with its counts per Sync
Status, and a job's page (``job_pages``): records filterable by status with the SIS's
reason, the failures as CSV, Cancel sync, and (for users who may sync) Retry failed.

A job Held for approval (it would update more students the SIS already has than the
district's limit) shows who may approve it; a second person with Sync Service Full
Access approves and starts it here, never the one who started it.

Anyone with View Registrations reads the Sync Logs and every job page of their
district (a registrar troubleshooting a sync needs them); what they may do there
depends on their other permissions: Cancel sync and Approve and start here need Sync
Service Full Access, Retry failed needs Edit Registrations (``registrations``).
"""
from __future__ import annotations

from flask import Blueprint, redirect, url_for
from flask_login import current_user

from .. import security
from ..models import FINAL_STATUSES, IMPORT_JOB_KINDS, SyncJob, User
from ..sync.links import CSV_HEADER, links_csv_rows, unknown_link_count
from ..sync.progress import counts_for
from . import get_scoped_or_404, org_id, page_arg, render, scoped
from .job_pages import (approve_response, cancel_response, csv_download, failures_csv, job_page,
                        job_progress_fragment)

bp = Blueprint("sync_logs", __name__, url_prefix="/settings/sync-logs")

JOBS_PER_PAGE = 25


@bp.route("/")
@security.require_permission(security.VIEW_REGISTRATIONS)
def index():
    page = page_arg()
    query = scoped(SyncJob).order_by(SyncJob.id.desc())
    total = query.count()
    jobs = list(query.paginate(page, JOBS_PER_PAGE))
    creators = {u.id: u for u in User.select().where(User.id.in_([j.created_by_id for j in jobs if j.created_by_id]))}
    return render("sync_logs/index.html", "sync-log-list", jobs=jobs, counts=counts_for([j.id for j in jobs]),
                  creators=creators, page=page, pages=max(1, -(-total // JOBS_PER_PAGE)), total=total,
                  statuses=FINAL_STATUSES, unknown_links=unknown_link_count(org_id()))


@bp.route("/links.csv")
@security.require_permission(security.VIEW_REGISTRATIONS)
def links_csv():
    """Every student's SIS link on every connection, as CSV (streamed)."""
    return csv_download(f"sis-links-{current_user.organization.slug}.csv", CSV_HEADER, links_csv_rows(org_id()))


@bp.route("/<job_id>")
@security.require_permission(security.VIEW_REGISTRATIONS)
def job(job_id):
    found = get_scoped_or_404(SyncJob, job_id)
    if found.kind in IMPORT_JOB_KINDS:  # its records are SIS students: the import's own page
        return redirect(url_for("imports.import_job", job_id=found.id))
    return job_page(found, area="sync_logs")


@bp.route("/<job_id>/progress")
@security.require_permission(security.VIEW_REGISTRATIONS)
def job_progress_view(job_id):
    return job_progress_fragment(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/cancel", methods=["POST"])
@security.require_permission(security.VIEW_REGISTRATIONS, security.SYNC_FULL_ACCESS)
def job_cancel(job_id):
    return cancel_response(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/approve", methods=["POST"])
@security.require_permission(security.VIEW_REGISTRATIONS, security.SYNC_FULL_ACCESS)
def job_approve(job_id):
    """Approve and start a job Held for approval (a second person, not its creator)."""
    return approve_response(get_scoped_or_404(SyncJob, job_id), area="sync_logs")


@bp.route("/<job_id>/failures.csv")
@security.require_permission(security.VIEW_REGISTRATIONS)
def job_failures_csv(job_id):
    return failures_csv(get_scoped_or_404(SyncJob, job_id))
