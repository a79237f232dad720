"""The huey queue of an app: built from QUEUE_URL, kept per app, consumed in-process
(``serve``) with a clean stop, and recovery that neither loses nor duplicates a job."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from huey import RedisHuey, SqliteHuey

from enroll_sync.db import database
from enroll_sync.models import Organization, Registration, SyncItem, SyncJob, utcnow
from enroll_sync.sync import jobs
from enroll_sync.sync.queue import (enqueue_job, get_huey, make_huey, queued_job_ids, recover_now,
                                    start_in_process_consumer)
from enroll_sync.sync.selection import RegistrationFilter, Selection
from tests.conftest import make_app
from tests.test_sync_support import REDIS_URL, connect_to_sandbox, redis_queue_url, sandbox, wait_for  # noqa: F401

APPROVED = Selection(filter=RegistrationFilter(status="Approved"), all_matching=True)


def test_queue_url_picks_the_broker(tmp_path):
    q = make_huey(f"sqlite:///{tmp_path}/q/queue.db")
    assert isinstance(q, SqliteHuey) and q.name == "enroll_sync"
    assert (tmp_path / "q").is_dir()
    r = make_huey("redis://127.0.0.1:6379/3?name=district_a")
    assert isinstance(r, RedisHuey) and r.name == "district_a"
    assert r.storage.queue_key == "huey.redis.district_a"
    with pytest.raises(ValueError, match="sqlite:///path or redis://"):
        make_huey("amqp://localhost")
    with pytest.raises(ValueError, match="file path"):
        make_huey("sqlite:///:memory:")


def test_each_app_has_its_own_queue_and_tasks(tmp_path):
    a = make_app(tmp_path / "a")
    b = make_app(tmp_path / "b")
    ha, hb = get_huey(a), get_huey(b)
    assert ha is not hb and get_huey(a) is ha
    assert ha.storage.filename != hb.storage.filename
    assert ha._registry._registry.keys() == hb._registry._registry.keys() == {
        "enroll_sync.sync.queue.run_sync_job", "enroll_sync.sync.queue.run_import_job",
        "enroll_sync.sync.queue.start_scheduled_imports"}
    with a.app_context():
        database.connect(reuse_if_open=True)
        from enroll_sync.migrations import upgrade
        upgrade()
        enqueue_job(a, 41, tasks=2)
        database.close()
    assert ha.pending_count() == 2 and hb.pending_count() == 0
    assert queued_job_ids(a) == {41} and queued_job_ids(b) == set()


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="set ENROLL_SYNC_TEST_REDIS_URL")
def test_redis_queues_with_different_names_do_not_mix(tmp_path):
    url_a, flush_a = redis_queue_url()
    url_b, flush_b = redis_queue_url()
    try:
        a = make_app(tmp_path / "a", QUEUE_URL=url_a)
        b = make_app(tmp_path / "b", QUEUE_URL=url_b)
        with a.app_context():
            database.connect(reuse_if_open=True)
            from enroll_sync.migrations import upgrade
            upgrade()
            enqueue_job(a, 7, tasks=3)
            database.close()
        assert get_huey(a).pending_count() == 3 and get_huey(b).pending_count() == 0
        assert queued_job_ids(a) == {7}
    finally:
        flush_a()
        flush_b()


def test_in_process_consumer_runs_a_job_and_stops_cleanly_mid_job(app, sandbox):
    """serve's consumer: threads started with Consumer.start(); stop() lets the running
    task finish its batch, hands the rest back to the queue, and nothing is stuck."""
    connect_to_sandbox(app, sandbox, batch_size=2)
    sandbox.set_faults(latency_ms=150)
    with app.app_context(), database.connection_context():
        job = jobs.create_job(app, Organization.get().id, None, APPROVED)
        enqueue_job(app, job.id, tasks=1)
    before = {t.ident for t in threading.enumerate()}
    handle = start_in_process_consumer(app, workers=2)
    assert threading.current_thread() is threading.main_thread()  # no signal handler was needed
    wait_for(lambda: len(sandbox.dump()) >= 2, timeout=30, message="a first batch")
    handle.stop()
    leftover = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()
                and not t.name.startswith(("powerschool-sandbox", "Thread-"))]
    assert not [t for t in leftover if "Worker" in t.name or "recovery" in t.name]
    with app.app_context(), database.connection_context():
        items = list(SyncItem.select().where(SyncItem.job == job.id))
        done = [i for i in items if i.status == "Succeeded"]
        assert 0 < len(done) < len(items)  # stopped part-way
        assert not [i for i in items if i.status == "In Progress"]  # the batch was finished, not abandoned
        assert SyncJob.get_by_id(job.id).status == "Running"
    assert queued_job_ids(app) == {job.id}  # handed back to the queue for the next start
    sandbox.set_faults(latency_ms=0)
    handle = start_in_process_consumer(app)
    try:
        wait_for(lambda: _status(app, job.id) == "Completed", timeout=30, message="the job to complete")
    finally:
        handle.stop()
    with app.app_context(), database.connection_context():
        assert {i.status for i in SyncItem.select().where(SyncItem.job == job.id)} == {"Succeeded"}
    assert len(sandbox.dump()) == job.total


def _status(app, job_id):
    with app.app_context(), database.connection_context():
        return SyncJob.get_by_id(job_id).status


def test_recovery_requeues_a_lost_job_once_and_completes_a_finished_one(app, sandbox):
    connect_to_sandbox(app, sandbox)
    app.config["JOB_STALE_SECONDS"] = 30
    with app.app_context(), database.connection_context():
        org = Organization.get().id
        lost = jobs.create_job(app, org, None, APPROVED)            # its message never reached a worker
        waiting = jobs.create_job(app, org, None, Selection(ids=(Registration.select().first().id,)),
                                  only_eligible=False)
        enqueue_job(app, waiting.id)                                 # still waiting in the queue: leave it
        old = utcnow() - dt.timedelta(minutes=5)
        SyncJob.update(created_at=old).where(SyncJob.id.in_([lost.id, waiting.id])).execute()
        # a job whose items are all final but which was never marked Completed (died at the very end)
        ended = jobs.create_job(app, org, None, Selection(ids=(Registration.select().first().id,)),
                                only_eligible=False)
        SyncItem.update(status="Failed").where(SyncItem.job == ended.id).execute()
        SyncJob.update(status="Running", heartbeat_at=old, created_at=old).where(SyncJob.id == ended.id).execute()
    assert recover_now(app) == [lost.id]
    assert queued_job_ids(app) == {lost.id, waiting.id}
    assert recover_now(app) == []  # no second copy while one waits
    assert _status(app, ended.id) == "Completed"
    assert _status(app, lost.id) == "Queued"


def test_a_fresh_job_is_not_touched_by_recovery(app, sandbox):
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        job = jobs.create_job(app, Organization.get().id, None, APPROVED)
    assert recover_now(app) == []
    assert queued_job_ids(app) == set() and _status(app, job.id) == "Queued"
