"""``enroll-sync worker`` processes killed with SIGKILL mid-job, restarted, and the job
still finishes: every registration reaches one final status and the SIS holds no
duplicate student. Runs on SQLite + SqliteHuey always, and on PostgreSQL + Redis
when ENROLL_SYNC_TEST_POSTGRES_URL and ENROLL_SYNC_TEST_REDIS_URL are set."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.db import database
from enroll_sync.models import Organization, Registration, SyncItem, SyncJob
from enroll_sync.sync import jobs
from enroll_sync.sync.queue import enqueue_job
from enroll_sync.sync.selection import RegistrationFilter, Selection
from tests.test_sync_support import BACKENDS, connect_to_sandbox, local_ids, sandbox, wait_for  # noqa: F401
from tests.test_sync_support import backend_app as _backend_app

FAST_RECOVERY = {"JOB_STALE_SECONDS": "2", "JOB_HEARTBEAT_SECONDS": "0.3", "JOB_RECOVERY_SECONDS": "0.5",
                 "JOB_TASKS": "2", "WORKERS": "2", "JOB_BATCHES_PER_EXPORT": "1"}
ENROLL_SYNC = str(Path(sys.executable).with_name("enroll-sync"))

@pytest.fixture(params=BACKENDS)
def backend_app(request, tmp_path):
    yield from _backend_app(request.param, tmp_path, **FAST_RECOVERY)


class Workers:
    def __init__(self, app, tmp_path):
        self.env = dict(os.environ)
        self.env.update({"ENROLL_SYNC_INSTANCE_PATH": app.config["INSTANCE_PATH"],
                         "ENROLL_SYNC_DATABASE_URL": app.config["DATABASE_URL"],
                         "ENROLL_SYNC_QUEUE_URL": app.config["QUEUE_URL"],
                         **{"ENROLL_SYNC_" + k: v for k, v in FAST_RECOVERY.items()}})
        self.log_dir = tmp_path
        self.procs = []

    def start(self):
        n = len(self.procs)
        log = open(self.log_dir / f"worker-{n}.log", "wb")
        proc = subprocess.Popen([ENROLL_SYNC, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def logs(self):
        return "\n".join((self.log_dir / f"worker-{i}.log").read_text(errors="replace")[-3000:]
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
def workers(backend_app, tmp_path):
    w = Workers(backend_app, tmp_path)
    yield w
    w.stop_all()


def _kill_when(store, method, nth, proc_ref):
    """Make the sandbox SIGKILL the current worker right after its ``nth`` call of
    ``store.method`` -- i.e. while the worker waits for the SIS's answer to a batch
    the SIS has already (partly) stored."""
    real = getattr(store, method)
    calls = {"n": 0}

    def hooked(*a, **kw):
        result = real(*a, **kw)
        calls["n"] += 1
        if calls["n"] == nth and proc_ref[0] is not None and proc_ref[0].poll() is None:
            os.kill(proc_ref[0].pid, signal.SIGKILL)
        return result

    setattr(store, method, hooked)
    return lambda: setattr(store, method, real)


def test_worker_killed_mid_job_and_restarted_finishes_without_duplicates(backend_app, workers, sandbox):
    app = backend_app
    connect_to_sandbox(app, sandbox, batch_size=3)
    sandbox.set_faults(latency_ms=30)
    with app.app_context(), database.connection_context():
        org = Organization.get().id
        job = jobs.create_job(app, org, None, Selection(filter=RegistrationFilter(status="Approved"),
                                                        all_matching=True))
        total = job.total
        assert total >= 9
        enqueue_job(app, job.id)  # through the real queue

    current = [None]
    undo = _kill_when(sandbox.store, "insert", 5, current)
    current[0] = workers.start()
    assert current[0].wait(60) == -signal.SIGKILL, workers.logs()
    undo()

    with app.app_context(), database.connection_context():
        succeeded = SyncItem.select().where((SyncItem.job == job.id) & (SyncItem.status == "Succeeded")).count()
        held = Registration.select().where(Registration.sync_lock.is_null(False)).count()
        assert SyncJob.get_by_id(job.id).status == "Running"
    # the dangerous moment was hit: the SIS has students the database has not recorded yet
    assert len(sandbox.dump()) > succeeded and held > 0

    # restart; die again while re-sending the in-flight batch (an update, thanks to the match)
    undo = _kill_when(sandbox.store, "update", 1, current)
    current[0] = workers.start()
    assert current[0].wait(60) == -signal.SIGKILL, workers.logs()
    undo()

    # restart once more: it finishes the job
    current[0] = workers.start()
    wait_for(lambda: _status(app, job.id) == "Completed", timeout=60, interval=0.2,
             message="the job to complete after the restarts\n" + workers.logs())

    with app.app_context(), database.connection_context():
        items = list(SyncItem.select().where(SyncItem.job == job.id))
        assert len(items) == total
        assert {i.status for i in items} == {"Succeeded"}
        regs = {r.id: r for r in Registration.select().where(Registration.id.in_([i.registration_id for i in items]))}
        assert {r.sync_status for r in regs.values()} == {"Succeeded"}
        assert Registration.select().where(Registration.sync_lock.is_null(False)).count() == 0
        dump = {str(s["local_id"]): s for s in sandbox.dump()}
        for r in regs.values():
            assert sis_id_for(r.student_id, r.school.sync_connection) == str(dump[str(r.form_id)]["id"])
    ids = local_ids(sandbox.dump())
    assert len(ids) == len(set(ids)) == total  # nobody inserted twice


def _status(app, job_id):
    with app.app_context(), database.connection_context():
        return SyncJob.get_by_id(job_id).status


def test_two_worker_processes_share_one_job(backend_app, workers, sandbox):
    app = backend_app
    connect_to_sandbox(app, sandbox, batch_size=2)
    sandbox.set_faults(latency_ms=60)
    with app.app_context(), database.connection_context():
        job = jobs.create_job(app, Organization.get().id, None,
                              Selection(filter=RegistrationFilter(status="Approved"), all_matching=True))
    workers.start()
    workers.start()
    # both are up before the job is handed over, so neither can take it all alone
    wait_for(lambda: all("consumer thread(s)" in (workers.log_dir / f"worker-{i}.log").read_text()
                         for i in range(2)), timeout=30, message="two workers to start")
    with app.app_context(), database.connection_context():
        enqueue_job(app, job.id, tasks=4)
    wait_for(lambda: _status(app, job.id) == "Completed", timeout=60, interval=0.2,
             message="the job to complete\n" + workers.logs())
    with app.app_context(), database.connection_context():
        assert {i.status for i in SyncItem.select().where(SyncItem.job == job.id)} == {"Succeeded"}
        total = job.total
    ids = local_ids(sandbox.dump())
    assert len(ids) == len(set(ids)) == total
    workers.stop_all()
    # both processes did part of it
    for i in range(2):
        log = (workers.log_dir / f"worker-{i}.log").read_text()
        assert re.search(rf"sync job {job.id}: this task sent [1-9]\d* record", log), log[-2000:]
