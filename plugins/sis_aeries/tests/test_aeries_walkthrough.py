"""The walkthrough on the Aeries sandbox, end to end over real HTTP: Enroll Sync on a
loopback port, the Aeries sandbox on another, SQLite on disk, sync jobs through the real
queue consumed in this process.

Sync Service Login > Add Sync Connection (Aeries, hosted under /aeries as districts do),
Test Connection, Configure (Registration Examples), Field Mapping with Match Codes whose SIS
codes are Aeries' own code sets (grades by AeriesCode, so K is 0; genders; schools), Save,
Send Record (the preview), OK, Continue (the sandbox holds exactly that student, sent as
previewed), a field Aeries ignores reported as not written, Set Sync Connection on the
schools, Registrations > Sync to SIS > Proceed with Sync (all Succeeded), a re-sync
(updates, no duplicate), and a sync after Aeries was restored from a backup under new
StudentIDs (every student relinked by match, no duplicate).

The app is driven the way a browser drives it: pages, form posts (the Field Mapping rows
post ``<To Field key>|<attr>`` as ``enroll_sync.web.mapping.form.parse_row`` reads them)
and HTMX requests. Assertions read what the SIS holds and the core's state through
``enroll_sync.testing``, and only the words and values a page shows, never its markup.
"""
from __future__ import annotations

import html
import io
import json
import re
from html.parser import HTMLParser

import pytest

from enroll_sync.testing import (CLOSED_SANDBOX_URLS, connection, registrations, run_worker, schools,
                                 wait_for_job)

BASE = "/settings/sync-service"
NAME = "Aeries Walkthrough"
#: demo school numbers -> Aeries school codes (901, a preschool program, stays unassigned)
SCHOOLS = {"101": "990", "102": "990", "201": "991", "301": "994"}
#: registration grades -> Aeries grade numbers (the AeriesCode of /codes/STU/GR)
GRADES = {"TK": "-1", "K": "0", **{str(g): str(g) for g in range(1, 13)}}
GENDERS = {"Female": "F", "Male": "M", "Non-binary": "X"}


class BodyRecorder:
    """WSGI middleware in front of the sandbox: keeps every InsertStudent body as received."""

    def __init__(self, app):
        self.app = app
        self.bodies: list[bytes] = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ.get("PATH_INFO", "").endswith("/InsertStudent"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            self.bodies.append(body)
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)


@pytest.fixture
def recorder(sandbox):
    server = sandbox.server
    inner = server.app
    server.app = BodyRecorder(inner)
    yield server.app
    server.app = inner


@pytest.fixture
def demo_sandbox_urls(sandbox):
    return {**CLOSED_SANDBOX_URLS, "aeries": sandbox.url}


class _Inputs(HTMLParser):
    """name -> value of every <input> in a page (a browser posts them back)."""

    def __init__(self):
        super().__init__()
        self.values: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name"):
            self.values.setdefault(a["name"], a.get("value") or "")


def inputs(page: str) -> dict[str, str]:
    parser = _Inputs()
    parser.feed(page)
    return parser.values


def shown_json(page: str, marker: str) -> dict:
    """The JSON object a page shows as text, found by a key it contains (``"request"``)."""
    text = html.unescape(page)
    at = text.index(marker)
    start = text.rindex("{", 0, at)
    return json.JSONDecoder().raw_decode(text, start)[0]


def row(key: str, type_: str, source: str, *, steps=(), codes=None, unmatched="fail") -> dict:
    """One Field Mapping row as the editor posts it (see ``parse_row``)."""
    data = {f"{key}|to": key, f"{key}|type": type_, f"{key}|from": source}
    if type_ == "transformation":
        data[f"{key}|steps"] = ""
        for i, step in enumerate(steps):
            for attr, value in step.items():
                data[f"{key}|s{i}|{attr}"] = value
    if type_ == "match_codes":
        data[f"{key}|codes"] = source     # the From Enroll Field the codes were made for
        data[f"{key}|code_answer"] = list((codes or {}).keys())
        data[f"{key}|code_value"] = list((codes or {}).values())
        data[f"{key}|unmatched"] = unmatched
    return data


def field_mapping_form() -> dict:
    trim = [{"kind": "trim"}]
    form: dict = {}
    for part in (
        row("FirstName", "transformation", "student_legal_first_name", steps=trim),
        row("LastName", "transformation", "student_legal_last_name", steps=trim),
        row("BirthDate", "transformation", "birth_date",
            steps=[{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]),
        row("Gender", "match_codes", "gender", codes=GENDERS, unmatched="blank"),
        row("SchoolCode", "match_codes", "school.school_number", codes=SCHOOLS),
        row("Grade", "match_codes", "registration.grade", codes=GRADES),
    ):
        form.update(part)
    return form


def sync_approved(app, session):
    """Registrations > Bulk Actions > Sync to SIS (all Approved) > Proceed with Sync."""
    with run_worker(app):
        listing = session.page("/registrations/?status=Approved")
        assert listing.status_code == 200
        selection = {"all_matching": "1", "status": "Approved"}
        confirm = session.post_form("/registrations/sync/confirm", selection, htmx=True)
        assert confirm.status_code == 200, html.unescape(confirm.text)[:2000]
        upto = inputs(confirm.text).get("upto")
        resp = session.post_form("/registrations/sync", {**selection, **({"upto": upto} if upto else {})},
                                 htmx=True)
        assert resp.status_code == 200, html.unescape(resp.text)[:2000]
        job_id = int(resp.headers["HX-Redirect"].rstrip("/").rsplit("/", 1)[1])
        job = wait_for_job(app, job_id)
    assert job.status == "Completed", job.message
    return job


def test_walkthrough_on_the_aeries_sandbox(app, live, login, sandbox, recorder):
    admin = login("Sync Admin")  # Sync Service Full Access is all it takes

    # Settings > Sync Service > Sync Service Login > Add Sync Connection > Aeries
    assert admin.page(f"{BASE}/").status_code == 200
    assert f"{BASE}/new/aeries" in admin.page(f"{BASE}/new").text
    form = admin.page(f"{BASE}/new/aeries")
    assert {"s_server_url", "s_certificate", "s_school_year"} <= set(inputs(form.text))
    r = admin.post_form(f"{BASE}/new/aeries", {
        "name": NAME, "environment": "sandbox", "s_server_url": sandbox.url + "/aeries/api/v5",
        "s_certificate": sandbox.cert, "s_school_year": "2025", "s_batch_size": "4",
        "s_min_interval_ms": "0", "s_timeout_s": "10", "s_deadline_s": ""})
    assert r.status_code == 302, html.unescape(r.text)[:2000]
    conn = connection(app, NAME)
    assert conn.adapter == "aeries" and sandbox.cert not in json.dumps(conn.settings)
    assert sandbox.cert not in admin.page(f"{BASE}/").text

    # Test Connection: the card says what was found
    card = admin.post_form(f"{BASE}/{conn.id}/test", {}, htmx=True)
    assert card.status_code == 200
    text = html.unescape(card.text)
    assert "Connected to Aeries" in text and "2025-2026 exists" in text and sandbox.cert not in text
    assert connection(app, conn.id).last_check_ok is True
    assert {q["mount"] for q in sandbox.requests()} == {"/aeries"}, "the district's path is kept"

    # Configure Mapping > Export Student Mapping > Configure: a kindergartner as the example
    riverside = next(s for s in schools(app) if s.school_number == "101")
    listing = admin.page(f"/registrations/?status=Approved&grade=K&school={riverside.id}")
    form_id = sorted(set(re.findall(r"/registrations/(\d+)\b", listing.text)))[0]
    oak_grove = next(s for s in schools(app) if s.school_number == "102")
    listing = admin.page(f"/registrations/?status=Approved&grade=3&school={oak_grove.id}")
    second_form_id = sorted(set(re.findall(r"/registrations/(\d+)\b", listing.text)))[0]
    r = admin.post_form(f"{BASE}/{conn.id}/mapping/export_student/configure", {
        "registration_example": [form_id, second_form_id, "", "", ""], "student_example": [""] * 5})
    assert r.status_code == 302, html.unescape(r.text)[:2000]

    # Field Mapping: the To Fields are Aeries' write names, the SIS codes its code sets
    editor = f"{BASE}/{conn.id}/mapping/export_student"
    page = admin.page(f"{editor}/fields")
    assert page.status_code == 200 and "Grade|type" in page.text and "BirthDate|type" in page.text
    form = field_mapping_form()
    grade_row = admin.post_form(f"{editor}/row", {**form, "row": "Grade", "example": form_id}, htmx=True)
    assert grade_row.status_code == 200
    shown = html.unescape(grade_row.text)
    assert "K - Kindergarten" in shown and "TK - Transitional Kindergarten" in shown, "GET /codes/STU/GR"
    assert "PS - Preschool" not in shown, "an inactive Aeries code is left out of new mappings"
    gender_row = admin.post_form(f"{editor}/row", {**form, "row": "Gender", "example": form_id}, htmx=True)
    assert "Nonbinary" in html.unescape(gender_row.text), "GET /codes/STU/GN"

    # Save
    saved = admin.post_form(f"{editor}/fields", {**form, "action": "save", "example": form_id}, htmx=True)
    assert saved.status_code == 200 and "Saved" in html.unescape(saved.text)

    # Send Record: the preview of exactly what will be sent; nothing is sent yet
    preview_page = admin.post_form(f"{editor}/send-record", {**form, "example": form_id}, htmx=True)
    assert preview_page.status_code == 200, html.unescape(preview_page.text)[:2000]
    preview = shown_json(preview_page.text, '"request"')
    assert preview["request"] == "POST /api/v5/schools/990/InsertStudent?DatabaseYear=2025"
    body = preview["body"]
    assert body["Grade"] == 0, "K is Aeries grade 0 (its AeriesCode)"
    assert body["Gender"] in ("F", "M", "X") and re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["BirthDate"])
    assert body["FirstName"] == body["FirstName"].strip() != "" and body["LastName"].strip()
    assert "SchoolCode" not in body, "the school is the URL of InsertStudent"
    assert recorder.bodies == [] and sandbox.count() == 0
    dialog = inputs(preview_page.text)

    # OK, Continue: one record through the adapter; Aeries holds exactly that student
    r = admin.post_form(f"{editor}/send-record/continue",
                        {"registration_id": dialog["registration_id"], "fingerprint": dialog["fingerprint"]},
                        htmx=True)
    assert r.status_code == 200, html.unescape(r.text)[:2000]
    assert [json.loads(b) for b in recorder.bodies] == [body], "sent exactly as previewed"
    [student] = sandbox.students()
    assert (student["FirstName"], student["LastName"], student["Grade"], student["SchoolCode"]) == \
           (body["FirstName"], body["LastName"], 0, 990)
    assert student["Birthdate"] == body["BirthDate"] + "T00:00:00" and student["Gender"] == body["Gender"]
    [reg] = [x for x in registrations(app) if str(x.form_id) == form_id]
    assert reg.sync_status == "Succeeded"
    assert str(student["StudentID"]) in html.unescape(r.text)

    # a field Aeries ignores (no Insert permission) is reported as not written, never Succeeded
    sandbox.set_faults(no_insert_permission=["Gender"])
    preview_page = admin.post_form(f"{editor}/send-record", {**form, "example": second_form_id}, htmx=True)
    second = shown_json(preview_page.text, '"request"')
    assert second["body"]["Grade"] == 3 and second["body"]["Gender"] in ("F", "M", "X")
    dialog = inputs(preview_page.text)
    r = admin.post_form(f"{editor}/send-record/continue",
                        {"registration_id": dialog["registration_id"], "fingerprint": dialog["fingerprint"]},
                        htmx=True)
    shown = html.unescape(r.text)
    assert "Partial Sync" in shown and "Not written: Gender" in shown, shown[:3000]
    [reg2] = [x for x in registrations(app) if str(x.form_id) == second_form_id]
    assert reg2.sync_status == "Partial Sync"
    [partial] = [s for s in sandbox.students() if s["LastName"] == second["body"]["LastName"]]
    assert partial["Gender"] == "" and str(partial["StudentID"]) in shown, "saved, its StudentID kept"
    sandbox.set_faults(no_insert_permission=[])

    # Settings > Schools > Bulk Actions > Set Sync Connection (a District Admin's door)
    district = login("District Admin")
    district.page("/settings/schools/")
    r = district.post_form("/settings/schools/bulk/set-sync-connection", {
        "school_ids": [str(s.id) for s in schools(app) if s.school_number in SCHOOLS],
        "connection_id": str(conn.id)})
    assert r.status_code == 302
    assert {s.school_number for s in schools(app) if s.connection_id == conn.id} == set(SCHOOLS)
    links = {x.id: x.sis_id for x in registrations(app, [reg.id, reg2.id])}
    assert links == {reg.id: str(student["StudentID"]), reg2.id: str(partial["StudentID"])}

    # Registrations > Sync to SIS > Proceed with Sync: every Approved registration goes in
    job = sync_approved(app, district)
    assert {i.status for i in job.items} == {"Succeeded"}, [(i.status, i.reason) for i in job.items]
    first = {i.registration_id: i.sis_id for i in job.items}
    assert len(first) >= 10 and len(set(first.values())) == len(first)
    assert first[reg.id] == str(student["StudentID"]), "the Send Record student is updated, not inserted"
    assert first[reg2.id] == str(partial["StudentID"])
    assert sandbox.count() == len(first), "one Aeries student per registration"
    assert {s["Gender"] for s in sandbox.students() if s["StudentID"] == partial["StudentID"]} == \
        {second["body"]["Gender"]}, "the field Aeries ignored before is written by the update"
    assert {r.id: r.sis_id for r in registrations(app, list(first))} == first
    kindergarten = [s for s in sandbox.students() if s["Grade"] == 0]
    assert kindergarten and all(s["SchoolCode"] == 990 for s in kindergarten)

    # a re-sync updates: the same StudentIDs, no duplicate
    job = sync_approved(app, district)
    assert {i.status for i in job.items} == {"Succeeded"}, [(i.status, i.reason) for i in job.items]
    assert {i.registration_id: i.sis_id for i in job.items} == first
    assert sandbox.count() == len(first)
    assert len(recorder.bodies) == len(first), "every student was inserted once, ever"

    # Aeries restored from a backup under new StudentIDs: every student relinked by match
    renumbered = sandbox.renumber("shift")
    job = sync_approved(app, district)
    assert {i.status for i in job.items} == {"Succeeded"}, [(i.status, i.reason) for i in job.items]
    relinked = {i.registration_id: i.sis_id for i in job.items}
    assert relinked == {r: str(renumbered[int(s)]) for r, s in first.items()}
    assert sandbox.count() == len(first) and len(recorder.bodies) == len(first), "no student inserted twice"
    assert {r.id: r.sis_id for r in registrations(app, list(first))} == relinked, "the links follow"
