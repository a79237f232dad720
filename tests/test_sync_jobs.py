"""The sync job runner against the PowerSchool sandbox over a real socket: statuses,
re-checks, mapping errors, SIS faults with bounded retries, two jobs over the same
students, crash recovery without duplicates, Partial Sync and redaction.

These call the real runner (``run_job``) in the test process, on SQLite and (when
ENROLL_SYNC_TEST_POSTGRES_URL and _REDIS_URL are set) on PostgreSQL; the queue itself is
exercised by test_sync_flow.py (in-process consumer) and test_queue_workers.py
(``enroll-sync worker`` processes, SIGKILL)."""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.models import SisLink
from enroll_sync import ExportResult, FieldError, FieldSection, Outcome, SettingField, SISAdapter, TargetField
from enroll_sync.sync.connections import create_connection, open_adapter
from enroll_sync.db import database
from enroll_sync.sync.mappings.versions import save_rows
from enroll_sync.models import (Mapping, Organization, Registration, School, SyncConnection, SyncItem, SyncJob,
                                utcnow)
from enroll_sync.sync import jobs, runner, recovery
from enroll_sync.sync.selection import RegistrationFilter, Selection
from tests.conftest import make_app
from tests.test_sync_support import BACKENDS, backend_app, connect_to_sandbox, local_ids, sandbox, wait_for  # noqa: F401


@pytest.fixture(params=BACKENDS)
def app(request, tmp_path):
    """The job runner's guarantees hold on SQLite and on PostgreSQL (the queue is not used here)."""
    yield from backend_app(request.param, tmp_path)


APPROVED = Selection(filter=RegistrationFilter(status="Approved"), all_matching=True)


def _org(app):
    return Organization.get().id


def _approved_with_connection():
    return list(Registration.select().join(School).where(
        (Registration.status == "Approved") & School.sync_connection.is_null(False)).order_by(Registration.id))


def _items(job_id):
    return {i.registration_id: i for i in SyncItem.select().where(SyncItem.job == job_id)}


def test_a_job_syncs_approved_registrations_and_the_next_sync_updates(app, sandbox):
    connect_to_sandbox(app, sandbox, batch_size=4)
    with app.app_context(), database.connection_context():
        regs = _approved_with_connection()
        job = jobs.create_job(app, _org(app), None, APPROVED)
        assert job.total == len(regs) > 8
        assert {r.sync_status for r in Registration.select().where(Registration.id.in_([r.id for r in regs]))} == {"Pending"}
        stats = runner.run_job(app, job.id)
        assert stats.finished
        # sent in batches of the adapter's size (4)
        posts = [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/ws/v1/student"]
        assert len(posts) == -(-len(regs) // 4)
        job = SyncJob.get_by_id(job.id)
        assert job.status == "Completed" and job.finished_at and job.message.startswith(f"{len(regs)} succeeded")
        items = _items(job.id)
        dump = {str(s["local_id"]): s for s in sandbox.dump()}
        assert len(dump) == len(regs)
        # every record says which version of the mapping it was sent with
        version = Mapping.get(Mapping.connection == SyncConnection.get(SyncConnection.adapter == "powerschool")).version
        assert version >= 1 and {i.mapping_version for i in items.values()} == {version}
        for reg in regs:
            reg = Registration.get_by_id(reg.id)
            item = items[reg.id]
            assert item.status == "Succeeded" and item.action == "insert"
            assert reg.sync_status == "Succeeded" and reg.last_synced_at and reg.sync_lock is None
            # the SIS id stored is the id PowerSchool gave the student (its DCID)
            assert sis_id_for(reg.student_id, reg.school.sync_connection) == item.sis_id == str(dump[str(reg.form_id)]["id"])
            assert dump[str(reg.form_id)]["name"]["last_name"] == reg.answers["student_legal_last_name"].strip()
            assert item.sent["local_id"] == reg.form_id and item.response["status"] == "SUCCESS"
        # the next sync of the same students is an update: no second student in the SIS
        job2 = jobs.create_job(app, _org(app), None, APPROVED)
        runner.run_job(app, job2.id)
        assert {i.action for i in _items(job2.id).values()} == {"update"}
        assert {i.status for i in _items(job2.id).values()} == {"Succeeded"}
    assert sorted(local_ids(sandbox.dump())) == sorted(dump)


def test_not_approved_registration_forced_into_a_job_is_skipped(app, sandbox):
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        org = _org(app)
        approved = _approved_with_connection()[:3]
        submitted = (Registration.select().join(School).where(
            (Registration.status == "Submitted") & School.sync_connection.is_null(False)).first())
        ids = tuple(r.id for r in approved) + (submitted.id,)
        # the page would leave it out; force it in as a crafted request or an API could
        job = jobs.create_job(app, org, None, Selection(ids=ids), only_eligible=False)
        assert job.total == 4
        # and one that was Approved when the job was made, but is not any more when it runs
        Registration.update(status="Withdrawn").where(Registration.id == approved[2].id).execute()
        runner.run_job(app, job.id)
        items = _items(job.id)
        assert items[submitted.id].status == "Skipped" and "Not Approved" in items[submitted.id].reason
        assert items[approved[2].id].status == "Skipped" and "Withdrawn" in items[approved[2].id].reason
        assert items[approved[0].id].status == items[approved[1].id].status == "Succeeded"
        # a skipped registration keeps the Sync Status it had (it never reached the SIS)
        assert Registration.get_by_id(submitted.id).sync_status == "Not Synced"
        assert not SisLink.select().where(SisLink.student == submitted.student_id).exists()
        assert SyncJob.get_by_id(job.id).status == "Completed"
        forms = {str(approved[0].form_id), str(approved[1].form_id)}
    assert set(local_ids(sandbox.dump())) == forms


def test_records_whose_mapping_fails_are_failed_and_never_sent(app, sandbox):
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        regs = _approved_with_connection()[:4]
        bad = regs[1]
        answers = dict(bad.answers, birth_date="next tuesday")
        Registration.update(answers=answers).where(Registration.id == bad.id).execute()
        job = jobs.create_job(app, _org(app), None, Selection(ids=tuple(r.id for r in regs)))
        runner.run_job(app, job.id)
        item = _items(job.id)[bad.id]
        assert item.status == "Failed" and item.sent is None
        assert item.reason.startswith("Not sent:") and "next tuesday" in item.reason
        assert any(e["field"] == "demographics.birth_date" for e in item.errors)
        assert Registration.get_by_id(bad.id).sync_status == "Failed"
        good = {str(r.form_id) for r in regs if r.id != bad.id}
    assert set(local_ids(sandbox.dump())) == good


def _student_posts(sandbox):
    return [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/ws/v1/student"]


@pytest.mark.parametrize("fault, settings, expect, posts", [
    # a few 500s: retried, then accepted
    ({"fail_500": 2}, {}, "Succeeded", 3),
    # 500 on every attempt: bounded (max_attempts=3), then Failed with the reason
    ({"fail_500": 50}, {}, "Failed", 3),
    # a 429 burst with Retry-After: waited out, then accepted
    ({"burst_429": 2, "retry_after": "0"}, {}, "Succeeded", 3),
    # throttled on every attempt: the adapter gives up after 3 tries and says RETRY; the job
    # sends it again JOB_RETRY_ATTEMPTS (2) times, 3 tries each; then Failed, bounded
    ({"burst_429": 50, "retry_after": "0"}, {}, "Failed", 9),
    # one timeout (the SIS hangs longer than the adapter waits): retried, accepted
    ({"timeouts": 1, "hang_s": 1.0}, {"timeout_s": 0.3}, "Succeeded", 2),
    # timeouts on every attempt: Failed, bounded
    ({"timeouts": 50, "hang_s": 1.0}, {"timeout_s": 0.3}, "Failed", 3),
])
def test_sis_faults_end_in_true_statuses_with_bounded_retries(app, sandbox, fault, settings, expect, posts):
    connect_to_sandbox(app, sandbox, **settings)
    with app.app_context(), database.connection_context():
        regs = _approved_with_connection()[:5]
        conn = SyncConnection.get(SyncConnection.adapter == "powerschool")
        open_adapter(conn, app).check_connection()  # token fetched before the faults
        sandbox.clear_requests()
        sandbox.set_faults(fault_path="/ws/v1/student", **fault)
        job = jobs.create_job(app, _org(app), None, Selection(ids=tuple(r.id for r in regs)))
        t0 = time.monotonic()
        runner.run_job(app, job.id)
        assert time.monotonic() - t0 < 15
        items = _items(job.id)
        assert {i.status for i in items.values()} == {expect}
        assert {Registration.get_by_id(r.id).sync_status for r in regs} == {expect}
        assert SyncJob.get_by_id(job.id).status == "Completed"
        if expect == "Failed":
            reason = next(iter(items.values())).reason
            assert reason and ("500" in reason or "429" in reason or "time" in reason.lower()), reason
            if "429" in str(fault):
                assert reason.startswith("The SIS asked to try again later 3 times"), reason
            assert not SisLink.select().where(SisLink.student.in_([r.student_id for r in regs])).exists()
    # a hung request is logged by the sandbox when it finally answers (after hang_s)
    wait_for(lambda: len(_student_posts(sandbox)) >= posts, timeout=5, message=f"{posts} POSTs")
    time.sleep(0.05)
    assert len(_student_posts(sandbox)) == posts
    assert len(sandbox.dump()) == (5 if expect == "Succeeded" else 0)


def test_a_record_the_sis_refuses_fails_alone_with_its_reason(app, sandbox):
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        regs = _approved_with_connection()[:6]
        victim = regs[2]
        sandbox.set_faults(reject_local_ids=[str(victim.form_id)])
        job = jobs.create_job(app, _org(app), None, Selection(ids=tuple(r.id for r in regs)))
        runner.run_job(app, job.id)
        items = _items(job.id)
        assert items[victim.id].status == "Failed" and items[victim.id].reason
        assert items[victim.id].sent["local_id"] == victim.form_id  # it was sent; the SIS said no
        assert Counter(i.status for i in items.values()) == {"Succeeded": 5, "Failed": 1}
        # Retry failed: only that record, and (fault cleared) it succeeds
        sandbox.set_faults(reject_local_ids=[])
        retry = jobs.create_retry_job(app, SyncJob.get_by_id(job.id), None)
        assert retry.total == 1 and retry.kind == "retry" and retry.retry_of_id == job.id
        runner.run_job(app, retry.id)
        assert [i.status for i in _items(retry.id).values()] == ["Succeeded"]
        assert Registration.get_by_id(victim.id).sync_status == "Succeeded"
        assert jobs.create_retry_job(app, SyncJob.get_by_id(retry.id), None) is None
    assert sorted(local_ids(sandbox.dump())) == sorted(str(r.form_id) for r in regs)


def test_two_jobs_over_the_same_students_never_export_one_twice_at_once(app, sandbox, monkeypatch):
    from sis_powerschool.adapter import PowerSchoolAdapter
    connect_to_sandbox(app, sandbox, batch_size=3)
    sandbox.set_faults(latency_ms=40)
    in_flight: Counter = Counter()
    overlaps = []
    seen = Counter()
    lock = threading.Lock()
    real_export = PowerSchoolAdapter.export

    def watched_export(self, records):
        ids = [r.record_id for r in records]
        with lock:
            for i in ids:
                if in_flight[i]:
                    overlaps.append(i)
                in_flight[i] += 1
                seen[i] += 1
        try:
            return real_export(self, records)
        finally:
            with lock:
                for i in ids:
                    in_flight[i] -= 1

    monkeypatch.setattr(PowerSchoolAdapter, "export", watched_export)
    with app.app_context(), database.connection_context():
        regs = _approved_with_connection()
        a = jobs.create_job(app, _org(app), None, APPROVED)
        b = jobs.create_job(app, _org(app), None, APPROVED)
    errors = []

    def run(job_id):
        try:
            with app.app_context(), database.connection_context():
                runner.run_job(app, job_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(j.id,)) for j in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not overlaps
    assert set(seen.values()) == {2}  # each student exported once per job, never at the same time
    with app.app_context(), database.connection_context():
        for j in (a, b):
            assert SyncJob.get_by_id(j.id).status == "Completed"
            assert {i.status for i in _items(j.id).values()} == {"Succeeded"}
        assert Registration.select().where(Registration.sync_lock.is_null(False)).count() == 0
    assert len(sandbox.dump()) == len(regs) == len(set(local_ids(sandbox.dump())))


def test_a_task_that_died_mid_export_is_recovered_without_a_duplicate(app, sandbox):
    """The worst moment to die: the SIS stored the batch, the worker never recorded it."""
    connect_to_sandbox(app, sandbox, batch_size=5)
    app.config["JOB_STALE_SECONDS"] = 1
    app.config["JOB_BATCHES_PER_EXPORT"] = 1
    with app.app_context(), database.connection_context():
        regs = _approved_with_connection()
        job = jobs.create_job(app, _org(app), None, APPROVED)
        dead = runner.JobRunner(app, SyncJob.get_by_id(job.id))
        conn_id, mine = dead.claim()
        assert len(mine) == 5
        # the dead task's export reached the SIS...
        conn = SyncConnection.get_by_id(conn_id)
        from enroll_sync.catalog import source_values
        from enroll_sync.mapping import MappingContext
        check = dead.check(conn)
        batch = [Registration.get_by_id(r) for _, r in mine]
        from enroll_sync.adapters import ExportRecord
        open_adapter(conn, app).export([ExportRecord(str(r.id), check.compiled(source_values(r), MappingContext(insert=True)).payload)
                                        for r in batch])
        assert len(sandbox.dump()) == 5
        # ...and then it died: its records stay In Progress, held by markers nobody refreshes
        assert {Registration.get_by_id(r).sync_status for _, r in mine} == {"In Progress"}
        # a live task of the same job leaves them alone while they are fresh
        live = runner.run_job(app, job.id)
        assert not live.finished
        assert SyncJob.get_by_id(job.id).status == "Running"
        requeued = []
        assert recovery.recover(app, lambda j, n: requeued.append(j), lambda: {}) == []  # not stale yet
        time.sleep(1.2)
        SyncJob.update(heartbeat_at=utcnow() - dt.timedelta(seconds=5)).where(SyncJob.id == job.id).execute()
        assert recovery.recover(app, lambda j, n: requeued.append(j), lambda: {}) == [job.id]
        assert {SyncItem.get_by_id(i).status for i, _ in mine} == {"Pending"}
        runner.run_job(app, job.id)
        items = _items(job.id)
        assert {i.status for i in items.values()} == {"Succeeded"}
        assert {items[r].action for _, r in mine} == {"update"}  # matched, not inserted again
        assert SyncJob.get_by_id(job.id).status == "Completed"
    dump = local_ids(sandbox.dump())
    assert len(dump) == len(set(dump)) == len(regs)


# --------------------------------------------------------------------------- Partial Sync and redaction

API_KEY = "fake-api-key-5ecr3t"


class FakeSIS(SISAdapter):
    """An adapter that accepts everyone, keeps some data back (Partial Sync) and
    echoes its credentials in the answer, as a careless SIS might."""

    name = "fake"
    label = "Fake SIS"

    @classmethod
    def settings_schema(cls):
        return [SettingField("api_key", "API key", "secret", required=True)]

    def target_fields(self):
        return [FieldSection("student", "Student", (
            TargetField("first_name", "First Name", required=True),
            TargetField("last_name", "Last Name", required=True),
            TargetField("phone", "Phone")))]

    def export(self, records):
        out = []
        for r in records:
            partial = r.payload.get("phone") is None
            out.append(ExportResult(
                record_id=r.record_id, outcome=Outcome.PARTIAL if partial else Outcome.SUCCEEDED,
                sis_id=f"F{r.record_id}", action="insert", sent=dict(r.payload, api_key=self.settings["api_key"]),
                response={"ok": True, "access_token": "tok-123", "note": f"used key {self.settings['api_key']}",
                          "auth": "Bearer abc.def.ghi"},
                errors=[FieldError("phone", "MISSING", "Phone was not saved")] if partial else [],
                message="Saved, but the phone number was not." if partial else "Saved."))
        return out


class FakePlugin:
    from enroll_sync import hookimpl

    @hookimpl
    def register_sis_adapters(self):
        return [FakeSIS]


@pytest.fixture
def fake_app(tmp_path):
    from enroll_sync.demo import load_demo
    from enroll_sync.migrations import upgrade
    app = make_app(tmp_path, EXTRA_PLUGINS=[FakePlugin()])
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(app.extensions["enroll_sync.plugins"], {"powerschool": "http://127.0.0.1:9"}, registrations=30)
        org = Organization.get()
        conn = create_connection(org, "fake", "Fake SIS", "sandbox", {"api_key": API_KEY}, app=app)
        School.update(sync_connection=conn).execute()
        save_rows(conn, "export_student", None, [
            {"to": "first_name", "type": "direct", "from": "student_legal_first_name"},
            {"to": "last_name", "type": "direct", "from": "student_legal_last_name"},
            {"to": "phone", "type": "direct", "from": "home_phone"}], None)
    yield app
    if not database.is_closed():
        database.close()


def test_partial_sync_and_secrets_redacted_from_history(fake_app):
    from tests.conftest import LiveServer, ROLE_EMAIL, sign_in
    app = fake_app
    with app.app_context(), database.connection_context():
        job = jobs.create_job(app, _org(app), None, APPROVED)
        runner.run_job(app, job.id)
        items = list(SyncItem.select().where(SyncItem.job == job.id))
        statuses = Counter(i.status for i in items)
        assert statuses["Partial Sync"] and statuses["Succeeded"] and sum(statuses.values()) == job.total
        partial = next(i for i in items if i.status == "Partial Sync")
        reg = Registration.get_by_id(partial.registration_id)
        assert reg.sync_status == "Partial Sync" and sis_id_for(reg.student_id, reg.school.sync_connection) == f"F{reg.id}"
        assert partial.reason == "Saved, but the phone number was not."
        assert partial.errors[-1]["field"] == "phone"
        for item in items:
            stored = (item.sent, item.response)
            assert API_KEY not in repr(stored) and "tok-123" not in repr(stored) and "abc.def.ghi" not in repr(stored)
        form_id = reg.form_id
    server = LiveServer(app)
    try:
        page = sign_in(server.url, ROLE_EMAIL["Registrar"]).page(f"/registrations/{form_id}")
    finally:
        server.stop()
    assert page.status_code == 200
    assert 'data-testid="sync-status">Partial Sync<' in page.text
    assert "Payload sent and SIS answer" in page.text and "[redacted]" in page.text
    assert API_KEY not in page.text and "tok-123" not in page.text and "abc.def.ghi" not in page.text
    assert "Phone was not saved" in page.text
