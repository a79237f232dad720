"""Dry run of Bulk Actions > Sync to SIS, over real HTTP: the confirmation's "Dry run"
button posts the same selection and gets back, as an HTMX fragment, how many would be
created, updated or fail (mapping errors, with the first 20 listed), the warnings and
the skip reasons; nothing is written (no SyncJob, no SyncItem, no Sync Status change)
and nothing reaches the SIS. Its counts are the job's own: a real job run afterwards
ends exactly as the dry run said."""
from __future__ import annotations

import html
import re
from collections import Counter

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.models import SisLink
from enroll_sync.db import database
from enroll_sync.models import AuditLog, Organization, Registration, School, SyncItem, SyncJob
from enroll_sync.sync import jobs, runner
from enroll_sync.sync.dry_run import dry_run
from enroll_sync.sync.selection import RegistrationFilter, Selection
from tests.test_bad_ids import BAD_IDS
from tests.test_sync_flow import proceed_fields
from tests.test_sync_support import connect_to_sandbox, sandbox  # noqa: F401

DRY_RUN = "/registrations/sync/dry-run"
APPROVED = {"all_matching": "1", "status": "Approved"}


def count(text: str, testid: str) -> int:
    m = re.search(rf'data-testid="{testid}"><strong>([\d,]+)</strong>', text)
    assert m, f"no {testid} in:\n{text[:3000]}"
    return int(m.group(1).replace(",", ""))


def eligible():
    return list(Registration.select().join(School).where(
        (Registration.status == "Approved") & School.sync_connection.is_null(False)).order_by(Registration.id))


@pytest.fixture
def mix(app, sandbox):
    """The demo district on the sandbox with a known mix among the registrations that
    would sync: 3 already synced (the SIS id is known: updates), 2 whose grade has no
    code (mapping errors), 1 with a gender that has no code (a warning), the rest new
    students."""
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        regs = eligible()
        assert len(regs) >= 10
        for reg in regs:
            answers = dict(reg.answers, gender="Female")
            Registration.update(answers=answers).where(Registration.id == reg.id).execute()
        updates, failing, warned = regs[:3], regs[3:5], regs[5]
        first = jobs.create_job(app, Organization.get().id, None, Selection(ids=tuple(r.id for r in updates)))
        runner.run_job(app, first.id)
        assert all(sis_id_for(r.student_id, r.school.sync_connection) for r in updates)
        Registration.update(grade="PK").where(Registration.id.in_([r.id for r in failing])).execute()
        Registration.update(answers=dict(warned.answers, gender="Non-binary")).where(
            Registration.id == warned.id).execute()
        selected = Registration.select().where(Registration.status == "Approved").count()
        skipped_no_conn = selected - len(regs)
        assert skipped_no_conn > 0  # the preschool has no connection
        not_approved = Registration.select().count() - selected
    sandbox.clear_requests()
    return {"eligible": len(regs), "update": len(updates), "fail": len(failing),
            "create": len(regs) - len(updates) - len(failing), "failing": failing, "selected": selected,
            "no_connection": skipped_no_conn, "not_approved": not_approved}


def snapshot(app):
    """Everything a sync could change."""
    with app.app_context(), database.connection_context():
        return {
            "jobs": SyncJob.select().count(), "items": SyncItem.select().count(),
            "audit": AuditLog.select().count(),
            "registrations": list(Registration.select(
                Registration.id, Registration.status, Registration.sync_status,
                Registration.sync_lock, Registration.sync_lock_at, Registration.last_synced_at)
                .order_by(Registration.id).tuples()),
            "links": list(SisLink.select(SisLink.student, SisLink.connection, SisLink.sis_id).order_by(SisLink.id).tuples()),
        }


def test_dry_run_counts_a_mix_and_writes_nothing(app, live, login, sandbox, mix):
    registrar = login("Registrar")
    registrar.page("/registrations/")
    # Bulk Actions > Sync to SIS, select all matching the filter: the Dry run button sits next to Proceed
    confirm = registrar.post_form("/registrations/sync/confirm", APPROVED, htmx=True)
    assert confirm.status_code == 200
    start = confirm.text.index('action="/registrations/sync"')
    bar = confirm.text[start:confirm.text.index("</form>", start)]  # the form of Proceed with Sync
    assert "Proceed with Sync</button>" in bar
    assert f'hx-post="{DRY_RUN}"' in bar and f'formaction="{DRY_RUN}"' in bar and re.search(r">[^<]*Dry run</button>", bar)
    assert 'hx-target="#sync-dry-run"' in bar
    assert '<section id="sync-dry-run"' in confirm.text  # the (empty) place the result goes
    fields = proceed_fields(confirm.text)
    before = snapshot(app)

    # the button posts the Proceed form's hidden fields (CSRF in the header, as htmx sends it)
    r = registrar.post_form(DRY_RUN, dict(fields), htmx=True)
    assert r.status_code == 200, r.text[:500]
    text = r.text
    assert text.lstrip().startswith('<section id="sync-dry-run"') and "<html" not in text
    assert count(text, "dry-run-create") == mix["create"]
    assert count(text, "dry-run-update") == mix["update"]
    assert count(text, "dry-run-fail") == mix["fail"]
    assert count(text, "dry-run-warnings") == 1
    assert f"Checked all <strong>{mix['eligible']}</strong> registrations that would sync" in text
    assert "Match existing students before insert" in text  # creates may become updates: said so
    # the failures: Registration Form ID, student name and the job's own reason
    assert "<th>Registration Form ID</th>" in text
    with app.app_context(), database.connection_context():
        for reg in mix["failing"]:
            reg = Registration.get_by_id(reg.id)
            row = text[text.index(f'data-testid="dry-run-failure-{reg.form_id}"'):]
            row = html.unescape(row[:row.index("</tr>")])
            assert reg.student_name in row and "Not sent:" in row and "PK" in row
    # the plan's skip reasons
    assert f"<strong>{mix['no_connection']}</strong> — The school has no sync connection." in text
    assert "Nothing was sent to the SIS and nothing was saved" in text and "no Sync Status changed" in text

    # nothing written, nothing sent
    assert snapshot(app) == before
    assert sandbox.requests() == []

    # and these are the job's numbers: Proceed with Sync ends exactly as the dry run said
    with app.app_context(), database.connection_context():
        org = Organization.get().id
        job = jobs.create_job(app, org, None, Selection.from_form(dict(fields)))
        runner.run_job(app, job.id)
        items = list(SyncItem.select().where(SyncItem.job == job.id))
    outcomes = Counter((i.status, i.action) for i in items)
    assert outcomes == {("Succeeded", "insert"): mix["create"], ("Succeeded", "update"): mix["update"],
                        ("Failed", None): mix["fail"]}, outcomes
    assert sorted(i.reason for i in items if i.status == "Failed") == sorted(
        html.unescape(m) for m in re.findall(r"<td>(Not sent:[^<]*)</td>", text))

    # a second dry run: the students the job created are now updates
    r = registrar.post_form(DRY_RUN, dict(fields), htmx=True)
    assert count(r.text, "dry-run-create") == 0
    assert count(r.text, "dry-run-update") == mix["create"] + mix["update"]


def test_a_selection_of_ids_and_a_plain_form_post(app, live, login, sandbox, mix):
    registrar = login("Registrar")
    registrar.page("/registrations/")
    with app.app_context(), database.connection_context():
        ids = [str(r.id) for r in eligible()[:6]] + [str(Registration.get(Registration.status != "Approved").id)]
    before = snapshot(app)
    r = registrar.post_form(DRY_RUN, {"registration_ids": ids}, htmx=True)
    assert r.status_code == 200
    assert count(r.text, "dry-run-update") == 3 and count(r.text, "dry-run-fail") == 2
    assert count(r.text, "dry-run-create") == 1
    assert "<strong>1</strong> — Not Approved" in r.text
    # without JavaScript the button's formaction posts the form: the whole confirmation with the result
    page = registrar.post_form(DRY_RUN, {"registration_ids": ids})
    assert page.status_code == 200 and "<html" in page.text and "Proceed with Sync" in page.text
    assert count(page.text, "dry-run-fail") == 2
    assert snapshot(app) == before and sandbox.requests() == []


def test_a_big_selection_is_checked_up_to_the_cap_and_says_so(app, live, login, sandbox, mix):
    app.config["DRY_RUN_MAX"] = 4
    registrar = login("Registrar")
    registrar.page("/registrations/")
    r = registrar.post_form(DRY_RUN, APPROVED, htmx=True)
    assert r.status_code == 200
    text = r.text
    assert (f"Checked <strong>4</strong> of the <strong>{mix['eligible']}</strong> registrations that would "
            f"sync. The other <strong>{mix['eligible'] - 4}</strong> were <strong>not checked</strong>") in text
    assert "a dry run checks at most 4" in text
    # the first 4 by id: the 3 updates and one of the failures
    assert count(text, "dry-run-update") == 3 and count(text, "dry-run-fail") == 1
    assert count(text, "dry-run-create") == 0
    assert "Checked all" not in text
    assert sandbox.requests() == []


def test_nothing_would_sync_and_an_empty_selection(app, live, login, sandbox, mix):
    registrar = login("Registrar")
    registrar.page("/registrations/")
    r = registrar.post_form(DRY_RUN, {"all_matching": "1", "status": "Submitted"}, htmx=True)
    assert r.status_code == 200
    assert "None of the selected registrations would sync" in r.text
    assert "Not Approved: only Approved registrations can be synced." in r.text
    r = registrar.post_form(DRY_RUN, {}, htmx=True)
    assert r.status_code == 422 and '<section id="sync-dry-run"' in r.text
    assert "Select at least one registration" in r.text


def test_who_may_dry_run_and_csrf(app, live, login, sandbox, mix):
    viewer = login("Viewer")
    viewer.page("/registrations/")
    r = viewer.post_form(DRY_RUN, APPROVED, htmx=True)
    assert r.status_code == 403 and "which you do not have" in r.text
    r = viewer.post_form(DRY_RUN, APPROVED)
    assert r.status_code == 403
    sync_admin = login("Sync Admin")  # Sync Service Full Access + View Registrations, no Edit Registrations
    sync_admin.page("/registrations/")
    assert sync_admin.post_form(DRY_RUN, APPROVED, htmx=True).status_code == 403

    registrar = login("Registrar")
    registrar.page("/registrations/")
    r = registrar.post_form(DRY_RUN, APPROVED, csrf=False, htmx=True)
    assert r.status_code == 400 and "This form has expired" in r.text
    r = registrar.post_form(DRY_RUN, APPROVED, csrf=False, htmx=True, headers={"X-CSRFToken": "forged"})
    assert r.status_code == 400
    assert sandbox.requests() == []


def test_tampered_ids_and_filters_are_never_a_500(app, live, login, sandbox, mix):
    registrar = login("Registrar")
    registrar.page("/registrations/")
    before = snapshot(app)
    for bad in BAD_IDS + ["abc", "", "1" * 400]:
        for data in ({"registration_ids": [bad, bad]}, {"all_matching": "1", "upto": bad, "school": bad},
                     {"all_matching": bad, "status": bad, "sync_status": bad, "grade": bad * 5, "q": bad},
                     {"all_matching": "1", "school_year": bad, "q": "%_'\"\\" + bad}):
            r = registrar.post_form(DRY_RUN, data, htmx=True)
            assert r.status_code in (200, 422), (data, r.status_code, r.text[:300])
    assert snapshot(app) == before and sandbox.requests() == []


def test_a_selection_larger_than_a_chunk_is_checked_in_full_and_writes_nothing(app, sandbox):
    """The Dry run streams the selection chunk by chunk: every eligible registration is
    checked once, across chunk boundaries. (How long 10,000 take: benchmarks/dry_run.py.)"""
    from enroll_sync.demo import create_registrations
    connect_to_sandbox(app, sandbox)
    with app.app_context(), database.connection_context():
        org = Organization.get()
        schools = list(School.select().where(School.school_number != "901").order_by(School.id))
        create_registrations(org, schools, 1200, seed=5, first_form_id=300001, schoolmint_start=800001)
        Registration.update(status="Approved").where(Registration.form_id >= 300001).execute()
        sel = Selection(filter=RegistrationFilter(status="Approved"), all_matching=True)
        result = dry_run(app, org.id, sel, limit=100000, chunk=500)
        assert result.checked == result.eligible >= 1200 and result.complete
        assert result.would_create + result.would_update + result.would_fail == result.checked
        assert SyncJob.select().count() == 0 and SyncItem.select().count() == 0
    assert all(r["path"] != "/ws/v1/student" for r in sandbox.requests())
