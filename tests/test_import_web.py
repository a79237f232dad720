"""Import from SIS in the browser's HTTP: the Import Student Mapping (its Overwrite
column enabled, Student Examples read live from the SIS), Preview import, Run import from
the preview, the job's page and Sync Logs, the daily schedule, and a returning student
linked and pre-filled."""
from __future__ import annotations

import datetime as dt
from html import unescape

import pytest

from enroll_sync.db import database
from enroll_sync.importer import import_registrations
from enroll_sync.models import (APPROVED, JOB_DONE, ImportRun, Mapping, Organization, Registration, SyncJob)
from enroll_sync.sync.imports.schedule import run_scheduled_imports
from enroll_sync.testing import run_worker, save_import_mapping, wait_for_job

from tests.import_helpers import PS_ROWS, assign_schools

BASE = "/settings/sync-service"


@pytest.fixture(scope="module")
def ps():
    from sis_powerschool.sandbox import serve_in_thread
    handle = serve_in_thread(port=0)
    yield handle
    handle.stop()


@pytest.fixture
def demo_sandbox_urls(ps):
    ps.reset()
    return {"powerschool": ps.url}


@pytest.fixture
def returning(app, ps):
    """A demo student who is also in the SIS (same name and birth date), and the
    connection set up for importing: (registration, SIS DCID, connection id)."""
    conn_id = assign_schools(app, "PowerSchool Sandbox", ["101", "201", "301"])
    ps.seed_students(20, seed=9)
    with app.app_context(), database.connection_context():
        reg = (Registration.select().where(Registration.status == APPROVED).order_by(Registration.form_id)
               .first())
        a = reg.answers
    born = dt.datetime.strptime(a["birth_date"], "%m/%d/%Y").date() if "/" in a["birth_date"] else None
    assert born is not None
    dcid = ps.store.insert({"local_id": 424242, "name": {"first_name": a["student_legal_first_name"].strip(),
                                                        "last_name": a["student_legal_last_name"].strip()},
                            "demographics": {"birth_date": born.isoformat(), "gender": "F"},
                            "addresses": {"physical": {"street": "12 SIS Way", "city": "Sistown",
                                                       "state_province": "CA", "postal_code": "92501"}},
                            "school_enrollment": {"school_number": 100, "grade_level": 3},
                            "contact": {"doctor_name": "Dr. Imported"}})
    return reg, dcid, conn_id


def test_import_student_mapping_editor_has_overwrite_and_live_student_examples(app, live, login, returning):
    reg, dcid, conn_id = returning
    admin = login("Sync Admin")
    card = admin.page(f"{BASE}/").text
    assert f'href="{BASE}/{conn_id}/import"' in card and "Import from SIS" in card
    home = admin.page(f"{BASE}/{conn_id}/mapping/").text
    assert "Import Student Mapping" in home and "Export Student Mapping" in home
    page = admin.page(f"{BASE}/{conn_id}/mapping/import_student/fields").text
    assert "From SIS Field" in page and "Student Legal First Name" in page
    assert 'value="name.first_name"' in page, "the From list offers the SIS's fields"
    assert 'name="student_legal_middle_name|overwrite"' in page, "Overwrite is enabled for imports"
    assert "never clears a filled Enroll value" in page
    # map two rows in the form: first name (Direct) and middle name (Direct, Overwrite checked)
    form = {"student_legal_first_name|to": "student_legal_first_name", "student_legal_first_name|type": "direct",
            "student_legal_first_name|from": "name.first_name",
            "student_legal_middle_name|to": "student_legal_middle_name",
            "student_legal_middle_name|type": "direct", "student_legal_middle_name|from": "name.middle_name",
            "student_legal_middle_name|overwrite_shown": "1", "student_legal_middle_name|overwrite": "1",
            "action": "save"}
    r = admin.post_form(f"{BASE}/{conn_id}/mapping/import_student/fields", form)
    assert r.status_code == 200 and "Saved the Import Student Mapping (version 1)" in unescape(r.text)
    with app.app_context(), database.connection_context():
        rows = {row["to"]: row for row in Mapping.get(Mapping.kind == "import_student").rows}
    assert rows["student_legal_middle_name"].get("overwrite") is True
    assert "overwrite" not in rows["student_legal_first_name"]
    # Student Examples: an SIS ID, read from the SIS
    r = admin.post_form(f"{BASE}/{conn_id}/mapping/import_student/configure", {"student_example": "999999"})
    assert r.status_code == 422 and "The SIS has no student with SIS ID" in unescape(r.text)
    r = admin.post_form(f"{BASE}/{conn_id}/mapping/import_student/configure", {"student_example": str(dcid)})
    assert r.status_code == 302
    page = admin.page(f"{BASE}/{conn_id}/mapping/import_student/fields").text
    first = reg.answers["student_legal_first_name"].strip()
    assert f"(SIS ID {dcid})" in unescape(page)
    assert f'data-testid="mapped-value">{first}<' in unescape(page), "Mapped Value of the live SIS student"
    # Send Record belongs to exports
    r = admin.post_form(f"{BASE}/{conn_id}/mapping/import_student/send-record", {"example": str(dcid)}, htmx=True)
    assert r.status_code == 400 and "Import from SIS" in r.text


def test_preview_then_run_import_links_the_returning_student(app, live, login, returning, ps):
    reg, dcid, conn_id = returning
    save_import_mapping(app, conn_id, PS_ROWS)
    admin = login("Sync Admin")
    page = admin.page(f"{BASE}/{conn_id}/import").text
    assert 'data-testid="preview-import"' in page and "import-not-ready" not in page
    with run_worker(app):
        r = admin.post_form(f"{BASE}/{conn_id}/import/preview", {})
        assert r.status_code == 302
        preview_id = int(r.headers["location"].rstrip("/").rsplit("/", 1)[1])
        assert wait_for_job(app, preview_id).status == JOB_DONE
        page = unescape(admin.page(f"{BASE}/imports/{preview_id}").text)
        assert 'data-testid="n-created">20<' in page and 'data-testid="n-updated">1<' in page
        assert "would be linked to SIS student" in page and 'data-testid="preview-sample"' in page
        assert 'data-testid="run-import"' in page
        r = admin.post_form(f"{BASE}/{conn_id}/import/run", {"preview": str(preview_id)})
        assert r.status_code == 302
        job_id = int(r.headers["location"].rstrip("/").rsplit("/", 1)[1])
        assert wait_for_job(app, job_id).status == JOB_DONE
    page = unescape(admin.page(f"{BASE}/imports/{job_id}").text)
    assert 'data-testid="n-created">20<' in page and 'data-testid="n-updated">1<' in page
    fragment = admin.get(f"{BASE}/imports/{job_id}/progress", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and 'id="import-progress"' in fragment.text and "<html" not in fragment.text
    viewer = login("Viewer")  # Sync Logs are read-only for View Registrations: the import's page too
    seen = unescape(viewer.page(f"{BASE}/imports/{job_id}").text)
    assert 'data-testid="n-created">20<' in seen and "cancel-import" not in seen and "run-import" not in seen
    assert viewer.get(f"{BASE}/{conn_id}/import").status_code == 403
    assert f"from preview #{preview_id}" in page or f"preview #{preview_id}" in page
    with app.app_context(), database.connection_context():
        assert ImportRun.get(ImportRun.job == job_id).from_preview_id == preview_id
    detail = unescape(admin.page(f"/registrations/{reg.form_id}").text)
    assert f"Linked to SIS student {dcid}" in detail
    assert "SIS: 12 SIS Way" in detail or "from the SIS" in detail
    logs = admin.page("/settings/sync-logs/").text
    assert f"/settings/sync-service/imports/{job_id}" in logs and "Import #" in logs
    assert admin.get(f"/settings/sync-logs/{job_id}").headers["location"].endswith(f"/imports/{job_id}")
    # a new registration of the returning student is pre-filled from what was imported
    sm = reg.student.schoolmint_id
    with app.app_context(), database.connection_context():
        org = Organization.get()
        text = ("form_id,schoolmint_id,school_number,grade,school_year,status,student_legal_first_name,"
                "student_legal_last_name,home_street,physician_name\n"
                f"990001,{sm},{reg.school.school_number},4,2027-2028,Submitted,"
                f"{reg.answers['student_legal_first_name'].strip()},{reg.answers['student_legal_last_name'].strip()},,\n")
        report = import_registrations(org, text)
        assert report.ok, report.errors
        new = Registration.get(Registration.form_id == 990001)
        assert new.answers["home_street"] == "12 SIS Way" and new.answers["physician_name"] == "Dr. Imported"
    detail = unescape(admin.page("/registrations/990001").text)
    assert f"Linked to SIS student {dcid}" in detail and 'data-testid="from-sis"' in detail


def test_problems_csv_cancel_and_not_ready(app, live, login, returning, ps):
    reg, dcid, conn_id = returning
    admin = login("Sync Admin")
    page = unescape(admin.page(f"{BASE}/{conn_id}/import").text)
    assert "has no Import Student Mapping yet" in page
    r = admin.post_form(f"{BASE}/{conn_id}/import/preview", {})
    assert r.status_code == 302 and r.headers["location"].endswith(f"/{conn_id}/import")
    save_import_mapping(app, conn_id, PS_ROWS)
    twin = next(d for d in ps.dump() if d["id"] != dcid)
    ps.store.insert({**{k: v for k, v in twin.items() if k != "id"}, "local_id": 777777})
    r = admin.post_form(f"{BASE}/{conn_id}/import/run", {})
    job_id = int(r.headers["location"].rstrip("/").rsplit("/", 1)[1])
    with run_worker(app):
        assert wait_for_job(app, job_id).status == JOB_DONE
    csv = admin.get(f"{BASE}/imports/{job_id}/problems.csv")
    assert csv.status_code == 200 and "Conflict" in csv.text and str(twin["id"]) in csv.text
    assert csv.text.count("\n") == 2, "the header and the one conflict"
    r = admin.post_form(f"{BASE}/imports/{job_id}/cancel", {})
    assert r.status_code == 302
    assert "no longer running" in unescape(admin.page(r.headers["location"]).text)


def test_daily_schedule_starts_one_import_per_day(app, live, login, returning):
    reg, dcid, conn_id = returning
    save_import_mapping(app, conn_id, PS_ROWS)
    admin = login("Sync Admin")
    r = admin.post_form(f"{BASE}/{conn_id}/import/schedule", {"daily_at": "25:00"})
    assert "Enter a time of day" in unescape(admin.page(r.headers["location"]).text)
    r = admin.post_form(f"{BASE}/{conn_id}/import/schedule", {"daily_at": "6:30"})
    assert "imports every day at 06:30" in unescape(admin.page(r.headers["location"]).text)
    queued = []
    with app.app_context(), database.connection_context():
        early = dt.datetime(2027, 3, 1, 6, 29)
        assert run_scheduled_imports(app, early, enqueue=lambda a, j: queued.append(j)) == []
        started = run_scheduled_imports(app, early + dt.timedelta(minutes=1), enqueue=lambda a, j: queued.append(j))
        assert len(started) == 1 and queued == started
        assert run_scheduled_imports(app, early + dt.timedelta(hours=3), enqueue=lambda a, j: queued.append(j)) == []
        job = SyncJob.get_by_id(started[0])
        assert job.kind == "import" and ImportRun.get(ImportRun.job == job.id).scheduled
        # the next day it runs again once the first import is done (one at a time)
        from enroll_sync.sync.imports.runner import run_import_job
        run_import_job(app, job.id)
        assert len(run_scheduled_imports(app, early + dt.timedelta(days=1, minutes=1),
                                         enqueue=lambda a, j: queued.append(j))) == 1


def test_the_queue_runs_the_periodic_schedule_task(app):
    """Every minute, on the sync queue, the due imports start (in every worker; the claim
    in run_scheduled_imports keeps it to one)."""
    from enroll_sync.sync.queue import SCHEDULE_TASK_NAME, _consumer_options, get_huey
    due = get_huey(app).read_periodic(dt.datetime(2027, 3, 1, 6, 30))
    assert [t.name for t in due] == [SCHEDULE_TASK_NAME]
    assert _consumer_options(app, 1)["periodic"] is True
