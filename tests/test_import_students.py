"""Import: SIS students into Enroll, over real sockets against both sandboxes.

5,000 students from each sandbox; the same import again changes nothing; students
changed and fields nulled in the SIS are updated, the nulls ignored where Overwrite is
unchecked and applied where it is checked; a page answering 500 is read again; a page
that keeps failing stops the job, and Resume finishes it without a duplicate; an
interrupted import resumes; two SIS students for one Enroll student are a conflict.
"""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from enroll_sync.db import database
from enroll_sync.models import (IMPORT_CONFLICT, IMPORT_CREATED, IMPORT_UNCHANGED, IMPORT_UPDATED, JOB_DONE,
                                JOB_FAILED, JOB_QUEUED, LINK_IMPORTED, ImportItem, ImportRun, Registration, SisLink,
                                Student, StudentProfile, SyncConnection, SyncJob, utcnow)
from enroll_sync.sync.imports.jobs import resume_import, start_import
from enroll_sync.sync.imports.runner import ImportRunner, run_import_job, stalled_imports
from enroll_sync.testing import close_database, import_counts, run_import
from tests.test_sync_support import BACKENDS, backend_app

from tests.import_helpers import (EDFI_OVERWRITE, EDFI_TO_ENROLL, set_up_edfi, set_up_powerschool, untwin_edfi,
                            untwin_powerschool)

N = 5000


@pytest.fixture(scope="module")
def ps():
    from sis_powerschool.sandbox import serve_in_thread
    handle = serve_in_thread(port=0)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def edfi():
    from sis_generic.sandbox import serve_in_thread
    handle = serve_in_thread(port=0)
    yield handle
    handle.stop()


@pytest.fixture(params=BACKENDS)
def app(request, tmp_path, ps, edfi):
    """The demo district without registrations (so every SIS student is new to Enroll),
    its connections on the two sandboxes, retrying quickly; on SQLite and (when
    ENROLL_SYNC_TEST_POSTGRES_URL and _REDIS_URL are set) on PostgreSQL."""
    ps.reset()
    edfi.reset()
    for application in backend_app(request.param, tmp_path, JOB_RETRY_BACKOFF_SECONDS="0.01"):
        with application.app_context(), database.connection_context():
            Registration.delete().execute()
            Student.delete().execute()
            for conn in SyncConnection.select():
                if conn.adapter == "powerschool":
                    moved = {"server_url": ps.url}
                else:
                    from sis_generic.sandbox import edfi_settings
                    moved = {k: v for k, v in edfi_settings(edfi.url).items()
                             if k in ("base_url", "schema_url", "oauth_url")}
                conn.settings = {**conn.settings, **moved, "retry_backoff": 0.01, "max_backoff": 0.05}
                conn.updated_at = utcnow()
                conn.save()
        yield application
    close_database()


def profiles(app, conn_id) -> dict[str, dict]:
    """SIS id -> the imported values of the student linked to it."""
    with app.app_context(), database.connection_context():
        return {sis: values for sis, values in StudentProfile.select(StudentProfile.sis_id, StudentProfile.values)
                .where(StudentProfile.connection == conn_id).tuples()}


def enroll_state(app, conn_id) -> tuple[int, int]:
    with app.app_context(), database.connection_context():
        return (Student.select().count(),
                SisLink.select().where(SisLink.connection == conn_id).count())


# --------------------------------------------------------------------------- PowerSchool

def test_powerschool_import_then_again_then_changes_and_nulls(app, ps):
    conn_id = set_up_powerschool(app)
    ps.seed_students(N, seed=7)
    untwin_powerschool(ps)

    preview = run_import(app, conn_id, preview=True)
    assert preview.status == JOB_DONE, preview.message
    assert preview.counts == {IMPORT_CREATED: N}
    assert enroll_state(app, conn_id) == (0, 0), "a preview writes nothing"

    first = run_import(app, conn_id)
    assert first.counts == {IMPORT_CREATED: N}, first.message
    assert enroll_state(app, conn_id) == (N, N)
    with app.app_context(), database.connection_context():
        assert {h for (h,) in SisLink.select(SisLink.how).tuples()} == {LINK_IMPORTED}

    again = run_import(app, conn_id)
    assert again.counts == {IMPORT_UNCHANGED: N}, "the same SIS imported again changes nothing"
    assert enroll_state(app, conn_id) == (N, N)

    # staff change 10 students' cities and clear 3 middle names (Overwrite checked) and
    # 2 home phones (Overwrite unchecked)
    docs = ps.dump()
    changed = docs[:10]
    for doc in changed:
        ps.change_student(doc["id"], {"addresses.physical.city": "Kerman"})
    middles = [d for d in docs[10:] if (d.get("name") or {}).get("middle_name")][:3]
    phones = [d for d in docs[10:] if d not in middles and (d.get("phones") or {}).get("main")][:2]
    for doc in middles:
        ps.change_student(doc["id"], {"name.middle_name": None})
    for doc in phones:
        ps.change_student(doc["id"], {"phones.main.number": None})

    third = run_import(app, conn_id)
    assert third.counts == {IMPORT_UPDATED: 13, IMPORT_UNCHANGED: N - 13}, third.message
    values = profiles(app, conn_id)
    assert all(values[str(d["id"])]["home_city"] == "Kerman" for d in changed)
    assert all("student_legal_middle_name" not in values[str(d["id"])] for d in middles), "Overwrite: cleared"
    assert all(values[str(d["id"])]["home_phone"] == d["phones"]["main"]["number"] for d in phones), \
        "no Overwrite: the null SIS value is ignored"
    with app.app_context(), database.connection_context():
        job = SyncJob.select().order_by(SyncJob.id.desc()).first()
        item = ImportItem.get((ImportItem.job == job.id) & (ImportItem.sis_id == str(middles[0]["id"])))
        assert item.changes["student_legal_middle_name"][1] is None
        assert "Student Legal Middle Name (cleared)" in item.reason
        unchanged = ImportItem.get((ImportItem.job == job.id) & (ImportItem.sis_id == str(phones[0]["id"])))
        assert unchanged.status == IMPORT_UNCHANGED


def test_powerschool_page_answering_500_mid_import_is_read_again(app, ps):
    conn_id = set_up_powerschool(app)
    ps.seed_students(1200, seed=3)
    untwin_powerschool(ps)
    ps.set_faults(student_max_page_size=100, page_error_at=4)  # fails once; the transport reads it again
    result = run_import(app, conn_id)
    assert result.status == JOB_DONE
    assert result.counts == {IMPORT_CREATED: 1200}
    assert enroll_state(app, conn_id) == (1200, 1200)
    assert any(r["status"] == 500 and "page=4" in r["query"] for r in ps.requests())


def test_powerschool_page_that_keeps_failing_stops_and_resume_finishes_without_duplicates(app, ps):
    conn_id = set_up_powerschool(app)
    ps.seed_students(1000, seed=4)
    untwin_powerschool(ps)
    ps.set_faults(student_max_page_size=100, page_error_at=6, page_error_times=1000)
    result = run_import(app, conn_id)
    assert result.status == JOB_FAILED
    assert "Page 6" in result.message and "Resume continues" in result.message
    assert result.counts == {IMPORT_CREATED: 500}, "the five pages before it are imported"
    ps.set_faults(page_error_at=0, page_error_times=1)
    with app.app_context(), database.connection_context():
        job = SyncJob.get_by_id(result.id)
        assert resume_import(job)
        run_import_job(app, job.id)
    done = import_counts(app, result.id)
    assert done.status == JOB_DONE and done.counts == {IMPORT_CREATED: 1000}
    assert enroll_state(app, conn_id) == (1000, 1000)


def test_an_interrupted_import_resumes_after_its_last_recorded_page(app, ps):
    """A worker told to stop (shutting down) hands the job back after its page; the next
    task goes on from the stored cursor. (A worker killed mid-page leaves the page
    unrecorded: its transaction never committed, and recovery hands the job on once its
    heartbeat is stale: see the next test.)"""
    conn_id = set_up_powerschool(app)
    ps.seed_students(900, seed=5)
    untwin_powerschool(ps)
    ps.set_faults(student_max_page_size=100)
    with app.app_context(), database.connection_context():
        job = start_import(app, SyncConnection.get_by_id(conn_id), None, preview=False)
        stop = threading.Event()
        runner = ImportRunner(app, job, stop=stop)
        original = runner.record

        def record_then_stop(rule, page):  # the worker is told to stop after three pages
            original(rule, page)
            if runner.stats.pages == 3:
                stop.set()
        runner.record = record_then_stop
        requeued = []
        stats = runner.run(requeue=requeued.append)
        assert stats.stopped and requeued == [job.id], "the stopping worker hands the job back"
        assert SyncJob.get_by_id(job.id).status == JOB_QUEUED
        assert ImportRun.get(ImportRun.job == job.id).cursor == "4:100"
        run_import_job(app, job.id)
    done = import_counts(app, job.id)
    assert done.status == JOB_DONE and done.counts == {IMPORT_CREATED: 900}
    assert enroll_state(app, conn_id) == (900, 900)


def test_a_task_killed_mid_page_is_taken_over_without_duplicates(app, ps):
    conn_id = set_up_powerschool(app)
    ps.seed_students(700, seed=10)
    untwin_powerschool(ps)
    ps.set_faults(student_max_page_size=100)
    with app.app_context(), database.connection_context():
        job = start_import(app, SyncConnection.get_by_id(conn_id), None, preview=False)
        runner = ImportRunner(app, job)
        original = runner.write_enroll

        def die_in_page_four(decisions, now):  # the process dies while recording page 4
            original(decisions, now)
            if runner.stats.pages == 3:
                raise SystemExit("killed")
        runner.write_enroll = die_in_page_four
        with pytest.raises(SystemExit):
            runner.run()
        assert SyncJob.get_by_id(job.id).status == "Running" and ImportRun.get(ImportRun.job == job.id).pages == 3
        assert enroll_state(app, conn_id)[0] == 300, "page 4 was never committed"
        # recovery finds the job's heartbeat stale and a new task takes it over (a new lease)
        SyncJob.update(heartbeat_at=utcnow() - dt.timedelta(hours=1)).where(SyncJob.id == job.id).execute()
        assert job.id in stalled_imports(app)
        run_import_job(app, job.id)
    done = import_counts(app, job.id)
    assert done.status == JOB_DONE and done.counts == {IMPORT_CREATED: 700}
    assert enroll_state(app, conn_id) == (700, 700)


def test_two_sis_students_for_one_enroll_student_are_a_conflict(app, ps):
    conn_id = set_up_powerschool(app)
    ps.seed_students(50, seed=6)
    untwin_powerschool(ps)
    assert run_import(app, conn_id).counts == {IMPORT_CREATED: 50}
    original = ps.dump()[7]
    # the SIS gets the same student twice (another local id, the same name and birth date)
    twin = ps.store.insert({**{k: v for k, v in original.items() if k != "id"}, "local_id": 999999,
                            "addresses": {"physical": {"street": "1 Other St", "city": "Elsewhere"}}})
    before = profiles(app, conn_id)[str(original["id"])]
    result = run_import(app, conn_id)
    assert result.counts == {IMPORT_UNCHANGED: 50, IMPORT_CONFLICT: 1}
    with app.app_context(), database.connection_context():
        item = ImportItem.get((ImportItem.job == result.id) & (ImportItem.status == IMPORT_CONFLICT))
        assert item.sis_id == str(twin)
        assert f"SIS students {original['id']} and {twin} both match" in item.reason
        assert SisLink.select().where(SisLink.sis_id == str(twin)).count() == 0
    assert profiles(app, conn_id)[str(original["id"])] == before, "no silent overwrite"
    assert enroll_state(app, conn_id) == (50, 50)
    # the preview says the same before anything is written
    preview = run_import(app, conn_id, preview=True)
    assert preview.counts == {IMPORT_UNCHANGED: 50, IMPORT_CONFLICT: 1}


def test_two_new_sis_students_that_are_one_person_conflict_in_the_preview_too(app, ps):
    conn_id = set_up_powerschool(app)
    ps.seed_students(30, seed=8)
    untwin_powerschool(ps)
    original = ps.dump()[3]
    ps.store.insert({**{k: v for k, v in original.items() if k != "id"}, "local_id": 999998})
    assert run_import(app, conn_id, preview=True).counts == {IMPORT_CREATED: 30, IMPORT_CONFLICT: 1}
    assert run_import(app, conn_id).counts == {IMPORT_CREATED: 30, IMPORT_CONFLICT: 1}
    assert enroll_state(app, conn_id) == (30, 30)


# --------------------------------------------------------------------------- Ed-Fi (generic adapter)

def test_edfi_import_then_incremental_runs_with_change_versions(app, edfi):
    conn_id = set_up_edfi(app)
    edfi.seed_students(N, seed=11)
    untwin_edfi(edfi)

    first = run_import(app, conn_id)
    assert first.status == JOB_DONE, first.message
    assert first.counts == {IMPORT_CREATED: N}
    assert enroll_state(app, conn_id) == (N, N)

    again = run_import(app, conn_id)
    assert again.status == JOB_DONE and again.counts == {}, "nothing changed in the SIS: nothing to read"
    full = run_import(app, conn_id, full=True)
    assert full.counts == {IMPORT_UNCHANGED: N}, "read in full: every student unchanged"

    drift = edfi.drift(change=10, null=5, seed=2)
    third = run_import(app, conn_id)
    nulls = [d for d in drift if d["new"] is None]
    cleared = [d for d in nulls if d["field"] in EDFI_OVERWRITE]
    kept = [d for d in nulls if d["field"] not in EDFI_OVERWRITE]
    assert third.counts == {IMPORT_UPDATED: 10 + len(cleared), IMPORT_UNCHANGED: len(kept)}, third.message
    values = profiles(app, conn_id)
    for d in cleared:
        assert EDFI_TO_ENROLL[d["field"]] not in values[d["id"]], f"{d['field']} cleared (Overwrite)"
    for d in kept:
        assert values[d["id"]].get(EDFI_TO_ENROLL[d["field"]]) not in (None, ""), \
            f"{d['field']}: null ignored (no Overwrite)"
    assert enroll_state(app, conn_id) == (N, N)


def test_edfi_page_answering_500_mid_import_is_read_again(app, edfi):
    conn_id = set_up_edfi(app)
    edfi.seed_students(1000, seed=12)
    untwin_edfi(edfi)
    edfi.set_faults(page_error_at=4)
    result = run_import(app, conn_id)
    assert result.status == JOB_DONE and result.counts == {IMPORT_CREATED: 1000}
    assert enroll_state(app, conn_id) == (1000, 1000)
    assert any(status == 500 for _, _, status in edfi.requests("GET", "/data/v3/ed-fi/students"))


def test_recovery_hands_a_stalled_import_to_its_own_task_and_never_completes_it(app, ps):
    """An import job has no sync records: the export's recovery must not call it complete;
    the import's recovery re-enqueues it once its heartbeat is stale."""
    from enroll_sync.sync.queue import queued_import_ids, recover_now
    conn_id = set_up_powerschool(app)
    ps.seed_students(10, seed=13)
    with app.app_context(), database.connection_context():
        job = start_import(app, SyncConnection.get_by_id(conn_id), None, preview=False)
    recover_now(app)
    assert import_counts(app, job.id).status == JOB_QUEUED, "a fresh import is left to its worker"
    with app.app_context(), database.connection_context():
        SyncJob.update(created_at=utcnow() - dt.timedelta(hours=1)).where(SyncJob.id == job.id).execute()
    assert job.id in recover_now(app) and job.id in queued_import_ids(app)
    assert import_counts(app, job.id).status == JOB_QUEUED
    with app.app_context(), database.connection_context():
        run_import_job(app, job.id)
    assert import_counts(app, job.id).counts == {IMPORT_CREATED: 10}
