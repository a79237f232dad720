"""Reliability under real faults, with real ``enroll-sync worker`` processes and the
PowerSchool sandbox over sockets: a dripping answer does not hang a job, workers
sharing a token the SIS revokes early lose no record to it, recovery brings a job back
to the width it was planned with after workers die, and Cancel after a worker death
leaves nothing Pending."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enroll_sync.db import database
from enroll_sync.models import Organization, Registration, SisLink, SyncItem, SyncJob, SyncTask, utcnow
from enroll_sync.sync import jobs, runner
from enroll_sync.sync.queue import enqueue_job, recover_now
from enroll_sync.sync.selection import RegistrationFilter, Selection
from enroll_sync.testing import wait_for
from tests.test_sync_support import connect_to_sandbox

ENROLL_SYNC = str(Path(sys.executable).with_name("enroll-sync"))
APPROVED = Selection(filter=RegistrationFilter(status="Approved"), all_matching=True)
RECOVERY = {"JOB_STALE_SECONDS": "2", "JOB_HEARTBEAT_SECONDS": "0.3", "JOB_RECOVERY_SECONDS": "0.5",
            "JOB_TASKS": "4", "JOB_BATCHES_PER_EXPORT": "1"}


@pytest.fixture
def sandbox():
    from sis_powerschool.sandbox import serve_in_thread
    handle = serve_in_thread(port=0, seed=11)
    yield handle
    handle.stop()


@pytest.fixture
def big_app(tmp_path):
    """The demo district with 160 registrations (about 100 syncable)."""
    from enroll_sync.demo import load_demo
    from enroll_sync.migrations import upgrade
    from enroll_sync.testing import make_app
    app = make_app(tmp_path, **RECOVERY)
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(app.extensions["enroll_sync.plugins"], {"powerschool": "http://127.0.0.1:9"}, registrations=160)
    yield app
    if not database.is_closed():
        database.close()


class Workers:
    """``enroll-sync worker`` processes on the app's database and queue."""

    def __init__(self, app, log_dir: Path, threads: int = 1):
        self.env = dict(os.environ, ENROLL_SYNC_INSTANCE_PATH=app.config["INSTANCE_PATH"],
                        ENROLL_SYNC_DATABASE_URL=app.config["DATABASE_URL"],
                        ENROLL_SYNC_QUEUE_URL=app.config["QUEUE_URL"], ENROLL_SYNC_WORKERS=str(threads),
                        **{"ENROLL_SYNC_" + k: v for k, v in RECOVERY.items()})
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, n: int = 1) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            log = open(self.log_dir / f"worker-{len(self.procs)}.log", "wb")
            proc = subprocess.Popen([ENROLL_SYNC, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            started.append(proc)
        return started

    def wait_up(self, procs):
        wait_for(lambda: all("consumer thread(s)" in (self.log_dir / f"worker-{self.procs.index(p)}.log")
                             .read_text(errors="replace") for p in procs), timeout=60,
                 message="the workers to start\n" + self.logs())

    def logs(self) -> str:
        return "\n".join((self.log_dir / f"worker-{i}.log").read_text(errors="replace")[-2000:]
                         for i in range(len(self.procs)))

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def workers(big_app, tmp_path):
    w = Workers(big_app, tmp_path)
    yield w
    w.stop_all()


def _job(app) -> SyncJob:
    with app.app_context(), database.connection_context():
        return jobs.create_job(app, Organization.get().id, None, APPROVED)


def _get(app, job_id) -> SyncJob:
    with app.app_context(), database.connection_context():
        return SyncJob.get_by_id(job_id)


def _statuses(app, job_id) -> dict[str, int]:
    with app.app_context(), database.connection_context():
        out: dict[str, int] = {}
        for (status,) in SyncItem.select(SyncItem.status).where(SyncItem.job == job_id).tuples():
            out[status] = out.get(status, 0) + 1
        return out


def _live_tasks(app, job_id) -> int:
    with app.app_context(), database.connection_context():
        cutoff = utcnow() - dt.timedelta(seconds=1)
        return SyncTask.select().where((SyncTask.job == job_id) & (SyncTask.heartbeat_at >= cutoff)).count()


def test_a_dripping_answer_is_abandoned_within_the_deadline_and_the_job_completes(big_app, sandbox):
    connect_to_sandbox(big_app, sandbox, batch_size=10, deadline_s=1.5, timeout_s=1)
    sandbox.set_faults(drip_bytes_per_s=1, drip_answers=1, fault_path="/ws/v1/student")
    job = _job(big_app)
    started = time.monotonic()
    with big_app.app_context(), database.connection_context():
        runner.run_job(big_app, job.id)
    took = time.monotonic() - started
    assert _get(big_app, job.id).status == "Completed"
    counts = _statuses(big_app, job.id)
    assert not counts.get("Pending") and not counts.get("In Progress")
    assert counts.get("Failed") == 10, (counts, [(r["method"], r["path"], r["status"], r.get("ms")) for r in sandbox.requests()][:12])  # the one batch whose answer dripped
    assert took < 30, took
    with big_app.app_context(), database.connection_context():
        reason = SyncItem.get((SyncItem.job == job.id) & (SyncItem.status == "Failed")).reason
    assert "too slowly" in reason, reason
    # and the next sync settles the truth by looking up first: no duplicates
    sandbox.set_faults(drip_bytes_per_s=0)
    with big_app.app_context(), database.connection_context():
        retry = jobs.create_retry_job(big_app, SyncJob.get_by_id(job.id), None)
        runner.run_job(big_app, retry.id)
    assert _statuses(big_app, retry.id) == {"Succeeded": 10}
    ids = [str(s["local_id"]) for s in sandbox.dump()]
    assert len(ids) == len(set(ids)) == job.total


def test_workers_sharing_a_token_the_sis_revokes_early_lose_nothing_to_it(big_app, sandbox, tmp_path):
    connect_to_sandbox(big_app, sandbox, batch_size=5)
    sandbox.set_faults(revoke_new_tokens_every=10, latency_ms=10)
    w = Workers(big_app, tmp_path, threads=2)
    try:
        procs = w.start(4)
        w.wait_up(procs)
        job = _job(big_app)
        with big_app.app_context(), database.connection_context():
            enqueue_job(big_app, job.id)
        wait_for(lambda: _get(big_app, job.id).status == "Completed", timeout=120, interval=0.3,
                 message="the job to complete\n" + w.logs())
    finally:
        w.stop_all()
    with big_app.app_context(), database.connection_context():
        reasons = {i.reason for i in SyncItem.select().where((SyncItem.job == job.id) & (SyncItem.status != "Succeeded"))}
    assert _statuses(big_app, job.id) == {"Succeeded": job.total}, reasons
    revoked = [r for r in sandbox.requests() if r["status"] == 401]
    assert len(revoked) >= 2, "the fault did bite"


def _time_a_job(app, w, sandbox, kill_after: int | None) -> tuple[float, int]:
    """Run every Approved registration through 4 single-thread workers; with ``kill_after``
    kill 3 of them once that many records are stored and start 3 new ones at once.
    Returns (seconds from enqueue to Completed, most live tasks seen after the kill)."""
    job = _job(app)
    with app.app_context(), database.connection_context():
        enqueue_job(app, job.id)
    started = time.monotonic()
    widest_after = 0
    if kill_after is not None:
        wait_for(lambda: len(sandbox.dump()) >= kill_after, timeout=60, interval=0.05, message="progress")
        for p in w.procs[-4:-1]:
            p.send_signal(signal.SIGKILL)
        fresh = w.start(3)
        assert len(fresh) == 3
    while _get(app, job.id).status != "Completed":
        assert time.monotonic() - started < 180, w.logs()
        if kill_after is not None:
            widest_after = max(widest_after, _live_tasks(app, job.id))
        time.sleep(0.2)
    took = time.monotonic() - started
    with app.app_context(), database.connection_context():
        reasons = {i.reason for i in SyncItem.select().where((SyncItem.job == job.id) & (SyncItem.status != "Succeeded"))}
    assert _statuses(app, job.id) == {"Succeeded": job.total}, reasons
    return took, widest_after


def test_recovery_brings_a_job_back_to_its_planned_width_after_workers_die(big_app, sandbox, tmp_path):
    # slow enough that starting a worker process is small beside the job
    connect_to_sandbox(big_app, sandbox, batch_size=1)
    sandbox.set_faults(latency_ms=600)
    w = Workers(big_app, tmp_path)
    try:
        w.wait_up(w.start(4))
        unkilled, _ = _time_a_job(big_app, w, sandbox, None)
        with big_app.app_context(), database.connection_context():  # the same work again, from scratch
            Registration.update(sync_status="Not Synced").execute()
            SisLink.delete().execute()
        sandbox.reset()
        sandbox.set_faults(latency_ms=600)
        killed, widest = _time_a_job(big_app, w, sandbox, kill_after=20)
    finally:
        w.stop_all()
    assert widest == 4, "all four tasks ran again after the kill"
    assert killed <= 1.5 * unkilled, (killed, unkilled)
    ids = [str(s["local_id"]) for s in sandbox.dump()]
    assert len(ids) == len(set(ids))


def test_a_lost_queue_resumes_with_every_task_it_was_planned_with(big_app, sandbox):
    connect_to_sandbox(big_app, sandbox)
    job = _job(big_app)
    with big_app.app_context(), database.connection_context():
        SyncJob.update(status="Running", planned_tasks=4,
                       heartbeat_at=utcnow() - dt.timedelta(seconds=10)).where(SyncJob.id == job.id).execute()
    assert recover_now(big_app) == [job.id]
    from enroll_sync.sync.queue import queued_task_counts
    assert queued_task_counts(big_app) == {job.id: 4}
    assert recover_now(big_app) == []  # the four are waiting: none more


def test_cancel_after_a_worker_died_leaves_nothing_pending(big_app, sandbox, workers):
    connect_to_sandbox(big_app, sandbox, batch_size=5)
    sandbox.set_faults(latency_ms=400)
    proc = workers.start()[0]
    workers.wait_up([proc])
    job = _job(big_app)
    with big_app.app_context(), database.connection_context():
        enqueue_job(big_app, job.id, tasks=1)
    wait_for(lambda: _statuses(big_app, job.id).get("In Progress"), timeout=30, interval=0.05,
             message="a batch in flight")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with big_app.app_context(), database.connection_context():
        assert jobs.cancel_job(SyncJob.get_by_id(job.id), "Dana Admin") is not None
        assert _statuses(big_app, job.id).get("In Progress")  # the dead worker's records
    time.sleep(2.5)  # JOB_STALE_SECONDS
    recover_now(big_app)
    counts = _statuses(big_app, job.id)
    assert not counts.get("Pending") and not counts.get("In Progress"), counts
    with big_app.app_context(), database.connection_context():
        assert _get(big_app, job.id).status == "Cancelled"
        regs = Registration.select().where(Registration.sync_status.in_(["Pending", "In Progress"])).count()
        assert regs == 0
