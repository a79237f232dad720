"""Holding a large update: Settings > District can hold a sync that would update more
than N students the SIS already has until a second person approves it. Over real
HTTP, with the real huey queue consumed in-process and the PowerSchool sandbox on a
real socket: the setting's validation; a sync under the limit starts as before; one
over it is Held, no worker runs it and nothing reaches the SIS; its creator cannot
approve it; a second person with Sync Service Full Access approves it from either job
page and it runs to the end; Cancel sync works on it; a Viewer is refused everywhere.
On SQLite and, when CI provides them, PostgreSQL + Redis."""
from __future__ import annotations

import re

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.db import database
from enroll_sync.models import AuditLog, Organization, Registration, School, SyncItem, SyncJob
from enroll_sync.sync import runner, recovery
from enroll_sync.sync.queue import queued_job_ids, start_in_process_consumer
from tests.test_sync_support import (BACKENDS, backend_app, connect_to_sandbox, job_done, sandbox,  # noqa: F401
                                     wait_for)

ALL_APPROVED = {"all_matching": "1", "status": "Approved"}
DISTRICT = "/settings/district/"


@pytest.fixture(params=BACKENDS)
def app(request, tmp_path):
    yield from backend_app(request.param, tmp_path)


@pytest.fixture
def consumer(app):
    handle = start_in_process_consumer(app, workers=2)
    yield handle
    handle.stop()


# --------------------------------------------------------------------------- helpers

def syncable(app) -> list[Registration]:
    """The Approved registrations of schools with a connection (what a sync of all
    Approved sends), in id order."""
    with app.app_context(), database.connection_context():
        return list(Registration.select().join(School).where(
            (Registration.status == "Approved") & School.sync_connection.is_null(False)).order_by(Registration.id))


def set_limit(admin, value: str, module: bool = True):
    admin.page(DISTRICT)
    data = {"hold_updates_over": value}
    if module:
        data["uses_registration_module"] = "on"
    return admin.post_form(DISTRICT, data)


def limit_in_db(app):
    with app.app_context(), database.connection_context():
        return Organization.get().hold_updates_over


def proceed(session, data=None) -> int:
    """Proceed with Sync (as the confirmation's form posts it); returns the job id."""
    session.page("/registrations/")
    r = session.post_form("/registrations/sync", data or ALL_APPROVED)
    assert r.status_code == 302, r.text[:500]
    m = re.fullmatch(r"/registrations/sync-jobs/(\d+)", r.headers["location"])
    assert m, r.headers["location"]
    return int(m.group(1))


def job(app, job_id) -> SyncJob:
    with app.app_context(), database.connection_context():
        return SyncJob.get_by_id(job_id)


def run_now(app, job_id):
    """What a worker's task runs."""
    with app.app_context(), database.connection_context():
        return runner.run_job(app, job_id)


def sis_writes(sandbox) -> int:
    """Requests that could change a student in the SIS."""
    return sum(1 for r in list(sandbox.store.requests) if r["method"] == "POST" and r["path"] == "/ws/v1/student")


def said(page) -> str:
    """The page's text with runs of white space made one space (what a reader sees)."""
    return re.sub(r"\s+", " ", page.text)


def flashes(page) -> str:
    m = re.search(r'id="flashes".*?(?=id="confirm-modal")', page.text, re.S)
    return m.group(0) if m else ""


def sync_everything_once(app, registrar) -> list[Registration]:
    """A first sync of every Approved registration, so their students have SIS ids."""
    regs = syncable(app)
    first = proceed(registrar)
    run_now(app, first)  # a consumer, when the test has one, may share the job: wait for the last task
    wait_for(lambda: job_done(app, first), message="the first sync to complete")
    with app.app_context(), database.connection_context():
        assert all(sis_id_for(r.student_id, r.school.sync_connection) for r in regs)
    return regs


def sync_statuses(app, regs) -> set[str]:
    with app.app_context(), database.connection_context():
        return {Registration.get_by_id(r.id).sync_status for r in regs}


# --------------------------------------------------------------------------- the setting

def test_the_setting_is_validated_at_its_field_and_audit_logged(app, live, login):
    admin = login("District Admin")
    page = admin.page(DISTRICT)
    assert "Hold a sync for approval when it would update more than N students the SIS already has" in page.text
    assert 'name="hold_updates_over"' in page.text and 'value=""' in page.text  # blank: never hold

    def audited():
        with app.app_context(), database.connection_context():
            return [a.details for a in AuditLog.select().where(AuditLog.action == "organization.hold_updates_over")
                    .order_by(AuditLog.id)]

    for bad in ("-1", "1.5", "ten", "1e3", "+5", "0x10", "\u0663", "99999999999"):
        r = set_limit(admin, bad, module=False)  # the module switch is left off too: nothing may be saved
        assert r.status_code == 422, (bad, r.status_code)
        assert 'data-testid="hold-error"' in r.text and 'aria-invalid="true"' in r.text, bad
        assert ("Enter a whole number of students (0 or more)" in r.text
                or "Enter a number no larger than 2,147,483,647" in r.text), bad
        assert f'value="{bad}"' in r.text  # the field keeps what was typed
        assert limit_in_db(app) is None
        with app.app_context(), database.connection_context():
            assert Organization.get().uses_registration_module is True
    assert audited() == []

    r = set_limit(admin, " 1,000 ")
    assert r.status_code == 302
    page = admin.page(r.headers["location"])
    assert "Saved the district settings." in page.text and 'value="1000"' in page.text
    assert 'data-testid="hold-error"' not in page.text
    assert limit_in_db(app) == 1000
    assert set_limit(admin, "1000").status_code == 302  # unchanged: no new audit entry
    assert set_limit(admin, "0").status_code == 302     # 0 is a limit (hold any update), not blank
    assert limit_in_db(app) == 0
    assert set_limit(admin, "").status_code == 302      # blank: never hold
    assert limit_in_db(app) is None
    assert audited() == [{"hold_updates_over": 1000, "before": None}, {"hold_updates_over": 0, "before": 1000},
                         {"hold_updates_over": None, "before": 0}]
    with app.app_context(), database.connection_context():
        assert AuditLog.get(AuditLog.action == "organization.hold_updates_over").user.name == "Dana Admin"

    for role in ("Sync Admin", "Registrar", "Viewer"):
        s = login(role)
        assert s.get(DISTRICT).status_code == 403
        s.page("/registrations/" if role != "Sync Admin" else "/settings/sync-logs/")
        assert s.post_form(DISTRICT, {"hold_updates_over": "1"}).status_code == 403
    assert limit_in_db(app) is None


# --------------------------------------------------------------------------- under the limit

def test_a_sync_under_the_limit_starts_normally(app, live, login, sandbox, consumer):
    connect_to_sandbox(app, sandbox)
    admin, registrar = login("District Admin"), login("Registrar")
    assert set_limit(admin, "3").status_code == 302
    regs = syncable(app)
    assert len(regs) > 3

    # the confirmation tells the registrar about the rule before they proceed
    registrar.page("/registrations/")
    confirm = registrar.post_form("/registrations/sync/confirm", ALL_APPROVED)
    assert 'data-testid="hold-note"' in confirm.text and "update more than 3 students" in said(confirm)

    # nobody is in the SIS yet: every record is an insert, 0 updates, the job starts
    first = proceed(registrar)
    wait_for(lambda: job_done(app, first), message="the first sync to complete")
    assert job(app, first).would_update == 0
    page = registrar.page(f"/registrations/sync-jobs/{first}")
    assert 'data-testid="job-status">Completed<' in page.text and "Held for approval" not in page.text
    assert sync_statuses(app, regs) == {"Succeeded"}

    # three students the SIS already has: exactly the limit, so it starts too
    writes = sis_writes(sandbox)
    second = proceed(registrar, {"registration_ids": [str(r.id) for r in regs[:3]]})
    assert job(app, second).would_update == 3
    wait_for(lambda: job_done(app, second), message="the second sync to complete")
    assert sis_writes(sandbox) > writes
    with app.app_context(), database.connection_context():
        assert {i.action for i in SyncItem.select().where(SyncItem.job == second)} == {"update"}
        started = AuditLog.get((AuditLog.action == "sync.start") & (AuditLog.object_id == str(second)))
        assert started.details["would_update"] == 3 and "held" not in started.details


# --------------------------------------------------------------------------- over the limit

def test_a_sync_over_the_limit_is_held_and_a_district_admin_approves_it(app, live, login, sandbox, consumer):
    connect_to_sandbox(app, sandbox)
    admin, registrar = login("District Admin"), login("Registrar")
    regs = sync_everything_once(app, registrar)
    assert set_limit(admin, "5").status_code == 302
    stored, writes = sandbox.dump(), sis_writes(sandbox)

    held = proceed(registrar)
    j = job(app, held)
    assert (j.status, j.would_update, j.hold_limit, j.total) == ("Held", len(regs), 5, len(regs))

    # the registrar's job page says plainly what happened and who may approve
    page = registrar.page(f"/registrations/sync-jobs/{held}")
    assert 'data-testid="job-status">Held<' in page.text and "Held for approval" in page.text
    text = said(page)
    assert (f"This sync would update <strong>{len(regs)}</strong> students the SIS already has, more than the "
            f"district's limit of <strong>5</strong> (Settings &gt; District)") in text
    assert "It has not started and nothing has been sent to the SIS." in text
    assert f"Its {len(regs)} registrations show Sync Status Pending while they wait for approval." in text
    assert ("Who may approve: a second person with Sync Service Full Access (a Sync Admin or a District Admin), "
            "not Rita Registrar, who started it.") in text
    assert "Dana Admin (District Admin), Sam Sync (Sync Admin)" in text
    assert 'data-testid="approve-sync"' not in page.text and 'data-testid="approve-not-you"' in page.text
    assert 'hx-trigger="every 2s"' not in page.text  # nothing to poll while it waits
    assert "Waiting for a sync worker" not in page.text
    assert sync_statuses(app, regs) == {"Pending"}
    r = registrar.get("/registrations/?status=Approved&sync_status=Pending", headers={"HX-Request": "true"})
    assert f"<strong>{len(regs)}</strong> registrations match this filter" in r.text
    detail = registrar.page(f"/registrations/{regs[0].form_id}")
    assert 'data-testid="sync-status">Pending<' in detail.text
    assert 'data-testid="held-note">the sync waits for approval<' in detail.text
    # not in the navigation's running jobs, listed as Held in Sync Logs
    assert "running-sync-job" not in registrar.page("/registrations/").text
    logs = login("Sync Admin").page("/settings/sync-logs/")
    assert re.search(rf'data-testid="job-{held}">.*?>Held</span>', logs.text, re.S)

    # no worker runs it: not enqueued, a task that reaches it anyway does nothing, recovery leaves it
    assert held not in queued_job_ids(app)
    assert run_now(app, held).exported == 0
    requeued = []
    with app.app_context(), database.connection_context():
        recovery.recover(app, lambda job_id, n: requeued.append(job_id), lambda: {})
    assert held not in requeued
    # (the consumer of this test is running all along)
    with app.app_context(), database.connection_context():
        assert SyncJob.get_by_id(held).status == "Held"
        assert {i.status for i in SyncItem.select().where(SyncItem.job == held)} == {"Pending"}
        started = AuditLog.get((AuditLog.action == "sync.start") & (AuditLog.object_id == str(held)))
        assert started.details["held"] is True and started.details["would_update"] == len(regs)
    assert sis_writes(sandbox) == writes and sandbox.dump() == stored

    # a District Admin (every permission, not the creator) approves it from the Registrations job page
    page = admin.page(f"/registrations/sync-jobs/{held}")
    assert 'data-testid="approve-sync"' in page.text and "Approve and start" in page.text
    assert f'action="/registrations/sync-jobs/{held}/approve"' in page.text
    r = admin.post_form(f"/registrations/sync-jobs/{held}/approve", {})
    assert r.status_code == 302 and r.headers["location"] == f"/registrations/sync-jobs/{held}"
    assert f"Approved job #{held}: it is queued" in flashes(admin.page(r.headers["location"]))
    wait_for(lambda: job_done(app, held), message="the approved sync to complete")
    page = admin.page(f"/registrations/sync-jobs/{held}")
    assert 'data-testid="job-status">Completed<' in page.text and "approved by Dana Admin" in page.text
    assert f'data-testid="n-succeeded">{len(regs)}<' in page.text
    with app.app_context(), database.connection_context():
        assert {(i.status, i.action) for i in SyncItem.select().where(SyncItem.job == held)} == {("Succeeded", "update")}
        approved = AuditLog.get((AuditLog.action == "sync.approve") & (AuditLog.object_id == str(held)))
        assert approved.user.name == "Dana Admin" and approved.details["would_update"] == len(regs)
    assert sync_statuses(app, regs) == {"Succeeded"}
    assert sis_writes(sandbox) > writes and len(sandbox.dump()) == len(stored)  # updated, nobody duplicated


def test_the_creator_cannot_approve_and_a_sync_admin_approves_from_sync_logs(app, live, login, sandbox, consumer):
    connect_to_sandbox(app, sandbox)
    admin = login("District Admin")  # a District Admin may sync, so may be the one who started it
    regs = sync_everything_once(app, admin)
    assert set_limit(admin, "2").status_code == 302
    writes = sis_writes(sandbox)
    held = proceed(admin)
    assert job(app, held).status == "Held"

    # the creator: no button on either job page, and a refusal when they try anyway
    for page_url, approve_url in ((f"/registrations/sync-jobs/{held}", f"/registrations/sync-jobs/{held}/approve"),
                                  (f"/settings/sync-logs/{held}", f"/settings/sync-logs/{held}/approve")):
        page = admin.page(page_url)
        assert 'data-testid="approve-sync"' not in page.text
        assert "You started this sync, so another person must approve it." in said(page)
        assert "Sam Sync (Sync Admin)" in said(page) and "Dana Admin (District Admin)" not in said(page)
        r = admin.post_form(approve_url, {})
        assert r.status_code == 302
        refused = flashes(admin.page(r.headers["location"]))
        assert f"You started job #{held}, so you cannot approve it" in refused and "Nothing changed." in refused
        assert job(app, held).status == "Held" and job(app, held).approved_by_id is None
    with app.app_context(), database.connection_context():
        assert not AuditLog.select().where(AuditLog.action == "sync.approve").exists()
    # a registrar (no Sync Service Full Access) may not approve either
    registrar = login("Registrar")
    page = registrar.page(f"/registrations/sync-jobs/{held}")
    assert 'data-testid="approve-sync"' not in page.text
    assert "Approving needs the Sync Service Full Access permission." in page.text
    assert registrar.post_form(f"/registrations/sync-jobs/{held}/approve", {}).status_code == 403
    assert registrar.post_form(f"/settings/sync-logs/{held}/approve", {}).status_code == 403
    assert job(app, held).status == "Held" and sis_writes(sandbox) == writes
    assert sync_statuses(app, regs) == {"Pending"}

    # a second person, the Sync Admin, approves it from Sync Logs; it runs to the end
    sync_admin = login("Sync Admin")
    page = sync_admin.page(f"/settings/sync-logs/{held}")
    assert 'data-testid="approve-sync"' in page.text
    assert "not Dana Admin, who started it" in said(page)
    r = sync_admin.post_form(f"/settings/sync-logs/{held}/approve", {})
    assert r.status_code == 302 and r.headers["location"] == f"/settings/sync-logs/{held}"
    assert f"Approved job #{held}" in flashes(sync_admin.page(r.headers["location"]))
    wait_for(lambda: job_done(app, held), message="the approved sync to complete")
    page = sync_admin.page(f"/settings/sync-logs/{held}")
    assert 'data-testid="job-status">Completed<' in page.text and "approved by Sam Sync" in page.text
    assert f'data-testid="n-succeeded">{len(regs)}<' in page.text and 'data-testid="n-failed">0<' in page.text
    assert sync_statuses(app, regs) == {"Succeeded"}
    with app.app_context(), database.connection_context():
        assert AuditLog.get(AuditLog.action == "sync.approve").user.name == "Sam Sync"
        assert {i.action for i in SyncItem.select().where(SyncItem.job == held)} == {"update"}
    assert sis_writes(sandbox) > writes
    # approving again changes nothing
    r = sync_admin.post_form(f"/settings/sync-logs/{held}/approve", {})
    assert "is not waiting for approval; nothing changed" in flashes(sync_admin.page(r.headers["location"]))
    with app.app_context(), database.connection_context():
        assert AuditLog.select().where(AuditLog.action == "sync.approve").count() == 1


def test_retry_failed_over_the_limit_is_held_too(app, live, login, sandbox):
    connect_to_sandbox(app, sandbox)
    admin, registrar = login("District Admin"), login("Registrar")
    regs = sync_everything_once(app, registrar)
    refused = regs[:3]
    sandbox.set_faults(reject_local_ids=[str(r.form_id) for r in refused])
    second = proceed(registrar)
    run_now(app, second)
    with app.app_context(), database.connection_context():
        assert SyncItem.select().where((SyncItem.job == second) & (SyncItem.status == "Failed")).count() == 3
    sandbox.set_faults(reject_local_ids=[])
    assert set_limit(admin, "2").status_code == 302
    writes = sis_writes(sandbox)

    registrar.page(f"/registrations/sync-jobs/{second}")
    r = registrar.post_form(f"/registrations/sync-jobs/{second}/retry", {})
    assert r.status_code == 302
    retry_id = int(r.headers["location"].rsplit("/", 1)[1])
    page = registrar.page(r.headers["location"])
    assert f"Job #{retry_id} (Retry failed of job #{second}) is held for approval" in flashes(page)
    assert "Held for approval" in page.text and "would update <strong>3</strong> students" in said(page)
    j = job(app, retry_id)
    assert (j.kind, j.status, j.would_update, j.hold_limit) == ("retry", "Held", 3, 2)
    assert retry_id not in queued_job_ids(app)
    run_now(app, retry_id)
    assert job(app, retry_id).status == "Held" and sis_writes(sandbox) == writes


# --------------------------------------------------------------------------- cancel

def test_cancel_sync_on_a_held_job(app, live, login, sandbox):
    connect_to_sandbox(app, sandbox)
    admin, registrar = login("District Admin"), login("Registrar")
    regs = sync_everything_once(app, registrar)
    # one of them failed last time, so "the Sync Status it had" differs between records
    with app.app_context(), database.connection_context():
        Registration.update(sync_status="Failed").where(Registration.id == regs[0].id).execute()
        SyncItem.update(status="Failed").where(SyncItem.registration == regs[0].id).execute()
    assert set_limit(admin, "1").status_code == 302
    writes = sis_writes(sandbox)
    held = proceed(registrar)
    assert job(app, held).status == "Held" and sync_statuses(app, regs) == {"Pending"}
    assert held not in queued_job_ids(app)  # no consumer in this test: a task would still be waiting

    page = registrar.page(f"/registrations/sync-jobs/{held}")
    assert 'data-testid="cancel-sync"' in page.text and "Yes, cancel this sync" in page.text
    r = registrar.post_form(f"/registrations/sync-jobs/{held}/cancel", {})
    assert r.status_code == 302
    page = registrar.page(r.headers["location"])
    assert f"Cancelled job #{held}: {len(regs)} record(s) not sent were skipped." in flashes(page)
    assert 'data-testid="job-status">Cancelled<' in page.text and "Held for approval" not in page.text
    assert 'data-testid="cancel-sync"' not in page.text
    with app.app_context(), database.connection_context():
        assert {i.status for i in SyncItem.select().where(SyncItem.job == held)} == {"Skipped"}
        status = {r.id: r.sync_status for r in Registration.select().where(Registration.id.in_([r.id for r in regs]))}
        assert AuditLog.select().where((AuditLog.action == "sync.cancel") & (AuditLog.object_id == str(held))).exists()
    assert status[regs[0].id] == "Failed" and {status[r.id] for r in regs[1:]} == {"Succeeded"}

    # a cancelled job can no longer be approved, and nothing was ever sent
    sync_admin = login("Sync Admin")
    sync_admin.page(f"/settings/sync-logs/{held}")
    r = sync_admin.post_form(f"/settings/sync-logs/{held}/approve", {})
    assert "is not waiting for approval; nothing changed" in flashes(sync_admin.page(r.headers["location"]))
    assert job(app, held).status == "Cancelled" and held not in queued_job_ids(app)
    run_now(app, held)
    assert sis_writes(sandbox) == writes


# --------------------------------------------------------------------------- a Viewer

def test_a_viewer_is_refused_everywhere(app, live, login, sandbox):
    connect_to_sandbox(app, sandbox)
    admin, registrar = login("District Admin"), login("Registrar")
    sync_everything_once(app, registrar)
    assert set_limit(admin, "0").status_code == 302
    held = proceed(registrar)
    assert job(app, held).status == "Held"

    viewer = login("Viewer")
    viewer.page("/registrations/")
    # the job page is readable (View Registrations), with nothing to approve or cancel
    for path in (f"/registrations/sync-jobs/{held}", f"/settings/sync-logs/{held}"):
        r = viewer.get(path)
        assert r.status_code == 200 and 'data-testid="job-held"' in r.text, path
        assert 'data-testid="approve-sync"' not in r.text and 'data-testid="cancel-sync"' not in r.text, path
    r = viewer.get(DISTRICT)
    assert r.status_code == 403 and "which you do not have" in r.text
    for path in (f"/registrations/sync-jobs/{held}/approve", f"/settings/sync-logs/{held}/approve",
                 f"/registrations/sync-jobs/{held}/cancel", f"/settings/sync-logs/{held}/cancel", DISTRICT,
                 "/registrations/sync"):
        for htmx in (False, True):
            r = viewer.post_form(path, {"hold_updates_over": "", **ALL_APPROVED}, htmx=htmx)
            assert r.status_code == 403, (path, htmx, r.status_code)
    assert job(app, held).status == "Held" and limit_in_db(app) == 0
    with app.app_context(), database.connection_context():
        assert SyncJob.select().count() == 2  # the first sync and the held one: the Viewer started nothing
