""""Sync Your Students", the whole way through the web app over real HTTP, with the
job going through the real huey queue (SqliteHuey, consumed in-process the way
``enroll-sync serve`` does) to the PowerSchool sandbox on a real socket:

Registrations > Quick Filters (Approved) > select all matching > Bulk Actions >
Sync to SIS > Proceed with Sync > the job page polls itself to the end > every
student's Sync Status agrees with what the sandbox stored. Then Retry failed and
the failures CSV, and Sync Logs."""
from __future__ import annotations

import csv
import html
import io
import re

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.db import database
from enroll_sync.models import AuditLog, Registration, School, SyncItem, SyncJob
from enroll_sync.sync.queue import start_in_process_consumer
from tests.test_sync_support import connect_to_sandbox, local_ids, sandbox, wait_for  # noqa: F401

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def proceed_fields(fragment: str) -> list[tuple[str, str]]:
    """The hidden fields of the "Proceed with Sync" form in the confirmation."""
    form = fragment[fragment.index('action="/registrations/sync"'):]
    form = form[:form.index("</form>")]
    return [(k, html.unescape(v)) for k, v in HIDDEN.findall(form)]


@pytest.fixture
def consumer(app):
    handle = start_in_process_consumer(app, workers=2)
    yield handle
    handle.stop()


def poll_until_complete(session, job_url, timeout=60):
    """Poll the job's progress component the way the page does (HTMX, every 2 s here faster)."""
    seen = []

    def done():
        r = session.get(job_url + "/progress", headers={"HX-Request": "true"})
        assert r.status_code == 200
        seen.append(r)
        return 'data-status="Completed"' in r.text and r

    final = wait_for(done, timeout=timeout, interval=0.2, message="the job to complete")
    return final, seen


def test_sync_your_students_end_to_end(app, live, login, sandbox, consumer):
    connect_to_sandbox(app, sandbox, batch_size=5)
    with app.app_context(), database.connection_context():
        approved = list(Registration.select().where(Registration.status == "Approved"))
        syncable = [r for r in approved if r.school.school_number != "901"]
        preschool = len(approved) - len(syncable)
        assert syncable and preschool  # the fixture gives both kinds
    registrar = login("Registrar")

    # Registrations > Quick Filters: Approved (an HTMX swap of the list, the filter in the URL)
    page = registrar.page("/registrations/")
    assert "Quick Filters" in page.text and "Bulk Actions" in page.text and "Sync to SIS" in page.text
    assert 'hx-push-url="true"' in page.text
    r = registrar.get("/registrations/?status=Approved", headers={"HX-Request": "true"})
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="registration-list">')
    assert f"<strong>{len(approved)}</strong> registrations match this filter" in r.text
    assert f"Select all {len(approved)} registrations matching this filter" in r.text

    # select all matching + Bulk Actions > Sync to SIS: the confirmation says what will happen
    r = registrar.post_form("/registrations/sync/confirm", {"all_matching": "1", "status": "Approved"}, htmx=True)
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="sync-confirm"')
    assert f"<strong>{len(syncable)}</strong> of {len(approved)} selected registrations will sync" in r.text
    assert f"<strong>{preschool}</strong> — The school has no sync connection." in r.text
    assert "Proceed with Sync" in r.text
    fields = proceed_fields(r.text)
    assert ("all_matching", "1") in fields and ("status", "Approved") in fields
    assert not any(k == "registration_ids" for k, _ in fields)  # the filter travels, not the ids

    # Proceed with Sync: a job is created and queued; the browser is sent to its page
    r = registrar.post_form("/registrations/sync", dict(fields), htmx=True)
    assert r.status_code == 200, r.text[:300]
    job_url = r.headers["HX-Redirect"]
    assert re.fullmatch(r"/registrations/sync-jobs/\d+", job_url)
    job_id = int(job_url.rsplit("/", 1)[1])
    page = registrar.page(job_url)
    assert page.status_code == 200 and f"job #{job_id}" in page.text
    with app.app_context(), database.connection_context():
        assert SyncJob.get_by_id(job_id).total == len(syncable)
        assert AuditLog.select().where((AuditLog.action == "sync.start") & (AuditLog.object_id == str(job_id))).exists()

    final, seen = poll_until_complete(registrar, job_url)
    assert 'hx-trigger="every 2s"' not in final.text  # polling stops when the job is complete
    assert final.headers.get("HX-Trigger") == "sync-job-finished"
    assert f'data-testid="n-succeeded">{len(syncable)}<' in final.text
    assert "records/s" in final.text

    # every registration's Sync Status agrees with what reached the SIS
    dump = {str(s["local_id"]): s for s in sandbox.dump()}
    assert len(dump) == len(sandbox.dump()) == len(syncable)
    with app.app_context(), database.connection_context():
        for reg in syncable:
            reg = Registration.get_by_id(reg.id)
            assert reg.sync_status == "Succeeded"
            assert sis_id_for(reg.student_id, reg.school.sync_connection) == str(dump[str(reg.form_id)]["id"])
        assert SyncJob.get_by_id(job_id).status == "Completed"
        not_synced = Registration.select().where(Registration.status != "Approved")
        assert {r.sync_status for r in not_synced} == {"Not Synced"}
        one = syncable[0]

    # the list shows the new Sync Status; the registration page shows the attempt
    r = registrar.get("/registrations/?status=Approved&sync_status=Succeeded", headers={"HX-Request": "true"})
    assert f"<strong>{len(syncable)}</strong> registrations match this filter" in r.text
    detail = registrar.page(f"/registrations/{one.form_id}")
    assert 'data-testid="sync-status">Succeeded<' in detail.text
    assert f"Bulk #{job_id}" in detail.text and "Rita Registrar" in detail.text
    assert 'data-testid="mapping-version">mapping version 1<' in detail.text  # what it was sent with
    assert "Payload sent and SIS answer" in detail.text and "SUCCESS" in detail.text
    assert "sandbox-secret-change-me" not in detail.text

    # Sync Logs (Sync Service Full Access) list the job with its counts
    logs = login("Sync Admin").page("/settings/sync-logs/")
    assert logs.status_code == 200
    assert f'data-testid="count-{job_id}-succeeded">{len(syncable)}<' in logs.text


def test_retry_failed_and_failures_csv_through_the_web(app, live, login, sandbox, consumer):
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        syncable = list(Registration.select().join(School).where(
            (Registration.status == "Approved") & (School.school_number != "901")).order_by(Registration.id))
        refused = syncable[:2]
    sandbox.set_faults(reject_local_ids=[str(r.form_id) for r in refused])
    registrar = login("Registrar")
    registrar.page("/registrations/")
    # the checkboxes of two rows plus... all of them, by id this time (select all on the page)
    ids = [str(r.id) for r in syncable]
    r = registrar.post_form("/registrations/sync/confirm", {"registration_ids": ids}, htmx=True)
    assert f"<strong>{len(syncable)}</strong> of {len(syncable)} selected" in r.text
    r = registrar.post_form("/registrations/sync", dict(proceed_fields(r.text)) | {"registration_ids": ids},
                            htmx=True)
    job_url = r.headers["HX-Redirect"]
    final, _ = poll_until_complete(registrar, job_url)
    assert 'data-testid="n-failed">2<' in final.text
    page = registrar.page(job_url + "?status=Failed")
    assert "Retry failed (2)" in page.text
    for reg in refused:
        assert f'data-testid="item-{reg.form_id}"' in page.text
    # the Sync Admin reads the same job in Sync Logs; retrying is the registrar's, and the page says so
    admin_page = login("Sync Admin").page(f"/settings/sync-logs/{job_url.rsplit('/', 1)[1]}")
    assert admin_page.status_code == 200 and "Retry failed (2)" not in admin_page.text
    assert 'data-testid="retry-needs"' in admin_page.text and "Edit Registrations" in admin_page.text

    # the failures as CSV, with the SIS's reason
    r = registrar.get(job_url + "/failures.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(int(row["Registration Form ID"]) for row in rows) == sorted(r.form_id for r in refused)
    assert all(row["Sync Status"] == "Failed" and row["Reason"] for row in rows)

    # Retry failed: a job of only those two; with the SIS fixed they succeed, nobody is duplicated
    sandbox.set_faults(reject_local_ids=[])
    job_id = int(job_url.rsplit("/", 1)[1])
    r = registrar.post_form(f"/registrations/sync-jobs/{job_id}/retry", {})
    assert r.status_code == 302
    retry_url = r.headers["location"]
    assert retry_url != job_url
    final, _ = poll_until_complete(registrar, retry_url)
    assert 'data-testid="n-succeeded">2<' in final.text and 'data-testid="job-total">2<' in final.text
    with app.app_context(), database.connection_context():
        retry = SyncJob.get_by_id(int(retry_url.rsplit("/", 1)[1]))
        assert retry.kind == "retry" and retry.retry_of_id == job_id
        assert {i.registration_id for i in SyncItem.select().where(SyncItem.job == retry.id)} == {r.id for r in refused}
        assert {Registration.get_by_id(r.id).sync_status for r in syncable} == {"Succeeded"}
    dump = local_ids(sandbox.dump())
    assert len(dump) == len(set(dump)) == len(syncable)


def test_the_running_job_shows_in_the_navigation(app, live, login, sandbox):
    """No consumer here: the job stays queued, and the navigation says so on every page."""
    connect_to_sandbox(app, sandbox)
    registrar = login("Registrar")
    registrar.page("/registrations/")
    r = registrar.post_form("/registrations/sync/confirm", {"all_matching": "1", "status": "Approved"}, htmx=True)
    r = registrar.post_form("/registrations/sync", dict(proceed_fields(r.text)), htmx=True)
    job_url = r.headers["HX-Redirect"]
    page = registrar.page("/registrations/")
    assert f'href="{job_url}" data-testid="running-sync-job"' in page.text
    job = registrar.page(job_url)
    assert "Waiting for a sync worker" in job.text and 'hx-trigger="every 1s' in job.text
    # a Sync Admin and a Viewer (View Registrations, no Edit) see it too, linked to Sync Logs
    job_id = job_url.rsplit("/", 1)[1]
    for who in ("Sync Admin", "Viewer"):
        assert f'href="/settings/sync-logs/{job_id}" data-testid="running-sync-job"' in login(who).page(
            "/settings/sync-logs/").text, who
    # the item refreshes itself while the job runs (and when the job page sees it end),
    # and goes quiet once it is over
    assert ('id="nav-sync-jobs" class="nav-item" hx-get="/running-jobs" '
            'hx-trigger="every 3s, sync-job-finished from:body"') in page.text
    part = registrar.get("/running-jobs", headers={"HX-Request": "true"})
    assert part.status_code == 200 and f'href="{job_url}" data-testid="running-sync-job"' in part.text
    with app.app_context(), database.connection_context():
        SyncJob.update(status="Completed").where(SyncJob.id == int(job_id)).execute()
    part = registrar.get("/running-jobs", headers={"HX-Request": "true"})
    assert "running-sync-job" not in part.text and "hx-trigger" not in part.text and " hidden" in part.text
