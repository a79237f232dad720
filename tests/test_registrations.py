"""The Registrations module over real HTTP: Quick Filters, search, sorting and
pagination as HTMX swaps with the filter in the URL; selection; the Sync to SIS
confirmation and its skip reasons; who may do what; CSRF; organization scoping."""
from __future__ import annotations

import re

import pytest
from werkzeug.security import generate_password_hash

from enroll_sync.catalog import install_catalog
from enroll_sync.db import database
from enroll_sync.demo import create_registrations
from enroll_sync.models import Mapping, Organization, Registration, School, SyncJob, User
from tests.test_sync_support import MAPPING_ROWS, connect_to_sandbox, sandbox  # noqa: F401

ROW = re.compile(r'<a href="/registrations/(\d+)">')


def form_ids(text):
    return [int(x) for x in ROW.findall(text)]


@pytest.fixture
def many(app):
    """120 registrations: enough for three pages."""
    with app.app_context(), database.connection_context():
        org = Organization.get()
        schools = list(School.select().order_by(School.id))
        create_registrations(org, schools, 80, seed=99, first_form_id=200001, schoolmint_start=700001)
        return {"approved": Registration.select().where(Registration.status == "Approved").count(),
                "total": Registration.select().count()}


def test_quick_filters_swap_the_list_and_keep_the_filter_in_the_url(app, live, login, many):
    viewer = login("Viewer")
    page = viewer.page("/registrations/")
    assert page.status_code == 200 and "<html" in page.text
    assert f"<strong>{many['total']}</strong> registrations<" in page.text
    assert 'hx-get="/registrations/"' in page.text and 'hx-target="#registration-list"' in page.text
    assert page.text.count('hx-push-url="true"') >= 2

    r = viewer.get("/registrations/?status=Approved", headers={"HX-Request": "true"})
    assert r.status_code == 200 and "HX-Request" in r.headers["Vary"]
    assert r.text.lstrip().startswith('<div id="registration-list">') and "<html" not in r.text
    assert f"<strong>{many['approved']}</strong> registrations match this filter" in r.text
    # the address bar gets the filter without the form's empty fields
    r2 = viewer.get("/registrations/?status=Approved&school=&grade=&sync_status=&school_year=&q=",
                    headers={"HX-Request": "true"})
    assert r2.headers["HX-Push-Url"] == "/registrations/?status=Approved"
    # next page and sort links carry the filter
    assert 'href="/registrations/?status=Approved&amp;page=2"' in r.text
    assert 'hx-get="/registrations/?status=Approved&amp;sort=student&amp;dir=asc"' in r.text
    with app.app_context(), database.connection_context():
        shown = form_ids(r.text)
        assert len(shown) == 50
        assert {x.status for x in Registration.select().where(Registration.form_id.in_(shown))} == {"Approved"}


def test_every_quick_filter_and_the_search(app, live, login, many):
    viewer = login("Viewer")
    with app.app_context(), database.connection_context():
        reg = Registration.select().where(Registration.form_id == 200007).get()
        school, grade, year = reg.school_id, reg.grade, reg.school_year
        last = reg.student_name.split(",")[0]
        Registration.update(sync_status="Failed").where(Registration.id == reg.id).execute()
        expect = {
            f"school={school}": Registration.select().where(Registration.school == school).count(),
            f"grade={grade}": Registration.select().where(Registration.grade == grade).count(),
            f"school_year={year}": Registration.select().where(Registration.school_year == year).count(),
            "sync_status=Failed": 1,
            f"q={last}": Registration.select().where(Registration.student_name.contains(last)).count(),
            "q=200007": 1,
            f"q={reg.student.schoolmint_id}": 1,
            "q=no-such-student-anywhere": 0,
        }
    for query, n in expect.items():
        r = viewer.get(f"/registrations/?{query}", headers={"HX-Request": "true"})
        assert r.status_code == 200
        assert f"<strong>{n}</strong> registration" in r.text, query
        if n == 1:
            assert form_ids(r.text) == [200007], query
    r = viewer.get("/registrations/?q=no-such-student-anywhere")
    assert "No registrations match these Quick Filters." in r.text


def test_sorting_and_pagination(app, live, login, many):
    viewer = login("Viewer")
    first = form_ids(viewer.get("/registrations/").text)
    assert first == sorted(first, reverse=True) and len(first) == 50  # newest Registration Form ID first
    asc = form_ids(viewer.get("/registrations/?sort=form_id&dir=asc").text)
    assert asc[0] == 100001 and asc == sorted(asc)
    page3 = viewer.get("/registrations/?sort=form_id&dir=asc&page=3")
    assert "Page 3 of 3" in page3.text and len(form_ids(page3.text)) == many["total"] - 100
    by_name = viewer.get("/registrations/?sort=student&dir=asc", headers={"HX-Request": "true"}).text
    with app.app_context(), database.connection_context():
        names = [Registration.get(Registration.form_id == f).student_name for f in form_ids(by_name)]
    assert names == sorted(names) and 'aria-sort="ascending"' in by_name
    # nonsense never breaks the page
    for q in ("page=abc", "page=-4", "page=999", "sort=password_hash", "dir=sideways", "status=Bogus",
              "school=x", "sync_status=%27;drop", "q=%25"):
        assert viewer.get(f"/registrations/?{q}").status_code == 200, q


def test_only_view_plus_edit_registrations_may_sync(app, live, login):
    viewer = login("Viewer")
    page = viewer.page("/registrations/")
    assert "Bulk Actions" not in page.text and 'name="registration_ids"' not in page.text
    assert viewer.post_form("/registrations/sync/confirm", {"all_matching": "1"}, htmx=True).status_code == 403
    assert viewer.post_form("/registrations/sync", {"all_matching": "1"}).status_code == 403
    sync_admin = login("Sync Admin")  # Sync Service Full Access + View, but not Edit Registrations
    assert "Bulk Actions" not in sync_admin.page("/registrations/").text
    assert sync_admin.post_form("/registrations/sync", {"all_matching": "1"}).status_code == 403
    registrar = login("Registrar")
    page = registrar.page("/registrations/")
    assert "Bulk Actions" in page.text and "Sync to SIS" in page.text and 'data-select-all="registration_ids"' in page.text
    with app.app_context(), database.connection_context():
        assert SyncJob.select().count() == 0


def test_every_post_needs_the_csrf_token(app, live, login, sandbox):
    connect_to_sandbox(app, sandbox)
    registrar = login("Registrar")
    registrar.page("/registrations/")
    for path in ("/registrations/sync/confirm", "/registrations/sync"):
        r = registrar.post_form(path, {"all_matching": "1", "status": "Approved"}, csrf=False)
        assert r.status_code == 400, path
    with app.app_context(), database.connection_context():
        assert SyncJob.select().count() == 0


def test_confirmation_explains_each_skip_reason(app, live, login, sandbox):
    conn_id = connect_to_sandbox(app, sandbox)
    registrar = login("Registrar")
    registrar.page("/registrations/")
    with app.app_context(), database.connection_context():
        everyone = Registration.select().count()
        approved = Registration.select().where(Registration.status == "Approved").count()
        preschool = (Registration.select().join(School).where(
            (Registration.status == "Approved") & (School.school_number == "901")).count())
    data = {"all_matching": "1"}  # no filter: every registration
    r = registrar.post_form("/registrations/sync/confirm", data, htmx=True)
    assert f"<strong>{approved - preschool}</strong> of {everyone} selected" in r.text
    assert f"<strong>{everyone - approved}</strong> — Not Approved: only Approved registrations can be synced." in r.text
    assert f"<strong>{preschool}</strong> — The school has no sync connection." in r.text

    # a mapping without a required SIS field: its registrations are skipped, with the field named
    with app.app_context(), database.connection_context():
        Mapping.update(rows=[row for row in MAPPING_ROWS if row["to"] != "name.last_name"]).where(
            Mapping.connection == conn_id).execute()
    r = registrar.post_form("/registrations/sync/confirm", data, htmx=True)
    assert "<strong>0</strong> of" in r.text and "lacks required field(s): Last Name." in r.text
    assert "Proceed with Sync" not in r.text and r.status_code == 422
    r = registrar.post_form("/registrations/sync", data, htmx=True)
    assert r.status_code == 422 and "None of the selected registrations can be synced" in r.text

    # no mapping at all
    with app.app_context(), database.connection_context():
        Mapping.delete().where(Mapping.connection == conn_id).execute()
    r = registrar.post_form("/registrations/sync/confirm", data, htmx=True)
    assert "has no Export Student Mapping yet." in r.text
    with app.app_context(), database.connection_context():
        assert SyncJob.select().count() == 0

    # nothing selected
    r = registrar.post_form("/registrations/sync/confirm", {}, htmx=True)
    assert r.status_code == 422 and "Select at least one registration" in r.text


def test_plain_form_posts_work_without_htmx(app, live, login, sandbox):
    connect_to_sandbox(app, sandbox)
    registrar = login("Registrar")
    registrar.page("/registrations/")
    with app.app_context(), database.connection_context():
        reg = (Registration.select().join(School).where(
            (Registration.status == "Approved") & (School.school_number == "101")).first())
    # from the registration's own page: Sync to SIS for this one student
    detail = registrar.page(f"/registrations/{reg.form_id}")
    assert 'name="registration_ids" value="%d"' % reg.id in detail.text
    r = registrar.post_form("/registrations/sync/confirm", {"registration_ids": str(reg.id)})
    assert r.status_code == 200 and "<html" in r.text and "Proceed with Sync" in r.text
    assert "<strong>1</strong> of 1 selected registration will sync" in r.text
    r = registrar.post_form("/registrations/sync", {"registration_ids": str(reg.id)})
    assert r.status_code == 302 and re.fullmatch(r"/registrations/sync-jobs/\d+", r.headers["location"])
    page = registrar.page(r.headers["location"])
    assert 'data-testid="job-total">1<' in page.text


@pytest.fixture
def other_org(app):
    with app.app_context(), database.connection_context():
        org = Organization.create(name="Elsewhere District", slug="elsewhere")
        install_catalog(org)
        school = School.create(organization=org, name="Hidden Valley School", school_number="777")
        create_registrations(org, [school], 3, first_form_id=900001, schoolmint_start=990001,
                             statuses=["Approved"])
        User.create(organization=org, email="boss@elsewhere.example", name="Other Boss", role="District Admin",
                    password_hash=generate_password_hash("elsewhere-pass-123"))
        job = SyncJob.create(organization=org, kind="bulk", total=0)
        return {"reg_ids": [r.id for r in Registration.select().where(Registration.organization == org)],
                "job": job.id}


def test_sync_never_reaches_another_district(app, live, login, sandbox, other_org):
    connect_to_sandbox(app, sandbox)
    registrar = login("Registrar")
    registrar.page("/registrations/")
    found = registrar.get("/registrations/?q=900001", headers={"HX-Request": "true"}).text
    assert "<strong>0</strong> registrations" in found and form_ids(found) == []
    ids = [str(i) for i in other_org["reg_ids"]]
    r = registrar.post_form("/registrations/sync/confirm", {"registration_ids": ids}, htmx=True)
    assert "<strong>0</strong> of 0 selected" in r.text and r.status_code == 422
    r = registrar.post_form("/registrations/sync", {"registration_ids": ids}, htmx=True)
    assert r.status_code == 422
    assert registrar.get(f"/registrations/sync-jobs/{other_org['job']}").status_code == 404
    assert registrar.post_form(f"/registrations/sync-jobs/{other_org['job']}/retry", {}).status_code == 404
    admin = login("District Admin")
    assert admin.get(f"/settings/sync-logs/{other_org['job']}").status_code == 404
    assert admin.get(f"/settings/sync-logs/{other_org['job']}/failures.csv").status_code == 404
    assert f"job-{other_org['job']}" not in admin.get("/settings/sync-logs/").text
    with app.app_context(), database.connection_context():
        assert SyncJob.select().where(SyncJob.id != other_org["job"]).count() == 0
