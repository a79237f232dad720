"""SIS identity per connection, against real SIS sandboxes over sockets.

What districts do and the walkthrough invites: a Sandbox connection, then a Production
one; schools moved from a PowerSchool connection to an Ed-Fi one and back; a SIS
emptied, or restored from a backup under new ids; a worker killed after the SIS stored
a batch. Every sync must say the truth and the SIS must never get a duplicate.
"""
from __future__ import annotations

import pytest

from enroll_sync.db import database
from enroll_sync.models import (AuditLog, Organization, Registration, School, SisLink, SyncConnection, SyncItem,
                                SyncJob)
from enroll_sync.sync import jobs, runner
from enroll_sync.sync.connections import create_connection, drop_adapter, target_sections
from enroll_sync.sync.dry_run import dry_run
from enroll_sync.sync.links import link_scope, sis_id_for
from enroll_sync.sync.mappings.versions import save_rows
from enroll_sync.sync.selection import RegistrationFilter, Selection
from enroll_sync.sync.send_record import preview_record
from tests.test_sync_support import FAST, MAPPING_ROWS, connect_to_sandbox

APPROVED = Selection(filter=RegistrationFilter(status="Approved"), all_matching=True)

#: the smallest Ed-Fi students mapping (studentUniqueId is the natural key, so a repeated
#: POST updates the same student)
EDFI_ROWS = [
    {"to": "studentUniqueId", "type": "direct", "from": "registration.form_id"},
    {"to": "firstName", "type": "transformation", "from": "student_legal_first_name", "steps": [{"kind": "trim"}]},
    {"to": "lastSurname", "type": "transformation", "from": "student_legal_last_name", "steps": [{"kind": "trim"}]},
    {"to": "birthDate", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
]


@pytest.fixture
def ps_a():
    from sis_powerschool.sandbox import serve_in_thread
    handle = serve_in_thread(port=0, seed=7)
    yield handle
    handle.stop()


@pytest.fixture
def ps_b():
    """A second PowerSchool whose ids start elsewhere (it already holds 300 students)."""
    from sis_powerschool.sandbox import serve_in_thread
    handle = serve_in_thread(port=0, seed=8)
    handle.store.seed_students(300, seed=3, start_local_id=900001)
    yield handle
    handle.stop()


@pytest.fixture
def edfi():
    from sis_generic.sandbox import serve_in_thread
    handle = serve_in_thread(port=0)
    yield handle
    handle.stop()


def _org(app):
    with app.app_context(), database.connection_context():
        return Organization.get().id


def syncable(app):
    with app.app_context(), database.connection_context():
        return [r for r in Registration.select().where(Registration.status == "Approved")
                if r.school.school_number != "901"]


def sync_all(app) -> SyncJob:
    """Every Approved registration through a job run to the end in this process."""
    with app.app_context(), database.connection_context():
        job = jobs.create_job(app, _org(app), None, APPROVED)
        assert job is not None
        runner.run_job(app, job.id)
        return SyncJob.get_by_id(job.id)


def items(app, job_id) -> list[SyncItem]:
    with app.app_context(), database.connection_context():
        return list(SyncItem.select().where(SyncItem.job == job_id).order_by(SyncItem.id))


def move_schools(app, conn_id):
    with app.app_context(), database.connection_context():
        School.update(sync_connection=conn_id).where(School.school_number != "901").execute()


def add_powerschool(app, name, sandbox, environment="production") -> int:
    with app.app_context(), database.connection_context():
        org = Organization.get()
        conn = create_connection(org, "powerschool", name, environment, {
            "server_url": sandbox.url, "client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
            "batch_size": "50", "match_existing": "1"})
        conn.settings = {**conn.settings, **FAST}
        conn.save()
        target_sections(conn, refresh=True)
        save_rows(conn, "export_student", None, MAPPING_ROWS, None)
        return conn.id


def point_edfi(app, server) -> int:
    from sis_generic.sandbox import edfi_settings
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get(SyncConnection.adapter == "generic_rest")
        conn.settings = {**conn.settings, **edfi_settings(server.url), "retry_backoff": 0.01, "max_backoff": 0.05}
        conn.save()
        drop_adapter(conn.id)
        target_sections(conn, refresh=True)
        save_rows(conn, "export_student", None, EDFI_ROWS, None)
        return conn.id


def ps_ids(sandbox) -> dict[str, str]:
    """local id (our Registration Form ID) -> the SIS's id."""
    return {str(s["local_id"]): str(s["id"]) for s in sandbox.dump()}


def links(app, conn_id) -> dict[int, str]:
    """registration form id -> the student's SIS id on ``conn_id``."""
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get_by_id(conn_id)
        return {r.form_id: sis_id_for(r.student_id, conn) for r in Registration.select()}


def counts(app, **kw) -> dict:
    with app.app_context(), database.connection_context():
        result = dry_run(app, _org(app), APPROVED, **kw)
    return {"create": result.would_create, "update": result.would_update, "fail": result.would_fail}


def test_sandbox_then_production_each_sis_gets_its_own_ids(app, ps_a, ps_b):
    sandbox_conn = connect_to_sandbox(app, ps_a)
    regs = syncable(app)
    n = len(regs)
    assert counts(app) == {"create": n, "update": 0, "fail": 0}
    first = sync_all(app)
    assert {i.status for i in items(app, first.id)} == {"Succeeded"}
    assert counts(app) == {"create": 0, "update": n, "fail": 0}

    # Production: a different SIS. Nothing is linked there, so everything is a create,
    # and Send Record's preview says "creates a new student", never an id of the Sandbox.
    prod = add_powerschool(app, "PowerSchool Production", ps_b)
    move_schools(app, prod)
    assert counts(app) == {"create": n, "update": 0, "fail": 0}
    with app.app_context(), database.connection_context():
        preview = preview_record(SyncConnection.get_by_id(prod), Registration.get_by_id(regs[0].id), app=app)
        assert preview.insert and preview.record.sis_id is None
    second = sync_all(app)
    assert {i.status for i in items(app, second.id)} == {"Succeeded"}
    assert {i.action for i in items(app, second.id)} == {"insert"}

    # each connection holds the ids of its own SIS, and they differ
    a, b = ps_ids(ps_a), ps_ids(ps_b)
    on_sandbox, on_prod = links(app, sandbox_conn), links(app, prod)
    for r in regs:
        assert on_sandbox[r.form_id] == a[str(r.form_id)]
        assert on_prod[r.form_id] == b[str(r.form_id)]
        assert on_sandbox[r.form_id] != on_prod[r.form_id]
    assert len(ps_b.dump()) == 300 + n  # nothing duplicated


def test_schools_moved_powerschool_to_edfi_and_back(app, ps_a, edfi):
    ps = connect_to_sandbox(app, ps_a)
    ed = point_edfi(app, edfi)
    regs = syncable(app)
    assert {i.status for i in items(app, sync_all(app).id)} == {"Succeeded"}

    move_schools(app, ed)
    assert counts(app)["update"] == 0
    to_edfi = sync_all(app)
    assert {i.status for i in items(app, to_edfi.id)} == {"Succeeded"}, [i.reason for i in items(app, to_edfi.id)]

    move_schools(app, ps)
    assert counts(app) == {"create": 0, "update": len(regs), "fail": 0}
    back = items(app, sync_all(app).id)
    assert {i.status for i in back} == {"Succeeded"}, {i.reason for i in back}
    assert {i.action for i in back} == {"update"}
    a = ps_ids(ps_a)
    on_ps, on_edfi = links(app, ps), links(app, ed)
    for r in regs:
        assert on_ps[r.form_id] == a[str(r.form_id)]   # PowerSchool's own id, never the Ed-Fi one
        assert on_edfi[r.form_id] and on_edfi[r.form_id] != on_ps[r.form_id]
    assert sorted(a) == sorted(str(r.form_id) for r in regs)  # no duplicate in PowerSchool


def test_an_emptied_sis_gets_every_student_again_and_the_reasons_say_so(app, ps_a):
    conn = connect_to_sandbox(app, ps_a)
    regs = syncable(app)
    sync_all(app)
    before = links(app, conn)
    ps_a.empty()

    job = sync_all(app)
    done = items(app, job.id)
    assert {i.status for i in done} == {"Succeeded"}, {i.reason for i in done}
    for i in done:
        assert "The SIS no longer had student" in i.reason and "inserted it again as" in i.reason, i.reason
    after, stored = links(app, conn), ps_ids(ps_a)
    assert sorted(stored) == sorted(str(r.form_id) for r in regs)  # each once
    for r in regs:
        assert after[r.form_id] == stored[str(r.form_id)] != before[r.form_id]
    with app.app_context(), database.connection_context():
        assert {lk.how for lk in SisLink.select().where(SisLink.connection == conn)} == {"relinked"}
    # and a second sync updates them
    again = items(app, sync_all(app).id)
    assert {(i.status, i.action) for i in again} == {("Succeeded", "update")}


def test_a_sis_restored_under_new_ids_is_relinked_by_match_without_duplicates(app, ps_a):
    conn = connect_to_sandbox(app, ps_a)
    regs = syncable(app)
    sync_all(app)
    renumbered = ps_a.renumber()
    assert renumbered

    job = sync_all(app)
    done = items(app, job.id)
    assert {i.status for i in done} == {"Succeeded"}, {i.reason for i in done}
    assert all("matched by" in i.reason and "relinked to" in i.reason for i in done), [i.reason for i in done]
    stored = ps_ids(ps_a)
    assert sorted(stored) == sorted(str(r.form_id) for r in regs)  # nobody inserted twice
    linked = links(app, conn)
    assert all(linked[r.form_id] == stored[str(r.form_id)] for r in regs)


def test_unlinking_never_touches_the_sis_and_the_next_sync_matches_again(app, ps_a):
    conn = connect_to_sandbox(app, ps_a)
    regs = syncable(app)
    sync_all(app)
    stored = ps_ids(ps_a)
    with app.app_context(), database.connection_context():
        SisLink.delete().where(SisLink.connection == conn).execute()
    assert counts(app)["create"] == len(regs)
    done = items(app, sync_all(app).id)
    assert {i.status for i in done} == {"Succeeded"}
    assert ps_ids(ps_a) == stored  # matched, not inserted again
    with app.app_context(), database.connection_context():
        assert {lk.how for lk in SisLink.select().where(SisLink.connection == conn)} == {"matched"}


def test_connections_share_links_only_when_the_admin_says_so(app, ps_a):
    conn = connect_to_sandbox(app, ps_a)
    regs = syncable(app)
    sync_all(app)
    twin = add_powerschool(app, "PowerSchool second API client", ps_a, environment="sandbox")
    move_schools(app, twin)
    assert counts(app)["update"] == 0  # not by default
    with app.app_context(), database.connection_context():
        SyncConnection.update(shares_links_with=conn).where(SyncConnection.id == twin).execute()
        assert link_scope(SyncConnection.get_by_id(twin)) == conn
    assert counts(app) == {"create": 0, "update": len(regs), "fail": 0}
    done = items(app, sync_all(app).id)
    assert {(i.status, i.action) for i in done} == {("Succeeded", "update")}
    assert sorted(ps_ids(ps_a)) == sorted(str(r.form_id) for r in regs)


def test_migration_turns_stored_ids_into_links_and_tells_the_admin_the_unknown_ones(tmp_path):
    """A database from before links: ids produced by a sync become links to that
    connection; an id nobody can place is kept as 'connection unknown' and counted."""
    import datetime as dt

    from playhouse.migrate import SqliteMigrator

    from enroll_sync.db import bind
    from enroll_sync.migrations import available

    db = bind(f"sqlite:///{tmp_path / 'old.db'}")
    db.connect()
    migrator = SqliteMigrator(db)
    for number, _name, module in available():
        if number < 4:
            module.up(db, migrator)
    now = dt.datetime(2026, 1, 1)
    db.execute_sql("INSERT INTO organization (id, name, slug, uses_registration_module, created_at) "
                   "VALUES (1, 'D', 'd', 1, ?)", (now,))
    db.execute_sql("INSERT INTO syncconnection (id, organization_id, adapter, name, environment, settings, "
                   "secrets, created_at, updated_at) VALUES (1, 1, 'powerschool', 'PS', 'sandbox', '{}', '', ?, ?)",
                   (now, now))
    db.execute_sql("INSERT INTO school (id, organization_id, name, school_number, low_grade, high_grade, kind) "
                   "VALUES (1, 1, 'S', '1', 'K', '12', 'School')")
    for sid, sis in ((1, "5000"), (2, "6000"), (3, None)):
        db.execute_sql("INSERT INTO student (id, organization_id, schoolmint_id, sis_id, first_name, last_name) "
                       "VALUES (?, 1, ?, ?, '', '')", (sid, f"SM{sid}", sis))
        db.execute_sql("INSERT INTO registration (id, organization_id, form_id, student_id, school_id, grade, "
                       "school_year, status, answers, student_name, submitted_at, sync_status, sis_id) "
                       "VALUES (?, 1, ?, ?, 1, '1', '2026-2027', 'Approved', '{}', '', ?, 'Succeeded', ?)",
                       (sid, 100 + sid, sid, now, sis))
    db.execute_sql("INSERT INTO syncjob (id, organization_id, kind, status, total, created_at) "
                   "VALUES (1, 1, 'bulk', 'Completed', 1, ?)", (now,))
    db.execute_sql("INSERT INTO syncitem (job_id, registration_id, connection_id, status, sis_id) "
                   "VALUES (1, 1, 1, 'Succeeded', '5000')")

    [module for number, _n, module in available() if number == 4][0].up(db, migrator)
    rows = db.execute_sql("SELECT student_id, connection_id, sis_id, how FROM sislink ORDER BY student_id").fetchall()
    assert rows == [(1, 1, "5000", "migrated"), (2, None, "6000", "connection unknown")]
    assert "sis_id" not in {c.name for c in db.get_columns("student")}
    assert "sis_id" not in {c.name for c in db.get_columns("registration")}
    (details,) = db.execute_sql("SELECT details FROM auditlog WHERE action = 'links.migrated'").fetchone()
    assert '"connection_unknown": 1' in details and '"linked": 1' in details
    db.close()


def test_the_registration_page_lists_links_and_unlink_is_recorded(app, live, login, ps_a):
    conn = connect_to_sandbox(app, ps_a)
    sync_all(app)
    reg = syncable(app)[0]
    sis_id = ps_ids(ps_a)[str(reg.form_id)]
    admin, viewer = login("District Admin"), login("Viewer")
    page = admin.page(f"/registrations/{reg.form_id}")
    assert f'data-testid="sis-id">{sis_id}<' in page.text and "inserted" in page.text
    assert 'data-testid="confirm-unlink"' in page.text
    assert 'data-testid="confirm-unlink"' not in viewer.page(f"/registrations/{reg.form_id}").text
    with app.app_context(), database.connection_context():
        link = SisLink.get((SisLink.connection == conn) & (SisLink.student == reg.student_id))
    url = f"/registrations/{reg.form_id}/links/{link.id}/unlink"
    assert viewer.post_form(url, {}).status_code == 403
    r = admin.post_form(url, {})
    assert r.status_code == 302
    page = admin.page(f"/registrations/{reg.form_id}")
    assert 'data-testid="sis-id">—<' in page.text and f"Unlinked SIS ID {sis_id}" in page.text
    assert "unlinked SIS ID" in page.text  # the link changes list
    with app.app_context(), database.connection_context():
        assert not SisLink.select().where(SisLink.id == link.id).exists()
        assert AuditLog.select().where(AuditLog.action == "link.unlink").count() == 1
    assert ps_ids(ps_a)[str(reg.form_id)] == sis_id  # nothing changed in the SIS
    assert admin.post_form(url, {}).status_code == 302  # twice: nothing to do, no error

    csv_text = admin.get("/settings/sync-logs/links.csv").text
    assert csv_text.splitlines()[0].startswith("SchoolMint ID,Student,Connection,SIS ID,How")
    assert sis_id not in csv_text.split(reg.student.schoolmint_id, 1)[-1].splitlines()[0]


def test_records_the_sis_asks_to_try_again_are_sent_again_and_succeed(app, ps_a):
    """PowerSchool answers "busy, try again later" for single records inside a batch
    (HTTP 200): the job sends those again after a short wait instead of failing them."""
    connect_to_sandbox(app, ps_a)
    app.config["JOB_RETRY_BACKOFF_SECONDS"] = 0.05
    regs = syncable(app)
    ps_a.set_faults(busy_records=4)
    done = items(app, sync_all(app).id)
    assert {i.status for i in done} == {"Succeeded"}, {i.reason for i in done}
    assert sorted(ps_ids(ps_a)) == sorted(str(r.form_id) for r in regs)  # each stored once


def test_a_sis_that_stays_busy_ends_failed_with_a_true_reason(app, ps_a):
    connect_to_sandbox(app, ps_a)
    app.config["JOB_RETRY_BACKOFF_SECONDS"] = 0.05
    regs = syncable(app)[:3]
    ps_a.set_faults(busy_records=1000)
    with app.app_context(), database.connection_context():
        job = jobs.create_job(app, _org(app), None, Selection(ids=tuple(r.id for r in regs)))
        runner.run_job(app, job.id)
    done = items(app, job.id)
    assert {i.status for i in done} == {"Failed"}
    assert all(i.reason.startswith("The SIS asked to try again later 3 times") for i in done), done[0].reason
    assert ps_ids(ps_a) == {}


def test_a_sis_restored_with_ids_reused_by_other_students_is_relinked(app, ps_a):
    """A backup restored into an emptied SIS can hand the same ids to different students:
    the id a student is linked to now holds someone else. PowerSchool refuses the update
    (our Student Number is on another record); the link is stale, so the student is sent
    again unlinked and matched by Student Number, never written over the other student."""
    conn = connect_to_sandbox(app, ps_a)
    regs = syncable(app)
    sync_all(app)
    a, b = regs[0], regs[1]
    ids = ps_ids(ps_a)
    id_a, id_b = ids[str(a.form_id)], ids[str(b.form_id)]
    # the restore: A's record now carries B's Student Number and B's record A's
    ps_a.change_student(int(id_a), {"local_id": 999999})
    ps_a.change_student(int(id_b), {"local_id": a.form_id})
    ps_a.change_student(int(id_a), {"local_id": b.form_id})
    done = {i.registration_id: i for i in items(app, sync_all(app).id)}
    assert {i.status for i in done.values()} == {"Succeeded"}, {i.reason for i in done.values()}
    assert "matched by" in done[a.id].reason and "relinked to" in done[a.id].reason, done[a.id].reason
    linked = links(app, conn)
    assert linked[a.form_id] == id_b and linked[b.form_id] == id_a
    stored = ps_ids(ps_a)
    assert sorted(stored) == sorted(str(r.form_id) for r in regs)  # nobody duplicated
