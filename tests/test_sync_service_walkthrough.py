"""The walkthrough from "Configure Export" to "Send a Test Record", end to end over real
HTTP: Enroll Sync on a loopback port, the PowerSchool sandbox on another, SQLite on
disk. Add the connection, test it, set examples, map a Direct row, a Match Codes row
(Female > F) and a Date transformation (09/01/2007 -> 2007-09-01), watch the Mapped
Values change through HTMX partials, Send Record, OK, Continue — and find the student
in the sandbox, sent exactly as previewed.
"""
from __future__ import annotations

import io
import json
import re
from html import unescape

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.db import database
from enroll_sync.models import AuditLog, Mapping, Registration, School, SyncConnection, SyncItem, SyncJob
from tests.test_mapping_ui import BASE, Editor, form_values, mapped_value, row_fragment, step_values, texts

sandbox_mod = pytest.importorskip("sis_powerschool.sandbox")


class BodyRecorder:
    """WSGI middleware in front of the sandbox: keeps every POST /ws/v1/student body as received."""

    def __init__(self, app):
        self.app = app
        self.bodies: list[bytes] = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ.get("PATH_INFO") == "/ws/v1/student":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            self.bodies.append(body)
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@pytest.fixture
def sandbox():
    handle = sandbox_mod.serve_in_thread(port=0)
    handle.recorder = BodyRecorder(handle.server.app)
    handle.server.app = handle.recorder
    yield handle
    handle.stop()


def _arrange_examples(app):
    """Two Approved registrations at Riverside Elementary; the first born 09/01/2007, Female."""
    with app.app_context(), database.connection_context():
        school = School.get(School.school_number == "101")
        regs = list(Registration.select().where((Registration.school == school))
                    .order_by(Registration.form_id).limit(2))
        assert len(regs) == 2
        for reg, (birth, gender, first) in zip(regs, [("09/01/2007", "Female", "Ana"),
                                                      ("12/24/2016", "Male", "Bruno")]):
            answers = dict(reg.answers)
            answers.update(birth_date=birth, gender=gender, student_legal_first_name=first,
                           student_legal_last_name="Walkthrough")
            Registration.update(answers=answers, status="Approved", grade="3").where(
                Registration.id == reg.id).execute()
        a, b = (Registration.get_by_id(r.id) for r in regs)
        return {"a_form": a.form_id, "a_id": a.id, "b_form": b.form_id,
                "b_schoolmint": b.student.schoolmint_id}


def test_walkthrough_against_the_powerschool_sandbox(app, live, login, sandbox):
    ex = _arrange_examples(app)
    admin = login("Sync Admin")  # Sync Service Full Access is all it takes

    # Settings > Sync Service > Sync Service Login > Add Sync Connection
    page = admin.page(f"{BASE}/")
    assert page.status_code == 200 and "Sync Service Login" in page.text
    assert f'href="{BASE}/new"' in page.text and "Add Sync Connection" in page.text
    choose = admin.page(f"{BASE}/new")
    assert f'href="{BASE}/new/powerschool"' in choose.text and "PowerSchool" in choose.text
    form = admin.page(f"{BASE}/new/powerschool")
    assert 'name="s_server_url"' in form.text and 'type="password"' in form.text
    r = admin.post_form(f"{BASE}/new/powerschool", {
        "name": "PowerSchool Walkthrough", "environment": "sandbox", "s_server_url": sandbox.url,
        "s_client_id": sandbox.client_id, "s_client_secret": sandbox.client_secret,
        "s_batch_size": "100", "s_min_interval_ms": "0", "s_timeout_s": "10", "s_match_existing": "1"})
    assert r.status_code == 302, r.text[:2000]
    page = admin.page(f"{BASE}/")
    cid = int(re.search(r'id="connection-(\d+)-name">PowerSchool Walkthrough<', page.text).group(1))
    assert sandbox.client_secret not in page.text

    # Test Connection: the card is swapped through HTMX
    r = admin.post_form(f"{BASE}/{cid}/test", {}, htmx=True)
    assert r.status_code == 200
    assert r.text.lstrip().startswith(f'<article id="connection-{cid}"') and "<html" not in r.text
    assert "HX-Request" in r.headers.get("Vary", "")
    assert "Connected" in r.text and "Sandbox Unified School District" in r.text
    assert sandbox.client_secret not in r.text

    # Configure Mapping > Export Student Mapping > Configure: the examples
    home = admin.page(f"{BASE}/{cid}/mapping/")
    assert "Export Student Mapping" in home.text
    assert f'href="{BASE}/{cid}/mapping/export_student/configure"' in home.text
    configure = admin.page(f"{BASE}/{cid}/mapping/export_student/configure")
    assert "Registration Examples" in configure.text and "Student Examples" in configure.text
    r = admin.post_form(f"{BASE}/{cid}/mapping/export_student/configure", {
        "registration_example": [str(ex["a_form"]), "", "", "", ""],
        "student_example": [ex["b_schoolmint"], "", "", "", ""]})
    assert r.status_code == 302

    # Field Mapping
    ed = Editor(admin, cid)
    page = ed.load()
    for word in ("From Enroll Field", "Mapping Type", "To Field", "Mapped Value", "Overwrite", "Do Not Map",
                 "Direct", "Match Codes", "Transformation", "Send Record"):
        assert word in page.text, word
    assert "Every required SIS field is mapped" not in page.text  # nothing is mapped yet

    # a Direct row; the Mapped Value arrives in the row's HTMX partial
    r = ed.change("name.first_name", "type", "direct")
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<tbody id="row-name-first_name"') and "<html" not in r.text
    assert "HX-Request" in r.headers.get("Vary", "")
    assert "Choose a From Enroll Field." in r.text
    r = ed.change("name.first_name", "from", "student_legal_first_name")
    assert mapped_value(row_fragment(r.text, "name.first_name")) == "Ana"
    assert 'id="mapping-dirty" hx-swap-oob="true"' in r.text and "Unsaved changes" in r.text

    # Match Codes: Female > F
    ed.change("demographics.gender", "type", "match_codes")
    r = ed.change("demographics.gender", "from", "gender")
    frag = row_fragment(r.text, "demographics.gender")
    assert "Female" in frag and "Non-binary" in frag
    # answers that equal a SIS code's label are suggested
    assert re.search(r'aria-label="SIS code for Female \(Gender\)">.*?<option value="F" selected>', frag, re.S)
    ed.set_code("demographics.gender", "Female", "F")
    ed.set_code("demographics.gender", "Male", "M")
    ed.set_code("demographics.gender", "Non-binary", "")
    r = ed.change("demographics.gender", "unmatched", "blank")
    frag = row_fragment(r.text, "demographics.gender")
    assert mapped_value(frag) == "F"
    assert "1 answer without a code: Non-binary" in frag  # visible, never a silent pass-through

    # a Date transformation: 09/01/2007 -> 2007-09-01, the value after each step shown live
    ed.change("demographics.birth_date", "type", "transformation")
    ed.change("demographics.birth_date", "from", "birth_date")
    ed.set("demographics.birth_date", "new_step", "date")
    r = ed.row("demographics.birth_date", action="add_step:demographics.birth_date")
    assert r.status_code == 200
    r = ed.change("demographics.birth_date", "s0|from_format", "MM/DD/YYYY")
    frag = row_fragment(r.text, "demographics.birth_date")
    assert texts(frag, "trace-from") == ["09/01/2007"]
    assert step_values(frag) == ["2007-09-01"]
    assert mapped_value(frag) == "2007-09-01"

    # what else PowerSchool requires for a new student
    _map_required(ed)

    # the Mapped Values follow the example shown
    r = ed.submit("example", example=str(ex["b_form"]))
    assert r.status_code == 200 and r.text.lstrip().startswith('<form id="field-mapping"')
    assert mapped_value(row_fragment(r.text, "name.first_name")) == "Bruno"
    assert mapped_value(row_fragment(r.text, "demographics.birth_date")) == "2016-12-24"
    assert mapped_value(row_fragment(r.text, "demographics.gender")) == "M"
    r = ed.submit("example", example=str(ex["a_form"]))
    assert mapped_value(row_fragment(r.text, "name.first_name")) == "Ana"

    # Save, with its summary
    r = ed.submit("save")
    assert r.status_code == 200 and "Saved the Export Student Mapping (version 1)" in r.text  # the first rows saved
    assert "Every required SIS field is mapped." in r.text
    with app.app_context(), database.connection_context():
        rows = {row["to"]: row for row in Mapping.get(Mapping.connection == cid).rows}
    assert rows["name.first_name"] == {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"}
    assert rows["demographics.gender"]["codes"] == {"Female": "F", "Male": "M"}
    assert rows["demographics.gender"]["unmatched"] == "blank"
    assert rows["demographics.birth_date"]["steps"][0]["kind"] == "date"
    assert rows["demographics.birth_date"]["steps"][0]["from_format"] == "MM/DD/YYYY"

    # Send Record: the preview of exactly what will be exported; Cancel sends nothing
    r = ed.send_record()
    assert r.status_code == 200, r.text[:2000]
    assert r.text.lstrip().startswith('<dialog open id="send-record"') and "<html" not in r.text
    preview_text = unescape(re.search(r'<pre id="send-record-payload"[^>]*>(.*?)</pre>', r.text, re.S).group(1))
    preview = json.loads(preview_text)
    assert preview["name"]["first_name"] == "Ana"
    assert preview["demographics"] == {"gender": "F", "birth_date": "2007-09-01"}
    assert preview["local_id"] == ex["a_form"] and preview["action"] == "INSERT"
    assert "OK, Continue</button>" in r.text and ">Cancel</a>" in r.text
    assert sandbox.recorder.bodies == [] and sandbox.dump() == []
    dialog = form_values(r.text.replace("<form ", '<form id="continue" ', 1), "continue")

    # OK, Continue: one record through the adapter
    r = admin.post_form(f"{BASE}/{cid}/mapping/export_student/send-record/continue", dict(dialog), htmx=True)
    assert r.status_code == 200, r.text[:2000]
    assert 'data-testid="send-status">Succeeded<' in r.text
    sis_id = re.search(r'data-testid="send-sis-id">([^<]+)<', r.text).group(1)

    # the sandbox received exactly the previewed student, byte for byte as shown
    assert len(sandbox.recorder.bodies) == 1
    sent = json.loads(sandbox.recorder.bodies[0])["students"]["student"]
    sent = sent[0] if isinstance(sent, list) else sent
    assert sent == preview
    assert json.dumps(sent, indent=2, ensure_ascii=False) == preview_text
    stored = [s for s in sandbox.dump() if str(s.get("local_id")) == str(ex["a_form"])]
    assert len(stored) == 1
    assert stored[0]["name"]["first_name"] == "Ana"
    assert stored[0]["demographics"]["birth_date"] == "2007-09-01"
    assert stored[0]["demographics"]["gender"] == "F"

    # the registration's Sync Status, SIS id and sync history
    with app.app_context(), database.connection_context():
        reg = Registration.get_by_id(ex["a_id"])
        assert reg.sync_status == "Succeeded" and reg.last_synced_at is not None
        assert sis_id_for(reg.student_id, SyncConnection.get_by_id(cid)) == sis_id
        item = SyncItem.get(SyncItem.registration == reg.id)
        assert item.job.kind == "test" and item.status == "Succeeded" and item.sis_id == sis_id
        assert item.sent == preview and item.connection_id == cid
        assert SyncJob.select().where(SyncJob.kind == "test").count() == 1
        actions = {a.action for a in AuditLog.select()}
        assert {"connection.create", "connection.test", "mapping.examples", "mapping.save",
                "mapping.test_record"} <= actions
        assert not any(sandbox.client_secret in json.dumps(a.details) for a in AuditLog.select())
    history = login("District Admin").page(f"/registrations/{ex['a_form']}")
    assert "Test #" in history.text and sis_id in history.text


def _map_required(ed):
    ed.change("local_id", "type", "direct")
    ed.change("local_id", "from", "registration.form_id")
    ed.change("name.last_name", "type", "direct")
    ed.change("name.last_name", "from", "student_legal_last_name")
    ed.change("school_enrollment.school_number", "type", "match_codes")
    ed.change("school_enrollment.school_number", "from", "school.school_number")
    for answer, code in {"101": "100", "102": "100", "201": "200", "301": "300", "901": "100"}.items():
        ed.set_code("school_enrollment.school_number", answer, code)
    r = ed.row("school_enrollment.school_number")
    assert mapped_value(row_fragment(r.text, "school_enrollment.school_number")) == "100"
    ed.change("school_enrollment.grade_level", "type", "match_codes")
    ed.change("school_enrollment.grade_level", "from", "registration.grade")
    for answer in ed.code_answers("school_enrollment.grade_level"):
        ed.set_code("school_enrollment.grade_level", answer, "0" if answer in ("K", "TK", "PK") else answer)
    r = ed.row("school_enrollment.grade_level")
    assert mapped_value(row_fragment(r.text, "school_enrollment.grade_level")) == "3"
    for key, kind, settings in (("school_enrollment.entry_date", "today", {}),
                                ("school_enrollment.exit_date", "value", {"value": "2099-06-10"})):
        ed.change(key, "type", "transformation")
        ed.set(key, "new_step", kind)
        r = ed.row(key, action=f"add_step:{key}")
        for name, value in settings.items():
            r = ed.change(key, f"s0|{name}", value)
        assert mapped_value(row_fragment(r.text, key))
