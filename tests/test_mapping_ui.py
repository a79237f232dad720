"""Configure Mapping > Export Student Mapping: examples, the Field Mapping editor and its
HTMX row partials, Match Codes, transformations, Auto-map, Save and its summary — over
real HTTP against the real PowerSchool sandbox.

The ``Editor`` helper behaves like the browser: it submits the Field Mapping form as
the page renders it, and swaps each returned row fragment into its copy of the form.
"""
from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

import pytest

from enroll_sync.models import SisLink
from enroll_sync.sync.connections import create_connection
from enroll_sync.db import database
from enroll_sync.demo import DEMO_SLUG
from enroll_sync.models import (AuditLog, Mapping, Organization, Registration, School, Student, SyncConnection,
                                SyncItem, SyncJob)


class FormValues(HTMLParser):
    """What a browser would submit for <form id=form_id> (inputs, selects, textareas)."""

    def __init__(self, form_id):
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.depth = 0  # >0 while inside the form
        self.values = []
        self.select = None
        self.select_first = None
        self.select_chosen = None
        self.option = None
        self.textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == self.form_id:
            self.depth = 1
            return
        if not self.depth:
            return
        if tag == "template":
            return
        if tag == "input":
            if "name" not in a or "disabled" in a:
                return
            t = a.get("type", "text")
            if t in ("submit", "button", "image", "reset", "file"):
                return
            if t in ("checkbox", "radio") and "checked" not in a:
                return
            self.values.append((a["name"], a.get("value", "on" if t in ("checkbox", "radio") else "")))
        elif tag == "select":
            self.select = a if "name" in a and "disabled" not in a else None
            self.select_first = self.select_chosen = None
        elif tag == "option" and self.select is not None:
            self._close_option()
            self.option = {"value": a.get("value"), "selected": "selected" in a, "text": ""}
        elif tag == "textarea" and "name" in a and "disabled" not in a:
            self.textarea = [a["name"], ""]

    def handle_data(self, data):
        if self.option is not None:
            self.option["text"] += data
        if self.textarea is not None:
            self.textarea[1] += data

    def _close_option(self):
        o = self.option
        if o is None:
            return
        value = o["value"] if o["value"] is not None else o["text"].strip()
        if self.select_first is None:
            self.select_first = value
        if o["selected"]:
            self.select_chosen = value
        self.option = None

    def handle_endtag(self, tag):
        if not self.depth:
            return
        if tag == "form":
            self.depth = 0
        elif tag == "option":
            self._close_option()
        elif tag == "select" and self.select is not None:
            self._close_option()
            chosen = self.select_chosen if self.select_chosen is not None else self.select_first
            if chosen is not None:
                self.values.append((self.select["name"], chosen))
            self.select = None
        elif tag == "textarea" and self.textarea is not None:
            text = self.textarea[1]
            if text.startswith("\n"):
                text = text[1:]
            self.values.append((self.textarea[0], text))
            self.textarea = None


def form_values(html, form_id):
    p = FormValues(form_id)
    p.feed(html)
    return p.values


BASE = "/settings/sync-service"


class Editor:
    """The Field Mapping tab of one connection, driven like a browser would."""

    def __init__(self, session, connection_id, kind="export_student"):
        self.s = session
        self.base = f"{BASE}/{connection_id}/mapping/{kind}"
        self.values: list[tuple[str, str]] = []
        self.html = ""

    # the page
    def load(self, example=None):
        r = self.s.page(self.base + "/fields" + (f"?example={example}" if example else ""))
        assert r.status_code == 200, r.text[:500]
        self._take_form(r.text)
        return r

    def _take_form(self, html):
        self.html = html
        self.values = form_values(html, "field-mapping")

    def get(self, key, attr):
        for n, v in self.values:
            if n == f"{key}|{attr}":
                return v
        return None

    def set(self, key, attr, value):
        name = f"{key}|{attr}"
        for i, (n, _) in enumerate(self.values):
            if n == name:
                self.values[i] = (name, value)
                return
        self.values.append((name, value))

    def code_answers(self, key):
        return [v for n, v in self.values if n == f"{key}|code_answer"]

    def set_code(self, key, answer, code):
        """Set the SIS code of one answer in a Match Codes editor (answers and codes are paired by order)."""
        answers = [i for i, (n, _) in enumerate(self.values) if n == f"{key}|code_answer"]
        codes = [i for i, (n, _) in enumerate(self.values) if n == f"{key}|code_value"]
        assert len(answers) == len(codes), "every answer has one code input"
        for a, c in zip(answers, codes):
            if self.values[a][1] == answer:
                self.values[c] = (self.values[c][0], code)
                return
        raise AssertionError(f"no answer {answer!r} in the Match Codes editor of {key}")

    def data(self, **extra):
        out: dict[str, list[str]] = {}
        for n, v in self.values:
            out.setdefault(n, []).append(v)
        for n, v in extra.items():
            out[n] = v
        return out

    # a row
    def change(self, key, attr, value, **extra):
        """Change one cell: the tbody's hx-post (hx-trigger=change) with the whole form."""
        self.set(key, attr, value)
        return self.row(key, **extra)

    def row(self, key, action=None, **extra):
        data = self.data(row=key, **extra)
        if action:
            data["action"] = action
        r = self.s.post_form(self.base + "/row", data, htmx=True)
        if r.status_code == 200:
            self._swap_row(key, r.text)
        return r

    def _swap_row(self, key, fragment):
        prefix = key + "|"
        first = next((i for i, (n, _) in enumerate(self.values) if n.startswith(prefix)), len(self.values))
        rest = [(n, v) for n, v in self.values if not n.startswith(prefix)]
        fresh = form_values('<form id="f">' + fragment.split("<template>")[0] + "</form>", "f")
        self.values = rest[:first] + fresh + rest[first:]

    # the whole form
    def submit(self, action="save", htmx=True, **extra):
        data = self.data(action=action, **extra)
        r = self.s.post_form(self.base + "/fields", data, htmx=htmx)
        if r.status_code == 200 and htmx:
            self._take_form(r.text)
        return r

    def send_record(self):
        return self.s.post_form(self.base + "/send-record", self.data(), htmx=True)


def row_fragment(html, key):
    """The <tbody> of one row in a page or partial (nested tables included)."""
    slug = "row-" + re.sub(r"[^A-Za-z0-9_-]", "-", key)
    i = html.index(f'<tbody id="{slug}"')
    depth, pos = 0, i
    for m in re.finditer(r"<(/?)tbody\b", html[i:]):
        depth += -1 if m.group(1) else 1
        if depth == 0:
            pos = i + m.end()
            break
    return html[i:html.index(">", pos) + 1]


def mapped_value(fragment):
    """The Mapped Value cell's value; None when blank (or no example)."""
    m = re.search(r'data-testid="mapped-value"( data-blank="1")?[^>]*>([^<]*)<', fragment)
    return None if not m or m.group(1) else unescape(m.group(2))


def step_values(fragment):
    return [unescape(v) for v in re.findall(r'data-testid="step-value">([^<]*)<', fragment)]


def texts(fragment, testid):
    return [unescape(re.sub(r"<[^>]+>", "", v)).strip()
            for v in re.findall(rf'data-testid="{testid}"[^>]*>(.*?)</', fragment, re.S)]


# --------------------------------------------------------------------------- fixtures

sandbox_mod = pytest.importorskip("sis_powerschool.sandbox")

#: fast retries so failure tests stay quick (advanced adapter settings, not in the form)
FAST = {"retry_backoff": 0.01, "max_backoff": 0.05, "max_attempts": 2, "timeout_s": 2}

WORKING_ROWS = [
    {"to": "local_id", "type": "direct", "from": "registration.form_id"},
    {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"},
    {"to": "name.last_name", "type": "direct", "from": "student_legal_last_name"},
    {"to": "demographics.gender", "type": "match_codes", "from": "gender",
     "codes": {"Female": "F", "Male": "M"}, "unmatched": "blank"},
    {"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
    {"to": "school_enrollment.school_number", "type": "match_codes", "from": "school.school_number",
     "codes": {"101": "100", "102": "100", "201": "200", "301": "300"}, "unmatched": "fail"},
    {"to": "school_enrollment.grade_level", "type": "match_codes", "from": "registration.grade",
     "codes": {"K": "0", **{str(g): str(g) for g in range(1, 13)}}, "unmatched": "fail"},
    {"to": "school_enrollment.entry_date", "type": "transformation", "steps": [{"kind": "today"}]},
    {"to": "school_enrollment.exit_date", "type": "transformation",
     "steps": [{"kind": "value", "value": "2099-06-10"}]},
]


@pytest.fixture
def sandbox():
    handle = sandbox_mod.serve_in_thread(port=0)
    yield handle
    handle.stop()


@pytest.fixture
def ps(app, sandbox):
    """A PowerSchool connection to the sandbox with two examples: A (Approved, Female,
    born 09/01/2007) and B (In Review). Returns ids and form ids."""
    with app.app_context(), database.connection_context():
        org = Organization.get(Organization.slug == DEMO_SLUG)
        conn = create_connection(org, "powerschool", "PS Test", "sandbox", {
            "server_url": sandbox.url, "client_id": sandbox.client_id, "client_secret": sandbox.client_secret})
        conn.settings = {**conn.settings, **FAST}
        conn.save()
        regs = list(Registration.select().join(Student).switch(Registration)
                    .where(Registration.organization == org).order_by(Registration.form_id).limit(2))
        a, b = regs
        answers = {**a.answers, "birth_date": "09/01/2007", "gender": "Female", "student_legal_first_name": "Ana",
                   "student_legal_last_name": "Example"}
        Registration.update(answers=answers, status="Approved", grade="3",
                            school=org.schools.where(School.school_number == "101").get()).where(
            Registration.id == a.id).execute()
        Registration.update(status="In Review").where(Registration.id == b.id).execute()
        Mapping.create(connection=conn, kind="export_student", version=0,  # examples only, as Configure saves them
                       registration_examples=[str(a.form_id), str(b.form_id)])
        return {"cid": conn.id, "a_form": a.form_id, "a_id": a.id, "b_form": b.form_id, "b_id": b.id,
                "b_schoolmint": b.student.schoolmint_id, "org": org.id}


def save_rows(app, cid, rows):
    from enroll_sync.sync.mappings.versions import save_rows as save
    with app.app_context(), database.connection_context():
        save(SyncConnection.get_by_id(cid), "export_student", Mapping.get(Mapping.connection == cid), rows, None)


# --------------------------------------------------------------------------- Configure tab

def test_configure_checks_each_example_in_this_organization(app, live, login, ps):
    admin = login("Sync Admin")
    url = f"{BASE}/{ps['cid']}/mapping/export_student/configure"
    page = admin.page(url)
    assert page.status_code == 200
    for word in ("Export Student Mapping", "Configure", "Field Mapping", "Registration Examples", "Student Examples"):
        assert word in page.text
    assert 'aria-current="page">Export Student Mapping<' in page.text
    r = admin.post_form(url, {"registration_example": [str(ps["a_form"]), "999999", "12ab", str(ps["a_form"]), ""],
                              "student_example": [ps["b_schoolmint"], "SM-NOPE", "", "", ""]})
    assert r.status_code == 422
    body = unescape(r.text)
    assert "No registration with Registration Form ID 999999 in this organization." in body
    assert "“12ab” is not a Registration Form ID" in body
    assert f"Registration Form ID {ps['a_form']} is already an example." in body
    assert "No student with SIS ID or SchoolMint ID “SM-NOPE” in this organization." in body
    assert 'value="SM-NOPE"' in r.text  # what was typed stays in place
    assert len(re.findall(r'aria-invalid="true"', r.text)) == 4
    with app.app_context(), database.connection_context():  # nothing saved
        m = Mapping.get(Mapping.connection == ps["cid"])
        assert m.registration_examples == [str(ps["a_form"]), str(ps["b_form"])] and m.student_examples == []

    r = admin.post_form(url, {"registration_example": [str(ps["a_form"]), "", "", "", "", "100003"],
                              "student_example": [""] * 5})
    assert r.status_code == 422 and "Up to 5 Registration Examples." in r.text

    r = admin.post_form(url, {"registration_example": [str(ps["a_form"]), "", "", "", ""],
                              "student_example": [ps["b_schoolmint"], "", "", "", ""]})
    assert r.status_code == 302
    page = admin.page(url)
    assert "Saved the examples" in page.text
    assert f"Student {ps['b_schoolmint']}" in page.text
    with app.app_context(), database.connection_context():
        m = Mapping.get(Mapping.connection == ps["cid"])
        assert m.registration_examples == [str(ps["a_form"])] and m.student_examples == [ps["b_schoolmint"]]
        assert AuditLog.select().where(AuditLog.action == "mapping.examples").count() == 1


def test_examples_from_another_organization_are_not_found(app, live, login, ps):
    with app.app_context(), database.connection_context():
        other = Organization.create(name="Elsewhere", slug="elsewhere")
        school = School.create(organization=other, name="Far", school_number="1")
        st = Student.create(organization=other, schoolmint_id="SM-FAR")
        SisLink.create(organization=other, student=st, connection=None, sis_id="FAR-1", how="connection unknown")
        Registration.create(organization=other, form_id=777777, student=st, school=school, grade="1",
                            school_year="2026-2027")
    admin = login("Sync Admin")
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/configure",
                        {"registration_example": ["777777"], "student_example": ["SM-FAR", "FAR-1"]})
    assert r.status_code == 422
    body = unescape(r.text)
    assert "No registration with Registration Form ID 777777 in this organization." in body
    assert "No student with SIS ID or SchoolMint ID “SM-FAR” in this organization." in body
    assert "No student with SIS ID or SchoolMint ID “FAR-1” in this organization." in body


# --------------------------------------------------------------------------- Field Mapping: rows and partials

def test_field_mapping_page_lists_the_sis_fields_by_section(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    page = ed.load()
    assert page.headers["Cache-Control"] == "no-store"
    # sections from the adapter, expandable, with counts
    for label in ("Student", "Name", "Demographics", "School Enrollment"):
        assert f"<summary>{label} " in page.text
    assert 'id="counts-section-name"' in page.text and "2 required unmapped" in page.text
    # To Field: label, key, type, max length, required marker
    frag = row_fragment(page.text, "name.first_name")
    assert "First Name" in frag and "<code>name.first_name</code>" in frag and "max 50 characters" in frag
    assert "Required" in frag
    # From Enroll Field: type-ahead over the catalog, grouped by form section, system values included
    assert 'list="enroll-fields"' in frag and 'aria-label="From Enroll Field for First Name"' in frag
    datalist = re.search(r'<datalist id="enroll-fields">(.*?)</datalist>', page.text, re.S).group(1)
    assert "Student Legal First Name — Student Information" in datalist
    assert 'value="registration.form_id"' in datalist and "SchoolMint ID — Registration" in datalist
    # Mapping Type, every row has one (Do Not Map by default); Overwrite shown but disabled
    assert re.search(r'<option value="do_not_map" selected>Do Not Map</option>', frag)
    assert re.search(r'<input type="checkbox" disabled aria-label="Overwrite for First Name', frag)
    assert "Overwrite is only used when importing" in page.text
    # the example switch and the search box
    assert "Mapped Value shows" in page.text and 'data-filter-rows="#field-mapping"' in page.text
    assert f'<option value="{ps["a_form"]}" selected>' in page.text


def test_changing_a_cell_rerenders_only_that_row(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    ed.set("name.first_name", "type", "direct")
    r = ed.change("name.first_name", "from", "Student Legal First Name")  # a typed label is accepted
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<tbody id="row-name-first_name"')
    assert "<html" not in r.text and "<form" not in r.text
    assert "HX-Request" in r.headers["Vary"]
    assert r.text.count('<tbody id="row-') == 1
    frag = row_fragment(r.text, "name.first_name")
    # any change in the row re-renders it, except choosing a step (nothing changes until Add step)
    assert 'hx-trigger="change[!event.target.hasAttribute(\'data-no-render\')]"' in frag
    assert 'hx-target="this"' in frag
    assert mapped_value(frag) == "Ana"
    assert ed.get("name.first_name", "from") == "student_legal_first_name"
    # the section's counts and the unsaved marker come along out of band
    assert re.search(r'<span id="counts-section-name" hx-swap-oob="true"[^>]*>1 mapped · .*1 required unmapped', r.text)
    assert "Unsaved changes" in r.text
    # nothing is stored until Save
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == ps["cid"]).rows == []
    # another example, same row
    r = ed.row("name.first_name", example=str(ps["b_form"]))
    with app.app_context(), database.connection_context():
        b_first = Registration.get_by_id(ps["b_id"]).answers["student_legal_first_name"]
    assert mapped_value(row_fragment(r.text, "name.first_name")) == b_first


def test_a_row_partial_needs_a_known_row(app, live, login, ps):
    admin = login("Sync Admin")
    admin.page(f"{BASE}/{ps['cid']}/mapping/export_student/fields")
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/row", {"row": "name.first_name"}, htmx=True)
    assert r.status_code == 400 and "Which row?" in r.text
    # shown in the page's flash area, not swapped over the row as bare text
    assert r.headers["HX-Retarget"] == "#flashes" and r.headers["X-Enroll-Sync-Error"] == "400"
    assert 'role="alert"' in r.text


def test_direct_row_shows_length_and_type_problems_on_the_row(app, live, login, ps):
    with app.app_context(), database.connection_context():
        reg = Registration.get_by_id(ps["a_id"])
        Registration.update(answers={**reg.answers, "student_legal_middle_name": "M" * 40}).where(
            Registration.id == reg.id).execute()
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    ed.set("name.middle_name", "type", "direct")
    r = ed.change("name.middle_name", "from", "student_legal_middle_name")
    frag = row_fragment(r.text, "name.middle_name")
    assert "40 characters; Middle Name allows at most 30." in frag
    ed.set("demographics.birth_date", "type", "direct")
    r = ed.change("demographics.birth_date", "from", "birth_date")
    frag = row_fragment(r.text, "demographics.birth_date")
    assert "is not a date as Birth Date needs (YYYY-MM-DD); add a Date transformation." in unescape(frag)
    ed.set("name.last_name", "type", "direct")
    r = ed.change("name.last_name", "from", "no_such_field")
    assert "unknown Enroll field" in unescape(row_fragment(r.text, "name.last_name"))


# --------------------------------------------------------------------------- Match Codes

def test_match_codes_editor_lists_every_answer_and_warns_about_unmatched(app, live, login, ps):
    with app.app_context(), database.connection_context():
        reg = Registration.get_by_id(ps["b_id"])  # an answer that is not one of the choices
        Registration.update(answers={**reg.answers, "gender": "Prefer not to say"}).where(
            Registration.id == reg.id).execute()
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    ed.set("demographics.gender", "type", "match_codes")
    r = ed.change("demographics.gender", "from", "gender")
    frag = unescape(row_fragment(r.text, "demographics.gender"))
    # the choices first, then what registrations hold; the adapter's codes in a select
    assert ed.code_answers("demographics.gender") == ["Female", "Male", "Non-binary", "Prefer not to say"]
    assert re.search(r'aria-label="SIS code for Female \(Gender\)">.*?<option value="F" selected>F — Female</option>',
                     frag, re.S)  # suggested: the answer equals the code's label
    assert "2 answers without a code: Non-binary, Prefer not to say." in frag
    assert frag.count('data-testid="unmatched">No code: the record fails') == 2
    assert mapped_value(frag) == "F"

    # the example with an unmatched answer: policy fail is an error on the row
    r = ed.row("demographics.gender", example=str(ps["b_form"]))
    frag = unescape(row_fragment(r.text, "demographics.gender"))
    assert "'Prefer not to say' has no code." in frag and mapped_value(frag) is None

    # fallback: needs a code, then sends it with a warning
    r = ed.change("demographics.gender", "unmatched", "fallback", example=str(ps["b_form"]))
    frag = unescape(row_fragment(r.text, "demographics.gender"))
    assert "Enter the fallback code for answers without a code." in frag
    assert 'aria-label="Fallback code (Gender)"' in frag
    r = ed.change("demographics.gender", "fallback", "M", example=str(ps["b_form"]))
    frag = unescape(row_fragment(r.text, "demographics.gender"))
    assert mapped_value(frag) == "M" and "has no code; sent the fallback 'M'." in frag
    assert frag.count("No code: sends the fallback code") == 2

    # blank: nothing sent for that answer, still visibly warned
    r = ed.change("demographics.gender", "unmatched", "blank", example=str(ps["b_form"]))
    frag = unescape(row_fragment(r.text, "demographics.gender"))
    assert 'data-blank="1"' in frag and "has no code; left blank." in frag

    # a code the SIS does not know is flagged
    ed.set_code("demographics.gender", "Non-binary", "X")
    r = ed.row("demographics.gender")
    assert "Not one of the SIS&#39;s codes" in r.text or "Not one of the SIS's codes" in r.text

    # switching the Mapping Type away and back keeps the codes
    ed.change("demographics.gender", "type", "direct")
    r = ed.change("demographics.gender", "type", "match_codes")
    assert ed.code_answers("demographics.gender")[:2] == ["Female", "Male"]
    assert re.search(r'<option value="F" selected>', row_fragment(r.text, "demographics.gender"))


def test_match_codes_without_sis_codes_use_free_text(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    ed.set("school_enrollment.grade_level", "type", "match_codes")
    r = ed.change("school_enrollment.grade_level", "from", "registration.grade")
    frag = row_fragment(r.text, "school_enrollment.grade_level")
    assert '<input name="school_enrollment.grade_level|code_value"' in frag
    assert "3" in ed.code_answers("school_enrollment.grade_level")
    ed.set_code("school_enrollment.grade_level", "3", "3")
    r = ed.row("school_enrollment.grade_level")
    assert mapped_value(row_fragment(r.text, "school_enrollment.grade_level")) == "3"


# --------------------------------------------------------------------------- Transformation

def _transformation(ed, key, frm=None):
    ed.set(key, "type", "transformation")
    if frm:
        ed.set(key, "from", frm)
    return ed.row(key)


def _add_step(ed, key, kind):
    ed.set(key, "new_step", kind)
    r = ed.row(key, action=f"add_step:{key}")
    assert r.status_code == 200
    return r


def test_transformation_chain_shows_the_value_after_each_step(app, live, login, ps):
    with app.app_context(), database.connection_context():
        reg = Registration.get_by_id(ps["a_id"])
        Registration.update(answers={**reg.answers, "student_legal_first_name": "  ana   maria  "}).where(
            Registration.id == reg.id).execute()
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    key = "name.first_name"
    _transformation(ed, key, "student_legal_first_name")
    _add_step(ed, key, "squish")
    r = _add_step(ed, key, "proper_case")
    frag = unescape(row_fragment(r.text, key))
    assert "Step 1: Squish" in frag and "Step 2: Proper Case" in frag
    assert texts(frag, "trace-from") == ["ana   maria"] or texts(frag, "trace-from")[0].strip() == "ana   maria"
    assert step_values(frag) == ["ana maria", "Ana Maria"]
    assert mapped_value(frag) == "Ana Maria"
    # a step's settings come from its Param list: a bool rendered as a checkbox
    assert 'aria-label="Keep names already in mixed case (step 2, First Name)"' in frag
    # reorder: Proper Case first, then Squish
    r = ed.row(key, action=f"up_step:{key}:1")
    frag = unescape(row_fragment(r.text, key))
    assert frag.index("Step 1: Proper Case") < frag.index("Step 2: Squish")
    assert step_values(frag) == ["  Ana   Maria  ", "Ana Maria"]
    r = ed.row(key, action=f"down_step:{key}:0")
    assert step_values(row_fragment(r.text, key)) == ["ana maria", "Ana Maria"]
    # remove
    r = ed.row(key, action=f"remove_step:{key}:0")
    frag = unescape(row_fragment(r.text, key))
    assert "Step 2" not in frag and "Step 1: Proper Case" in frag
    assert mapped_value(frag) == "  Ana   Maria  "


def test_bad_step_settings_are_shown_on_the_step_never_a_500(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    key = "name.last_name"
    _transformation(ed, key, "student_legal_last_name")
    _add_step(ed, key, "upper")
    _add_step(ed, key, "substitute")
    ed.set(key, "s1|mode", "regex")
    r = ed.change(key, "s1|find", "(unclosed")
    assert r.status_code == 200
    frag = unescape(row_fragment(r.text, key))
    assert "is not a valid regular expression" in texts(frag, "step-error")[0]
    assert step_values(frag) == ["EXAMPLE"]  # the value up to the broken step is still shown
    assert "Step 2 (Substitute): Find: '(unclosed' is not a valid regular expression" in frag  # on the row
    assert mapped_value(frag) is None

    # a required setting left blank, a part that does not exist
    r = ed.change(key, "s1|find", "")
    assert "Find is required." in unescape(r.text)
    ed.row(key, action=f"remove_step:{key}:1")
    _add_step(ed, key, "split")
    r = ed.change(key, "s1|part", "0")
    assert "Part: 0 is not a part" in unescape(r.text)
    r = ed.change(key, "s1|part", "abc")
    assert "Part: 'abc' is not a whole number." in unescape(r.text)

    # an unknown step kind (a removed plugin) is a message, not a crash
    ed.set(key, "s1|kind", "no_such_step")
    r = ed.row(key)
    assert r.status_code == 200 and "Unknown transformation “no_such_step”" in unescape(r.text)
    r = ed.row(key, action=f"add_step:{key}", **{f"{key}|new_step": "nope"})
    assert r.status_code == 200 and "Choose a step to add." in r.text


TAMPERED_STASHES = ['{"codes": "x"}', '{"codes": {"Female": ["F"]}, "unmatched": ["fail"]}',
                    '{"steps": {"kind": "upper"}}', '{"steps": ["upper", 3, {"kind": 7}]}',
                    '{"fallback": {"a": 1}, "unmatched": "fallback"}', '[1, 2]', '"just text"', '{not json']


@pytest.mark.parametrize("row_type", ["match_codes", "transformation"])
def test_a_tampered_row_stash_is_dropped_never_a_500(app, live, login, ps, row_type):
    """The stash (a row's codes and steps kept while its Mapping Type shows something
    else) travels through the browser: whatever comes back, the row renders."""
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    ed.set("demographics.gender", "from", "gender")
    ed.set("demographics.gender", "type", row_type)
    for stash in TAMPERED_STASHES:
        r = ed.row("demographics.gender", **{"demographics.gender|stash": stash})
        assert r.status_code == 200, (stash, r.status_code, r.text[:300])
        assert 'id="row-demographics-gender"' in r.text
        for path in ("/fields", "/send-record"):
            r = admin.post_form(ed.base + path, ed.data(**{"demographics.gender|stash": stash}), htmx=True)
            assert r.status_code in (200, 409, 422), (path, stash, r.status_code, r.text[:300])


def test_a_step_that_cannot_apply_shows_its_message_in_the_preview(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    key = "demographics.birth_date"
    _transformation(ed, key, "birth_date")
    _add_step(ed, key, "date")
    r = ed.change(key, "s0|from_format", "YYYY-MM-DD")  # but the answer is 09/01/2007
    frag = unescape(row_fragment(r.text, key))
    assert texts(frag, "step-value-error") == ["'09/01/2007' is not YYYY-MM-DD."]
    assert "Step 1 (Date): '09/01/2007' is not YYYY-MM-DD." in frag
    # an expression error (JSONata) too
    key = "name.middle_name"
    _transformation(ed, key)
    _add_step(ed, key, "expression")
    r = ed.change(key, "s0|expression", "$uppercase(")
    assert r.status_code == 200 and "Expression:" in unescape(r.text)
    r = ed.change(key, "s0|expression", '$uppercase(answers.student_legal_last_name) & "!"')
    assert mapped_value(row_fragment(r.text, key)) == "EXAMPLE!"


def test_step_settings_follow_show_if_and_survive_a_save(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    key = "contact.guardian_email"
    _transformation(ed, key)
    r = _add_step(ed, key, "if_then_else")
    frag = row_fragment(r.text, key)
    assert 'aria-label="If field (step 1, Guardian Email)"' in frag and 'list="enroll-fields"' in frag
    assert 'aria-label="Else value (step 1, Guardian Email)"' not in frag  # else_mode "keep" hides it
    ed.set(key, "s0|field", "needs_interpreter")
    ed.set(key, "s0|operator", "is_not_blank")
    ed.set(key, "s0|then_value", "interpreter@example.org")
    r = ed.change(key, "s0|else_mode", "value")
    frag = row_fragment(r.text, key)
    assert 'aria-label="Else value (step 1, Guardian Email)"' in frag
    assert mapped_value(frag) == "interpreter@example.org"
    r = ed.submit("save")
    assert "Saved the Export Student Mapping" in r.text
    with app.app_context(), database.connection_context():
        row = next(x for x in Mapping.get(Mapping.connection == ps["cid"]).rows if x["to"] == key)
    assert row["type"] == "transformation" and row["steps"][0]["kind"] == "if_then_else"
    assert row["steps"][0]["field"] == "needs_interpreter" and row["steps"][0]["then_value"] == "interpreter@example.org"
    assert row["steps"][0]["ignore_case"] is True  # defaults kept, cleaned by the step itself
    ed.load()
    assert ed.get(key, "s0|then_value") == "interpreter@example.org"


def test_join_and_pick_take_several_fields(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    key = "contact.mother"
    _transformation(ed, key)
    r = _add_step(ed, key, "join")
    frag = row_fragment(r.text, key)
    assert 'aria-label="Fields (step 1, Mother) 1"' in frag
    r = ed.change(key, "s0|fields", "guardian1_first_name")
    frag = row_fragment(r.text, key)
    assert 'aria-label="Fields (step 1, Mother) 2"' in frag  # one more to add another field
    ed.values.append((f"{key}|s0|fields", "guardian1_last_name"))
    r = ed.row(key)
    with app.app_context(), database.connection_context():
        ans = Registration.get_by_id(ps["a_id"]).answers
    assert mapped_value(row_fragment(r.text, key)) == f"{ans['guardian1_first_name'].strip()} {ans['guardian1_last_name'].strip()}"


# --------------------------------------------------------------------------- Auto-map, Save and its summary

def test_auto_map_proposes_rows_that_are_kept_only_when_saved(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    r = ed.submit("automap")
    assert r.status_code == 200 and r.text.lstrip().startswith('<form id="field-mapping"')
    m = re.search(r"Auto-map proposed (\d+) row\(s\)", r.text)
    assert m and int(m.group(1)) >= 2
    frag = row_fragment(r.text, "name.first_name")
    assert "Proposed by Auto-map" in frag and ed.get("name.first_name", "from") == "student_legal_first_name"
    assert re.search(r'<option value="direct" selected>Direct</option>', frag)
    assert mapped_value(frag) == "Ana"
    assert "Unsaved changes" in r.text
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == ps["cid"]).rows == []
    # Send Record would save them: it asks for a review first, and saves and sends nothing
    r = ed.send_record()
    assert r.status_code == 409 and "still “Proposed” by Auto-map" in unescape(r.text), r.text[:500]
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == ps["cid"]).rows == []
    # discard one proposal, keep the others by saving
    r = ed.row("name.last_name", action="discard:name.last_name")
    assert "Proposed by Auto-map" not in row_fragment(r.text, "name.last_name")
    assert ed.get("name.last_name", "type") == "do_not_map"
    r = ed.submit("save")
    assert "Proposed by Auto-map" not in r.text
    with app.app_context(), database.connection_context():
        rows = {x["to"]: x for x in Mapping.get(Mapping.connection == ps["cid"]).rows}
    assert rows["name.first_name"] == {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"}
    assert "name.last_name" not in rows
    assert all("proposed" not in x for x in rows.values())
    # nothing more to propose for the rows already mapped
    r = ed.submit("automap")
    assert "Auto-map" in r.text and "name.first_name" not in re.findall(r'Proposed by Auto-map', r.text)


def test_save_summary_lists_unmapped_required_fields_and_bad_example_values(app, live, login, ps):
    with app.app_context(), database.connection_context():
        reg = Registration.get_by_id(ps["a_id"])
        Registration.update(answers={**reg.answers, "student_legal_last_name": "L" * 55}).where(
            Registration.id == reg.id).execute()
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    page = ed.load()
    assert "Required SIS fields left unmapped" in page.text
    ed.set("name.last_name", "type", "direct")
    ed.change("name.last_name", "from", "student_legal_last_name")
    ed.set("demographics.gender", "type", "match_codes")
    ed.change("demographics.gender", "from", "gender")
    r = ed.submit("save")
    assert r.status_code == 200
    body = unescape(r.text)
    unmapped = re.search(r'data-testid="unmapped-required">(.*?)</ul>', body, re.S).group(1)
    assert "Last Name" not in unmapped
    for label in ("Student Number (local_id)", "First Name", "School", "Grade Level", "Entry Date", "Exit Date"):
        assert label in unmapped
    values = re.search(r'data-testid="value-problems">(.*?)</ul>', body, re.S).group(1)
    assert "55 characters; Last Name allows at most 50." in values
    assert "'Non-binary'" not in values  # only values of the examples, not every possible answer
    with app.app_context(), database.connection_context():
        m = Mapping.get(Mapping.connection == ps["cid"])
        assert [x["to"] for x in m.rows] == ["name.last_name", "demographics.gender"]  # SIS field order
        v = m.version
        assert AuditLog.select().where(AuditLog.action == "mapping.save").count() == 1
    # saving again without a change keeps the version
    r = ed.submit("save")
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == ps["cid"]).version == v


def test_save_works_as_a_plain_form_post(app, live, login, ps):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    ed.set("name.first_name", "type", "direct")
    ed.set("name.first_name", "from", "student_legal_first_name")
    r = ed.submit("save", htmx=False)
    assert r.status_code == 200 and "<html" in r.text and "Saved the Export Student Mapping" in r.text
    assert mapped_value(row_fragment(r.text, "name.first_name")) == "Ana"
    # a row button without JavaScript re-renders the page with the step added (nothing saved)
    data = ed.data(action="add_step:name.middle_name", **{"name.middle_name|new_step": "value"})
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/fields", data)
    assert r.status_code == 200 and "Step 1: Value Input" in r.text


def test_save_without_rows_changes_nothing(app, live, login, ps):
    save_rows(app, ps["cid"], WORKING_ROWS)
    admin = login("Sync Admin")
    admin.page(f"{BASE}/{ps['cid']}/mapping/export_student/fields")
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/fields", {"action": "save"}, htmx=True)
    assert r.status_code == 400 and "Nothing to save" in r.text
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == ps["cid"]).rows == WORKING_ROWS


def test_sis_errors_while_reading_fields_are_messages(app, live, login, ps, sandbox):
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()  # fields cached
    sandbox.set_faults(fail_500=50)
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/refresh", ed.data(), htmx=True)
    assert r.status_code == 502 and r.text.lstrip().startswith('<form id="field-mapping"')
    assert "Could not refresh the fields:" in r.text
    assert sandbox.client_secret not in r.text
    sandbox.set_faults(fail_500=0)
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/refresh", ed.data(), htmx=True)
    assert r.status_code == 200 and re.search(r"Refreshed fields: \d+ fields in \d+ sections from PowerSchool", r.text)
    # no cache and no SIS: the page says so
    with app.app_context(), database.connection_context():
        SyncConnection.update(fields_cache=None).where(SyncConnection.id == ps["cid"]).execute()
    sandbox.set_faults(fail_500=50)
    page = admin.page(f"{BASE}/{ps['cid']}/mapping/export_student/fields")
    assert page.status_code == 200 and "Could not read the SIS's fields" in unescape(page.text)


# --------------------------------------------------------------------------- Send Record

def _preview(admin, ps, example=None):
    ed = Editor(admin, ps["cid"])
    ed.load(example)
    return ed, ed.send_record()


def _continue(admin, ps, preview_html):
    data = dict(form_values(preview_html.replace("<form ", '<form id="continue" ', 1), "continue"))
    return admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/send-record/continue", data, htmx=True)


def test_send_record_refuses_a_record_with_mapping_errors(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], [r for r in WORKING_ROWS if r["to"] != "name.last_name"])
    admin = login("Sync Admin")
    ed, r = _preview(admin, ps)
    assert r.status_code == 200
    assert "Last Name is required for a new student and is not mapped." in r.text
    assert "OK, Continue</button>" not in r.text and 'data-testid="send-blocked"' in r.text
    assert "1 mapping error must be fixed" in r.text
    # and even a forged confirmation sends nothing
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/send-record/continue",
                        {"registration_id": str(ps["a_id"]), "fingerprint": "0" * 64}, htmx=True)
    assert r.status_code == 409 and "nothing was sent" in r.text
    assert sandbox.dump() == []
    with app.app_context(), database.connection_context():
        assert SyncJob.select().count() == 0 and Registration.get_by_id(ps["a_id"]).sync_status == "Not Synced"


def test_send_record_needs_an_approved_example(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], WORKING_ROWS)
    admin = login("Sync Admin")
    ed, r = _preview(admin, ps, example=ps["b_form"])
    assert "Only Approved registrations can be sent to the SIS" in r.text and "OK, Continue</button>" not in r.text


def test_continue_after_the_mapping_changed_sends_nothing(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], WORKING_ROWS)
    admin = login("Sync Admin")
    ed, r = _preview(admin, ps)
    assert "OK, Continue</button>" in r.text
    save_rows(app, ps["cid"], [{**x, "from": "student_legal_last_name"} if x["to"] == "name.first_name" else x
                               for x in WORKING_ROWS] + [])
    r = _continue(admin, ps, r.text)
    assert r.status_code == 409
    assert "changed since the preview, so nothing was sent" in r.text
    assert "OK, Continue</button>" in r.text  # the new preview, to confirm again
    assert sandbox.dump() == []


def test_the_sis_field_errors_are_shown_and_recorded(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], WORKING_ROWS)
    sandbox.set_faults(reject_last_names=["Example"])
    admin = login("Sync Admin")
    ed, r = _preview(admin, ps)
    r = _continue(admin, ps, r.text)
    assert r.status_code == 200
    assert 'data-testid="send-status">Failed<' in r.text
    assert "Rejected by a district validation rule (sandbox fault)." in r.text
    with app.app_context(), database.connection_context():
        reg = Registration.get_by_id(ps["a_id"])
        assert reg.sync_status == "Failed" and not SisLink.select().where(SisLink.student == reg.student_id).exists()
        item = SyncItem.get(SyncItem.registration == reg.id)
        assert item.status == "Failed" and item.errors and "sandbox fault" in item.reason
        assert item.job.kind == "test" and item.job.status == "Completed"
    # fixed in the SIS, sent again: an insert that succeeds
    sandbox.set_faults(reject_last_names=[])
    ed, r = _preview(admin, ps)
    r = _continue(admin, ps, r.text)
    assert 'data-testid="send-status">Succeeded<' in r.text
    assert len(sandbox.dump()) == 1


def test_second_send_updates_the_same_student(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], WORKING_ROWS)
    admin = login("Sync Admin")
    for expected_action in ("INSERT", "UPDATE"):
        ed, r = _preview(admin, ps)
        assert f'"action": "{expected_action}"' in unescape(r.text)
        r = _continue(admin, ps, r.text)
        assert 'data-testid="send-status">Succeeded<' in r.text
    assert len(sandbox.dump()) == 1


def test_without_the_registration_module_nothing_is_exported(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], WORKING_ROWS)
    with app.app_context(), database.connection_context():
        Organization.update(uses_registration_module=False).where(Organization.id == ps["org"]).execute()
    admin = login("Sync Admin")
    note = "Exporting student data is only available for organizations who are using Enroll&#39;s Registration module."
    ed = Editor(admin, ps["cid"])
    page = ed.load()
    assert note in page.text
    assert re.search(r"<button[^>]*disabled>Send Record</button>", page.text.replace("\n", " "))
    r = ed.send_record()
    assert r.status_code == 409 and note in r.text
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/send-record/continue",
                        {"registration_id": str(ps["a_id"]), "fingerprint": "x"}, htmx=True)
    assert r.status_code == 409 and note in r.text
    assert sandbox.dump() == []
    assert note in admin.page(f"{BASE}/{ps['cid']}/mapping/").text


def test_send_record_works_as_plain_form_posts(app, live, login, ps, sandbox):
    save_rows(app, ps["cid"], WORKING_ROWS)
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    ed.load()
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/send-record", ed.data())
    assert r.status_code == 200 and "<html" in r.text and '<dialog open id="send-record"' in r.text
    assert "OK, Continue</button>" in r.text
    data = dict(form_values(r.text.replace('<form method="post" action="/settings/sync-service/'
                                           f'{ps["cid"]}/mapping/export_student/send-record/continue"',
                                           '<form id="continue"', 1), "continue"))
    assert data["fingerprint"]
    r = admin.post_form(f"{BASE}/{ps['cid']}/mapping/export_student/send-record/continue", data)
    assert r.status_code == 200 and "<html" in r.text and 'data-testid="send-status">Succeeded<' in r.text
    assert len(sandbox.dump()) == 1


def test_saved_rows_for_fields_the_sis_no_longer_lists_are_shown_and_can_be_dropped(app, live, login, ps):
    save_rows(app, ps["cid"], [{"to": "legacy.ethnicity_code", "type": "direct", "from": "ethnicity"},
                               {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"}])
    admin = login("Sync Admin")
    ed = Editor(admin, ps["cid"])
    page = ed.load()
    assert "Other fields (not in this SIS's field list)" in unescape(page.text)
    frag = unescape(row_fragment(page.text, "legacy.ethnicity_code"))
    assert "Not in this SIS's field list." in frag and "is not a field of this SIS" in frag
    assert "is not a field of this SIS" in unescape(re.search(r'data-testid="row-problems">(.*?)</ul>',
                                                               page.text, re.S).group(1))
    r = ed.change("legacy.ethnicity_code", "type", "do_not_map")
    assert r.status_code == 200
    ed.submit("save")
    with app.app_context(), database.connection_context():
        assert [x["to"] for x in Mapping.get(Mapping.connection == ps["cid"]).rows] == ["name.first_name"]
