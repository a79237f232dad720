"""Settings > Sync Service > Sync Service Login: connection cards, Add Sync Connection,
Edit (write-only secrets), Test Connection through HTMX — and the permission check on
every Sync Service route and partial. Real HTTP, real SQLite, the real PowerSchool
sandbox; a toy adapter (through EXTRA_PLUGINS) for the failures a real SIS rarely
produces on demand.
"""
from __future__ import annotations

import json
import logging
import re
from html import unescape

import pytest

from enroll_sync import hookimpl
from enroll_sync.adapters import AdapterError, CheckResult, FieldSection, SettingField, SISAdapter, TargetField
from enroll_sync.sync.connections import create_connection
from enroll_sync.db import database
from enroll_sync.demo import DEMO_SLUG, load_demo
from enroll_sync.migrations import upgrade
from enroll_sync.models import AuditLog, Organization, School, SyncConnection
from enroll_sync.security import secret_box
from tests.conftest import LiveServer, make_app, sign_in

BASE = "/settings/sync-service"
TOY_SECRET = "toy-secret-Zq81!"


# --------------------------------------------------------------------------- a toy SIS for failure modes

class ToyAdapter(SISAdapter):
    name, label, version = "toy", "Toy SIS", "1.0"

    @classmethod
    def settings_schema(cls):
        return [SettingField("mode", "Mode", "choice", required=True,
                             choices=(("ok", "Works"), ("refuse", "Refuses"), ("crash", "Crashes"))),
                SettingField("api_key", "API key", "secret", required=True),
                SettingField("notes", "Field list", "text")]

    def check_connection(self):
        mode = self.settings["mode"]
        if mode == "refuse":
            raise AdapterError("The toy SIS refused the API key (HTTP 401).")
        if mode == "crash":
            raise RuntimeError(f"boom while using {self.settings['api_key']}")
        return CheckResult(True, "Toy SIS says hello.", {"Version": "1.0"})

    def target_fields(self):
        if self.settings["mode"] == "crash":
            raise KeyError(self.settings["api_key"])
        return [FieldSection("student", "Student", (TargetField("name", "Name", required=True),))]


class ToyPlugin:
    @hookimpl
    def register_sis_adapters(self):
        return [ToyAdapter]


@pytest.fixture
def toy(tmp_path):
    """An app with the toy adapter next to the installed ones, served on a loopback port."""
    app = make_app(tmp_path, EXTRA_PLUGINS=[ToyPlugin()])
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(app.extensions["enroll_sync.plugins"], {"powerschool": "http://127.0.0.1:9"}, registrations=5)
        org = Organization.get(Organization.slug == DEMO_SLUG)
        ids = {mode: create_connection(org, "toy", f"Toy {mode}", "production",
                                       {"mode": mode, "api_key": TOY_SECRET}).id
               for mode in ("ok", "refuse", "crash")}
    server = LiveServer(app)
    session = sign_in(server.url, "sync@riverside.example")
    yield app, session, ids
    session.close()
    server.stop()
    if not database.is_closed():
        database.close()


@pytest.fixture
def sandbox():
    mod = pytest.importorskip("sis_powerschool.sandbox")
    handle = mod.serve_in_thread(port=0)
    yield handle
    handle.stop()


def _ps_connection(app, sandbox, **settings):
    with app.app_context(), database.connection_context():
        org = Organization.get(Organization.slug == DEMO_SLUG)
        conn = create_connection(org, "powerschool", "PS Cards", "sandbox", {
            "server_url": sandbox.url, "client_id": sandbox.client_id, "client_secret": sandbox.client_secret})
        if settings:
            conn.settings = {**conn.settings, **settings}
            conn.save()
        return conn.id


def _card(html, cid):
    m = re.search(rf'<article id="connection-{cid}".*?</article>', html, re.S)
    assert m, f"no card for connection {cid}"
    return m.group(0)


# --------------------------------------------------------------------------- the cards

def test_one_card_per_connection_with_its_facts_and_buttons(app, live, login, sandbox):
    cid = _ps_connection(app, sandbox)
    with app.app_context(), database.connection_context():
        School.update(sync_connection=cid).where(School.school_number.in_(["101", "201"])).execute()
        n = SyncConnection.select().count()
    admin = login("Sync Admin")
    page = admin.page(f"{BASE}/")
    assert page.status_code == 200
    assert "Sync Service Login" in page.text and "Add Sync Connection" in page.text
    assert page.text.count('connection-card"') == n
    card = _card(page.text, cid)
    assert "<h2" in card and "PS Cards" in card
    assert 'data-testid="sis-type">PowerSchool<' in card and 'data-testid="environment">Sandbox<' in card
    assert "Not checked yet." in card
    assert 'data-testid="schools">Lincoln Middle School, Riverside Elementary<' in card
    icon = r'(?:<i [^>]*></i>)?\s*'  # a button may start with its icon
    assert re.search(rf'href="{BASE}/{cid}/mapping/">{icon}Configure Mapping<', card)
    assert re.search(rf'href="{BASE}/{cid}/edit">{icon}Edit<', card)
    assert f'hx-post="{BASE}/{cid}/test"' in card and f'hx-target="#connection-{cid}"' in card
    assert re.search(rf">{icon}Test Connection</button>", card)
    assert sandbox.client_secret not in page.text


def test_test_connection_swaps_the_card_with_the_answer(app, live, login, sandbox):
    cid = _ps_connection(app, sandbox)
    admin = login("Sync Admin")
    admin.page(f"{BASE}/")
    r = admin.post_form(f"{BASE}/{cid}/test", {}, htmx=True)
    assert r.status_code == 200
    assert r.text.lstrip().startswith(f'<article id="connection-{cid}"') and "<html" not in r.text
    assert "HX-Request" in r.headers["Vary"]
    assert "check-ok" in r.text and "Connected to PowerSchool" in r.text
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get_by_id(cid)
        assert conn.last_check_ok is True and conn.last_check_at is not None
        assert AuditLog.select().where((AuditLog.action == "connection.test") & (AuditLog.object_id == str(cid))).count() == 1
    # the answer stays on the card
    assert "Connected to PowerSchool" in _card(admin.page(f"{BASE}/").text, cid)
    # as a plain form post: back to the page with the answer
    r = admin.post_form(f"{BASE}/{cid}/test", {})
    assert r.status_code == 302 and r.headers["location"].endswith(f"{BASE}/")


def test_wrong_credentials_are_explained_without_the_secret(app, live, login, sandbox):
    with app.app_context(), database.connection_context():
        org = Organization.get(Organization.slug == DEMO_SLUG)
        cid = create_connection(org, "powerschool", "PS Wrong", "sandbox", {
            "server_url": sandbox.url, "client_id": sandbox.client_id, "client_secret": "wrong-secret-123"}).id
    admin = login("Sync Admin")
    admin.page(f"{BASE}/")
    r = admin.post_form(f"{BASE}/{cid}/test", {}, htmx=True)
    assert r.status_code == 200 and "check-failed" in r.text
    message = unescape(re.search(r'data-testid="check-message">(.*?)</span>', r.text, re.S).group(1))
    assert message and "wrong-secret-123" not in r.text
    with app.app_context(), database.connection_context():
        assert SyncConnection.get_by_id(cid).last_check_ok is False


def test_adapter_errors_are_shown_and_anything_else_is_generic(toy, caplog):
    app, s, ids = toy
    s.page(f"{BASE}/")
    r = s.post_form(f"{BASE}/{ids['ok']}/test", {}, htmx=True)
    assert "Toy SIS says hello." in r.text and "Version: 1.0" in r.text
    assert 'data-testid="environment">Production<' in r.text and 'data-testid="sis-type">Toy SIS<' in r.text
    r = s.post_form(f"{BASE}/{ids['refuse']}/test", {}, htmx=True)
    assert r.status_code == 200 and "The toy SIS refused the API key (HTTP 401)." in r.text
    with caplog.at_level(logging.ERROR, logger="enroll_sync"):
        r = s.post_form(f"{BASE}/{ids['crash']}/test", {}, htmx=True)
    assert r.status_code == 200 and "check-failed" in r.text
    assert "Something went wrong while talking to the SIS. The error was logged" in r.text
    assert TOY_SECRET not in r.text and "boom" not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "RuntimeError" in logged and "boom while using [redacted]" in logged and TOY_SECRET not in logged
    # a broken adapter on the Field Mapping tab: a message, not a 500
    page = s.page(f"{BASE}/{ids['crash']}/mapping/export_student/fields")
    assert page.status_code == 200 and "Could not read the SIS" in unescape(page.text)
    assert TOY_SECRET not in page.text
    with app.app_context(), database.connection_context():
        assert not any(TOY_SECRET in json.dumps(a.details) for a in AuditLog.select())
        assert SyncConnection.get_by_id(ids["crash"]).last_check_message == GENERIC


GENERIC = "Something went wrong while talking to the SIS. The error was logged for your administrator."


def test_a_connection_whose_adapter_is_gone(app, live, login):
    with app.app_context(), database.connection_context():
        conn = SyncConnection.select().first()
        SyncConnection.update(adapter="removed_sis").where(SyncConnection.id == conn.id).execute()
    admin = login("Sync Admin")
    page = admin.page(f"{BASE}/")
    assert "removed_sis (not installed)" in _card(page.text, conn.id)
    r = admin.post_form(f"{BASE}/{conn.id}/test", {}, htmx=True)
    assert r.status_code == 200 and "The SIS adapter “removed_sis” is not installed." in unescape(r.text)
    r = admin.get(f"{BASE}/{conn.id}/edit")
    assert r.status_code == 302
    assert "cannot be edited" in unescape(admin.page(f"{BASE}/").text)


# --------------------------------------------------------------------------- Add Sync Connection and Edit

def test_add_sync_connection_renders_the_adapter_settings_and_checks_each_field(app, live, login):
    admin = login("Sync Admin")
    page = admin.page(f"{BASE}/new")
    assert "Add Sync Connection" in page.text
    assert re.search(rf'href="{BASE}/new/powerschool">.*?>PowerSchool<', page.text, re.S)
    form = admin.page(f"{BASE}/new/powerschool")
    for label in ("Connection name", "Instance", "Server URL", "Client ID", "Client Secret", "Batch size"):
        assert label in form.text
    assert re.search(r'<input type="password" id="s_client_secret" name="s_client_secret" value=""', form.text)
    assert 'value="100"' in form.text  # the schema's default batch size
    r = admin.post_form(f"{BASE}/new/powerschool", {
        "name": " ", "environment": "staging", "s_server_url": "ftp://sis.example", "s_client_id": "",
        "s_client_secret": "", "s_batch_size": "5000", "s_timeout_s": "abc"})
    assert r.status_code == 422
    errors = dict(re.findall(r'data-error-for="([^"]+)">([^<]+)<', r.text))
    assert errors["server_url"] == "Server URL must start with http:// or https://."
    assert errors["client_id"] == "Enter the Client ID."
    assert errors["client_secret"] == "Enter the Client Secret."
    assert errors["batch_size"].startswith("Batch size must be at most")
    assert errors["timeout_s"].endswith("must be a number.")
    assert "Enter a name for this connection." in r.text and "Choose Sandbox or Production." in r.text
    assert 'value="ftp://sis.example"' in r.text  # what was typed stays
    for not_a_number in ("nan", "inf", "-Infinity", "1e999"):  # float() takes them; a timeout cannot be one
        r = admin.post_form(f"{BASE}/new/powerschool", {"s_timeout_s": not_a_number})
        errors = dict(re.findall(r'data-error-for="([^"]+)">([^<]+)<', r.text))
        assert r.status_code == 422 and errors["timeout_s"].endswith("must be a number."), not_a_number
    with app.app_context(), database.connection_context():
        before = SyncConnection.select().count()
    r = admin.post_form(f"{BASE}/new/powerschool", {
        "name": "District PowerSchool", "environment": "production", "s_server_url": "https://ps.example.org",
        "s_client_id": "cid-1", "s_client_secret": "super-secret-value-42", "s_batch_size": "50"})
    assert r.status_code == 302
    page = admin.page(f"{BASE}/")
    assert "Added District PowerSchool." in page.text and "super-secret-value-42" not in page.text
    with app.app_context(), database.connection_context():
        assert SyncConnection.select().count() == before + 1
        conn = SyncConnection.get(SyncConnection.name == "District PowerSchool")
        assert conn.environment == "production" and conn.settings["batch_size"] == 50
        assert "super-secret-value-42" not in conn.secrets and "super-secret-value-42" not in json.dumps(conn.settings)
        assert secret_box(app).open(conn.secrets) == {"client_secret": "super-secret-value-42"}
        entry = AuditLog.get(AuditLog.action == "connection.create")
        assert entry.details["adapter"] == "powerschool" and "super-secret-value-42" not in json.dumps(entry.details)


def test_unknown_adapter_is_a_clear_404(app, live, login):
    admin = login("Sync Admin")
    r = admin.get(f"{BASE}/new/no_such_sis")
    assert r.status_code == 404
    assert "The SIS adapter “no_such_sis” is not installed." in unescape(r.text)
    assert f'href="{BASE}/new/powerschool"' in r.text
    r = admin.post_form(f"{BASE}/new/no_such_sis", {"name": "x"})
    assert r.status_code == 404


def test_edit_keeps_a_blank_secret_and_never_shows_it(app, live, login, sandbox):
    cid = _ps_connection(app, sandbox)
    admin = login("Sync Admin")
    page = admin.page(f"{BASE}/{cid}/edit")
    assert page.status_code == 200 and sandbox.client_secret not in page.text
    assert "A value is stored; leave blank to keep it." in page.text
    assert f'value="{sandbox.url}"' in page.text
    r = admin.post_form(f"{BASE}/{cid}/edit", {
        "name": "PS Renamed", "environment": "sandbox", "s_server_url": sandbox.url,
        "s_client_id": sandbox.client_id, "s_client_secret": ""})
    assert r.status_code == 302
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get_by_id(cid)
        assert conn.name == "PS Renamed"
        assert secret_box(app).open(conn.secrets)["client_secret"] == sandbox.client_secret
    # the connection still works with the kept secret
    assert "check-ok" in admin.post_form(f"{BASE}/{cid}/test", {}, htmx=True).text
    # a new secret replaces it; the audit log says which, not what
    r = admin.post_form(f"{BASE}/{cid}/edit", {
        "name": "PS Renamed", "environment": "sandbox", "s_server_url": sandbox.url,
        "s_client_id": sandbox.client_id, "s_client_secret": "rotated-secret-77"})
    assert r.status_code == 302
    with app.app_context(), database.connection_context():
        assert secret_box(app).open(SyncConnection.get_by_id(cid).secrets)["client_secret"] == "rotated-secret-77"
        entry = AuditLog.select().where(AuditLog.action == "connection.update").order_by(AuditLog.id.desc()).get()
        assert entry.details["secrets_changed"] == ["client_secret"]
        assert "rotated-secret-77" not in json.dumps(entry.details)
    assert "rotated-secret-77" not in admin.page(f"{BASE}/{cid}/edit").text
    # bad input on edit: shown in place, nothing changed
    r = admin.post_form(f"{BASE}/{cid}/edit", {"name": "", "environment": "sandbox", "s_server_url": "nope",
                                               "s_client_id": "x"})
    assert r.status_code == 422 and "Server URL must start with http:// or https://." in r.text
    with app.app_context(), database.connection_context():
        assert SyncConnection.get_by_id(cid).settings["server_url"] == sandbox.url


def test_another_organizations_connection_is_not_found(app, live, login):
    with app.app_context(), database.connection_context():
        other = Organization.create(name="Elsewhere", slug="elsewhere")
        cid = create_connection(other, "powerschool", "Theirs", "sandbox", {
            "server_url": "http://127.0.0.1:9", "client_id": "a", "client_secret": "b"}).id
    admin = login("District Admin")
    admin.page(f"{BASE}/")
    for path in (f"{BASE}/{cid}/edit", f"{BASE}/{cid}/mapping/", f"{BASE}/{cid}/mapping/export_student/configure",
                 f"{BASE}/{cid}/mapping/export_student/fields", f"{BASE}/{cid}/import",
                 f"{BASE}/{cid}/mapping/import_student/fields"):
        assert admin.get(path).status_code == 404, path
    for path in (f"{BASE}/{cid}/test", f"{BASE}/{cid}/mapping/export_student/row",
                 f"{BASE}/{cid}/mapping/export_student/send-record", f"{BASE}/{cid}/import/preview",
                 f"{BASE}/{cid}/import/run", f"{BASE}/{cid}/import/schedule"):
        assert admin.post_form(path, {}, htmx=True).status_code == 404, path
    assert "Theirs" not in admin.page(f"{BASE}/").text
    # an unknown mapping kind
    with app.app_context(), database.connection_context():
        mine = SyncConnection.select().join(Organization).where(Organization.slug == DEMO_SLUG).first()
    assert admin.get(f"{BASE}/{mine.id}/mapping/export_contact/fields").status_code == 404


# --------------------------------------------------------------------------- permissions

def _sync_service_routes(app, cid):
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith(("connections.", "mapping.")):
            continue
        path = (rule.rule.replace("<connection_id>", str(cid)).replace("<kind>", "export_student")
                .replace("<adapter>", "powerschool").replace("<version>", "1"))
        assert "<" not in path, path
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def test_every_sync_service_route_and_partial_needs_full_access(app, live, login, anon):
    with app.app_context(), database.connection_context():
        cid = SyncConnection.select().first().id
    routes = _sync_service_routes(app, cid)
    assert len(routes) >= 14
    for role in ("Registrar", "Viewer"):
        s = login(role)
        for method, path in routes:
            for htmx in (False, True):
                headers = {"HX-Request": "true"} if htmx else {}
                r = s.get(path, headers=headers) if method == "GET" else s.post_form(path, {"row": "local_id"},
                                                                                     htmx=htmx)
                assert r.status_code == 403, f"{role} {method} {path} htmx={htmx}: {r.status_code}"
    for method, path in routes:
        r = anon.get(path) if method == "GET" else anon.post_form(path, {})
        assert r.status_code == 302 and "/login" in r.headers["location"], f"anonymous {method} {path}"
        r = anon.get(path, headers={"HX-Request": "true"})
        if method == "GET":
            assert r.status_code == 401 and r.headers["HX-Redirect"].endswith("/login")


def test_posts_need_the_csrf_token(app, live, login, sandbox):
    cid = _ps_connection(app, sandbox)
    admin = login("Sync Admin")
    admin.page(f"{BASE}/")
    for path in (f"{BASE}/{cid}/test", f"{BASE}/{cid}/mapping/export_student/fields",
                 f"{BASE}/{cid}/mapping/export_student/row", f"{BASE}/{cid}/mapping/export_student/send-record",
                 f"{BASE}/{cid}/mapping/export_student/send-record/continue", f"{BASE}/new/powerschool"):
        r = admin.post_form(path, {"action": "save"}, csrf=False)
        assert r.status_code == 400 and "This form has expired" in r.text, path
    with app.app_context(), database.connection_context():
        assert SyncConnection.get_by_id(cid).last_check_at is None


def test_a_text_setting_takes_an_uploaded_file(toy):
    """A schema document can be pasted or uploaded: the file's text becomes the setting,
    shown in its box on the next edit; a file that is not text is refused at the field."""
    app, admin, ids = toy
    form = admin.page(f"{BASE}/new/toy")
    assert 'enctype="multipart/form-data"' in form.text
    assert 'type="file" id="s_notes__file" name="s_notes__file"' in form.text
    fields = {"name": "Toy uploaded", "environment": "sandbox", "s_mode": "ok", "s_api_key": "k-123",
              "s_notes": "typed text loses to the file", "csrf_token": admin.csrf}
    document = '\ufeff{"openapi": "3.0.0", "title": "Élèves"}'.encode("utf-8")
    r = admin.post(f"{BASE}/new/toy", data=fields,
                   files={"s_notes__file": ("students.json", document, "application/json")})
    assert r.status_code == 302, r.text[:500]
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get(SyncConnection.name == "Toy uploaded")
        assert conn.settings["notes"] == '{"openapi": "3.0.0", "title": "Élèves"}'  # BOM dropped
    edit = admin.page(f"{BASE}/{conn.id}/edit")
    assert "Élèves" in unescape(edit.text)

    # not text: a message at the field, nothing saved
    with app.app_context(), database.connection_context():
        before = SyncConnection.select().count()
    r = admin.post(f"{BASE}/new/toy", data={**fields, "name": "Toy binary", "csrf_token": admin.csrf},
                   files={"s_notes__file": ("logo.png", b"\x89PNG\r\n\x1a\n\xff\xfe\x00", "image/png")})
    assert r.status_code == 422
    errors = dict(re.findall(r'data-error-for="([^"]+)">([^<]+)<', r.text))
    assert errors["notes"] == "logo.png is not a text file (UTF-8)."
    with app.app_context(), database.connection_context():
        assert SyncConnection.select().count() == before
    # no file chosen: the box's text is kept as typed
    r = admin.post(f"{BASE}/{conn.id}/edit", data={**fields, "name": "Toy uploaded", "s_notes": "edited",
                                                     "csrf_token": admin.csrf},
                   files={"s_notes__file": ("", b"", "application/octet-stream")})
    assert r.status_code == 302
    with app.app_context(), database.connection_context():
        assert SyncConnection.get_by_id(conn.id).settings["notes"] == "edited"
