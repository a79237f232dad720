"""The registrations store, the demo data and the migrations."""
from __future__ import annotations

import re
from collections import Counter

from enroll_sync.models import SisLink, SyncConnection
from enroll_sync.catalog import CATALOG
from enroll_sync.db import database
from enroll_sync.demo import load_demo
from enroll_sync.migrations import available, upgrade
from enroll_sync.models import (REGISTRATION_STATUSES, FormField, Organization, Registration, School,
                                SchemaVersion, Student)


def test_registration_page_shows_ids_ready_to_copy_and_answers_by_section(app, live, login):
    with app.app_context(), database.connection_context():
        reg = Registration.select().order_by(Registration.form_id).first()
        conn = SyncConnection.select().where(SyncConnection.organization == reg.organization).first()
        School.update(sync_connection=conn).where(School.id == reg.school_id).execute()
        SisLink.create(organization=reg.organization, student=reg.student, connection=conn, sis_id="SIS-4242",
                       how="set by hand")
        form_id, sm_id = reg.form_id, reg.student.schoolmint_id
        first = reg.answers["student_legal_first_name"].strip()
    page = login("Registrar").get(f"/registrations/{form_id}")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'data-testid="sis-id">SIS-4242<', html)
    assert re.search(rf'data-testid="schoolmint-id">{sm_id}<', html)
    # the IDs stand under the name
    assert html.index("<h1") < html.index('data-testid="sis-id"')
    for section in ("Student Information", "Parent/Guardian 1", "Health and Services", "Transportation"):
        assert f"<summary>{section}</summary>" in html
    assert first in html


def test_unknown_registration_is_a_404(live, login):
    s = login("Registrar")
    assert s.get("/registrations/999999999").status_code == 404
    assert s.get("/registrations/not-a-number").status_code == 404


def test_field_catalog_is_a_realistic_k12_form(app):
    assert len(CATALOG) >= 60
    keys = [c[0] for c in CATALOG]
    assert len(keys) == len(set(keys))
    sections = {c[2] for c in CATALOG}
    for s in ("Student Information", "Address", "Parent/Guardian 1", "Parent/Guardian 2", "Emergency Contact 1",
              "Emergency Contact 2", "Previous School", "Health and Services", "Transportation"):
        assert s in sections
    with app.app_context(), database.connection_context():
        gender = FormField.get(FormField.key == "gender")
        assert gender.options == ["Female", "Male", "Non-binary"]


def test_demo_answers_look_like_what_families_type(tmp_path):
    from tests.conftest import make_app
    app = make_app(tmp_path)
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(None, registrations=320)
        regs = list(Registration.select())
        assert len(regs) == 320
        assert Counter(r.status for r in regs).keys() == set(REGISTRATION_STATUSES)
        births = [r.answers["birth_date"] for r in regs]
        assert all(re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", b) for b in births)
        phones = {r.answers["guardian1_phone"] for r in regs}
        styles = {re.sub(r"\d", "9", p) for p in phones}
        assert len(styles) >= 4  # (999) 999-9999, 999-999-9999, 9999999999, ...
        genders = Counter(r.answers["gender"] for r in regs)
        assert {"Female", "Male", "Non-binary"} <= set(genders)
        assert any(any(ord(ch) > 127 for ch in r.answers["student_legal_last_name"]) for r in regs)
        assert any(r.answers["home_apartment"] == "" for r in regs)
        assert School.select().count() >= 3
        assert all(r.approved_at for r in regs if r.status == "Approved")
        # deterministic: the same seed gives the same data
        snapshot = [(r.form_id, r.answers["student_legal_first_name"]) for r in regs[:20]]
    app2 = make_app(tmp_path / "again")
    with app2.app_context(), database.connection_context():
        upgrade()
        load_demo(None, registrations=320)
        assert [(r.form_id, r.answers["student_legal_first_name"])
                for r in Registration.select().order_by(Registration.id).limit(20)] == snapshot


def test_demo_runs_once_and_keeps_admin_changes(app):
    with app.app_context(), database.connection_context():
        school = School.get(School.school_number == "101")
        school.name = "Renamed by the admin"
        school.save()
        before = (Registration.select().count(), Student.select().count())
        created, org = load_demo(None, registrations=320)
        assert created is False
        assert School.get(School.school_number == "101").name == "Renamed by the admin"
        assert (Registration.select().count(), Student.select().count()) == before
        assert Organization.select().count() == 1


def test_an_interrupted_demo_load_leaves_nothing_and_the_next_run_builds_it(tmp_path):
    """If the first load fails part-way (here: a demo connection that cannot be created),
    the next run must not find a half-built district and keep it."""
    from types import SimpleNamespace

    from tests.conftest import make_app

    broken = SimpleNamespace(hook=SimpleNamespace(register_demo_connections=lambda sandbox_urls: [
        [{"adapter": "not-installed", "name": "Broken", "settings": {}}]]))
    app = make_app(tmp_path)
    with app.app_context(), database.connection_context():
        upgrade()
        try:
            load_demo(broken, registrations=30)
        except Exception:
            pass
        else:
            raise AssertionError("a demo connection of an adapter that is not installed was created")
        assert (Organization.select().count(), School.select().count(), Registration.select().count(),
                Student.select().count()) == (0, 0, 0, 0)
        created, org = load_demo(None, registrations=30)
        assert created and Registration.select().where(Registration.organization == org).count() == 30


def test_upgrade_is_idempotent_and_recorded(app):
    with app.app_context(), database.connection_context():
        assert upgrade() == []
        assert {v.version for v in SchemaVersion.select()} == {n for n, _, _ in available()}
