"""Cancel sync: a registrar (or the Sync Admin, from Sync Logs) stops a bulk sync. What
was not sent yet is Skipped and its registration gets back the Sync Status it had; a
batch already on its way to the SIS finishes with its true outcome; nothing is sent
after the cancel. On SQLite and, when CI provides them, PostgreSQL."""
from __future__ import annotations

import threading
from collections import Counter

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.db import database
from enroll_sync.models import Registration, School, SyncItem, SyncJob
from enroll_sync.sync import jobs, runner
from enroll_sync.sync.selection import RegistrationFilter, Selection
from tests.conftest import LiveServer, ROLE_EMAIL, sign_in
from tests.test_sync_support import BACKENDS, backend_app, connect_to_sandbox, local_ids, sandbox, wait_for  # noqa: F401

APPROVED = Selection(filter=RegistrationFilter(status="Approved"), all_matching=True)


@pytest.fixture(params=BACKENDS)
def app(request, tmp_path):
    # one adapter batch per claim, so a cancel finds records not yet claimed
    yield from backend_app(request.param, tmp_path, JOB_BATCHES_PER_EXPORT="1")


def _syncable():
    return list(Registration.select().join(School).where(
        (Registration.status == "Approved") & School.sync_connection.is_null(False)).order_by(Registration.id))


def test_cancelling_a_queued_job_sends_nothing_and_restores_each_sync_status(app, sandbox):
    connect_to_sandbox(app, sandbox)
    server = LiveServer(app)
    try:
        with app.app_context(), database.connection_context():
            org = Registration.select().first().organization_id
            regs = _syncable()
            first = Selection(ids=tuple(r.id for r in regs[:3]))
            runner.run_job(app, jobs.create_job(app, org, None, first).id)  # three are Succeeded already
            job = jobs.create_job(app, org, None, APPROVED)
            assert {r.sync_status for r in Registration.select().where(Registration.id.in_([r.id for r in regs]))} \
                == {"Pending"}
        registrar = sign_in(server.url, ROLE_EMAIL["Registrar"])
        page = registrar.page(f"/registrations/sync-jobs/{job.id}")
        assert 'data-testid="cancel-sync"' in page.text and "Yes, cancel this sync" in page.text
        r = registrar.post_form(f"/registrations/sync-jobs/{job.id}/cancel", {})
        assert r.status_code == 302
        page = registrar.page(r.headers["location"])
        assert f"Cancelled job #{job.id}: {len(regs)} record(s) not sent were skipped." in page.text
        assert 'data-testid="job-status">Cancelled<' in page.text and 'data-testid="cancel-sync"' not in page.text
        with app.app_context(), database.connection_context():
            items = list(SyncItem.select().where(SyncItem.job == job.id))
            assert {i.status for i in items} == {"Skipped"} and len(items) == len(regs)
            assert items[0].reason == "Not sent: the sync was cancelled by Rita Registrar."
            status = {r.id: r.sync_status for r in Registration.select().where(
                Registration.id.in_([r.id for r in regs]))}
            assert [status[r.id] for r in regs[:3]] == ["Succeeded"] * 3  # what they had before
            assert {status[r.id] for r in regs[3:]} == {"Not Synced"}
            assert SyncJob.get_by_id(job.id).status == "Cancelled"
            runner.run_job(app, job.id)  # a worker that picks it up later does nothing
        assert len(local_ids(sandbox.dump())) == 3
        # cancelling again: nothing to cancel, said plainly
        r = registrar.post_form(f"/registrations/sync-jobs/{job.id}/cancel", {})
        assert "is no longer running; nothing was cancelled" in registrar.page(r.headers["location"]).text
    finally:
        server.stop()


def test_cancel_mid_run_stops_sending_and_every_record_ends_true(app, sandbox):
    connect_to_sandbox(app, sandbox, batch_size=1)
    sandbox.set_faults(latency_ms=100)
    with app.app_context(), database.connection_context():
        org = Registration.select().first().organization_id
        job = jobs.create_job(app, org, None, APPROVED)
        total = job.total
    assert total >= 10

    def run():
        with app.app_context(), database.connection_context():
            runner.run_job(app, job.id)

    worker = threading.Thread(target=run)
    worker.start()
    with app.app_context(), database.connection_context():
        wait_for(lambda: SyncItem.select().where((SyncItem.job == job.id) & (SyncItem.status == "Succeeded"))
                 .count() >= 2, message="the first records succeeded")
        assert jobs.cancel_job(SyncJob.get_by_id(job.id), "Sam Sync") is not None
    worker.join(60)
    assert not worker.is_alive()
    with app.app_context(), database.connection_context():
        counts = Counter(i.status for i in SyncItem.select().where(SyncItem.job == job.id))
        assert set(counts) == {"Succeeded", "Skipped"}, counts  # nothing left Pending or In Progress
        assert counts["Skipped"] > 0 and counts["Succeeded"] + counts["Skipped"] == total
        succeeded = {i.registration_id for i in SyncItem.select().where(
            (SyncItem.job == job.id) & (SyncItem.status == "Succeeded"))}
        by_reg = {r.id: r for r in Registration.select().where(Registration.id.in_(
            [i.registration_id for i in SyncItem.select().where(SyncItem.job == job.id)]))}
        assert all(by_reg[r].sync_status == "Succeeded" and sis_id_for(by_reg[r].student_id, by_reg[r].school.sync_connection)
                   for r in succeeded)
        assert {r.sync_status for rid, r in by_reg.items() if rid not in succeeded} == {"Not Synced"}
        assert all(r.sync_lock is None for r in by_reg.values())
        form_ids = {str(by_reg[r].form_id) for r in succeeded}
    assert set(local_ids(sandbox.dump())) == form_ids  # the SIS holds exactly the ones reported sent


def test_cancelling_one_of_two_jobs_keeps_the_other_ones_registrations_pending(app, sandbox):
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        org = Registration.select().first().organization_id
        a = jobs.create_job(app, org, None, APPROVED)
        b = jobs.create_job(app, org, None, APPROVED)
        jobs.cancel_job(SyncJob.get_by_id(a.id), "Rita Registrar")
        ids = [i.registration_id for i in SyncItem.select().where(SyncItem.job == a.id)]
        assert {r.sync_status for r in Registration.select().where(Registration.id.in_(ids))} == {"Pending"}
        runner.run_job(app, b.id)
        assert {r.sync_status for r in Registration.select().where(Registration.id.in_(ids))} == {"Succeeded"}
