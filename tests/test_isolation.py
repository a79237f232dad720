"""Everything is scoped to the signed-in user's organization."""
from __future__ import annotations

import pytest
from werkzeug.security import generate_password_hash

from enroll_sync.catalog import install_catalog
from enroll_sync.db import database
from enroll_sync.demo import create_registrations
from enroll_sync.models import Organization, Registration, School, SyncConnection, SyncJob, User

from .test_bad_ids import id_routes


@pytest.fixture
def other_org(app):
    with app.app_context(), database.connection_context():
        org = Organization.create(name="Elsewhere District", slug="elsewhere")
        install_catalog(org)
        school = School.create(organization=org, name="Hidden Valley School", school_number="777")
        conn = SyncConnection.create(organization=org, adapter="powerschool", name="Elsewhere SIS")
        create_registrations(org, [school], 3, first_form_id=900001, schoolmint_start=990001)
        User.create(organization=org, email="boss@elsewhere.example", name="Other Boss", role="District Admin",
                    password_hash=generate_password_hash("elsewhere-pass-123"))
        reg = Registration.get(Registration.form_id == 900001)
        boss = User.get(User.email == "boss@elsewhere.example")
        job = SyncJob.create(organization=org, kind="bulk", created_by=boss)
        return {"school": school.id, "conn": conn.id, "form_id": reg.form_id, "org": org.id,
                "registration": reg.id, "user": boss.id, "job": job.id}


def test_pages_never_show_another_district(live, login, other_org):
    admin = login("District Admin")
    assert "Hidden Valley School" not in admin.get("/settings/schools/").text
    assert admin.get(f"/settings/schools/{other_org['school']}/edit").status_code == 404
    assert admin.get(f"/registrations/{other_org['form_id']}").status_code == 404
    assert "900001" not in admin.get("/registrations/").text
    assert "Elsewhere SIS" not in admin.get("/settings/schools/").text


def test_cannot_assign_or_touch_foreign_objects(app, live, login, other_org):
    admin = login("District Admin")
    admin.page("/settings/schools/")
    r = admin.post_form("/settings/schools/bulk/set-sync-connection",
                        {"school_ids": str(other_org["school"]), "connection_id": ""}, htmx=True)
    assert r.status_code == 422 and ("do not exist" in r.text or "Select at least one" in r.text)
    own = None
    with app.app_context(), database.connection_context():
        own = School.select().where(School.organization != other_org["org"]).first().id
    r = admin.post_form("/settings/schools/bulk/set-sync-connection",
                        {"school_ids": str(own), "connection_id": str(other_org["conn"])}, htmx=True)
    assert r.status_code == 404
    with app.app_context(), database.connection_context():
        assert School.get_by_id(other_org["school"]).sync_connection_id is None
        assert School.get_by_id(own).sync_connection_id is None


def test_other_district_admin_sees_only_theirs(live, other_org):
    from tests.conftest import sign_in
    boss = sign_in(live.url, "boss@elsewhere.example", "elsewhere-pass-123")
    page = boss.get("/settings/schools/").text
    assert "Hidden Valley School" in page and "Riverside Elementary" not in page
    assert boss.get("/registrations/100001").status_code == 404


def test_every_route_given_another_districts_id_answers_not_found(app, live, login, other_org):
    """Every page and action that takes an id, given the id of another district's school,
    registration, connection, user or job, answers 404, for GET and POST alike."""
    foreign = {"school_id": other_org["school"], "form_id": other_org["form_id"],
               "registration_id": other_org["registration"], "connection_id": other_org["conn"],
               "user_id": other_org["user"], "job_id": other_org["job"], "version": 1}
    admin = login("District Admin")
    admin.page("/")
    checked, failures = 0, []
    for rule, ids, method, args in id_routes(app):
        path = rule.rule
        for a in rule.arguments:
            value = str(foreign[a] if a in ids else args[a])
            for form in (f"<{a}>", f"<int:{a}>", f"<string:{a}>"):
                path = path.replace(form, value)
        r = admin.get(path) if method == "GET" else admin.post_form(path, {})
        checked += 1
        if r.status_code != 404:
            failures.append(f"{method} {path}: {r.status_code}")
    assert checked >= 20
    assert not failures, "\n".join(failures)
    with app.app_context(), database.connection_context():
        assert SyncConnection.get_by_id(other_org["conn"]).name == "Elsewhere SIS"
        assert User.get_by_id(other_org["user"]).active
