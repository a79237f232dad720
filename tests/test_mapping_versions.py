"""Configure Mapping > History: every save is a version with its rows kept; Download,
Restore, and Import into another connection of the same SIS type; a sync records the
version each record was mapped with. Over real HTTP, against the PowerSchool sandbox."""
from __future__ import annotations

import json
import re
from html import unescape

from enroll_sync.sync.connections import create_connection
from enroll_sync.db import database
from enroll_sync.models import Mapping, MappingVersion, Organization, SyncConnection

from .test_mapping_ui import BASE, Editor, ps, sandbox  # noqa: F401  (fixtures)


def _history(admin, cid):
    r = admin.page(f"{BASE}/{cid}/mapping/export_student/history")
    assert r.status_code == 200, r.text[:300]
    return unescape(r.text)


def _map_first_name(admin, cid, source):
    ed = Editor(admin, cid)
    ed.load()
    ed.set("name.first_name", "type", "direct")
    ed.set("name.first_name", "from", source)
    r = ed.submit("save")
    assert r.status_code == 200 and "Saved the Export Student Mapping" in unescape(r.text), r.text[:300]


def _rows(app, cid):
    with app.app_context(), database.connection_context():
        return Mapping.get(Mapping.connection == cid).rows


def test_each_save_is_a_version_that_can_be_downloaded_and_restored(app, live, login, ps):
    admin = login("Sync Admin")
    cid = ps["cid"]
    assert "No version saved yet" in _history(admin, cid)
    _map_first_name(admin, cid, "student_legal_first_name")
    first = _rows(app, cid)
    _map_first_name(admin, cid, "student_preferred_name")
    assert _rows(app, cid) != first

    page = _history(admin, cid)
    assert re.search(r'data-testid="version-2">\s*<td><strong>2</strong> <mark>Current</mark>', page)
    v1 = page.split('data-testid="version-1"')[1].split("</tr>")[0]
    v2 = page.split('data-testid="version-2"')[1].split("</tr>")[0]
    assert "1 added" in v1 and "<code>name.first_name</code>" in v1 and "Current" not in v1
    assert "1 changed" in v2 and "Sam Sync" in v2  # who saved it
    assert "Restore version 1" in v1 and "Restore version 2" not in v2  # the current one is not restorable

    # Download version 1: the rows as they were, in a document another connection can import
    r = admin.get(f"{BASE}/{cid}/mapping/export_student/history/1.json")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    doc = r.json()
    assert doc["format"] == "enroll-sync/mapping" and doc["adapter"] == "powerschool" and doc["mapping_version"] == 1
    assert doc["rows"] == first

    # Restore version 1: it becomes version 3, and the mapping holds its rows again
    r = admin.post_form(f"{BASE}/{cid}/mapping/export_student/history/1/restore", {})
    assert r.status_code == 302
    assert "Restored version 1 as version 3." in _history(admin, cid)
    assert _rows(app, cid) == first
    with app.app_context(), database.connection_context():
        kept = MappingVersion.get((MappingVersion.version == 3))
        assert kept.note == "Restored version 1" and kept.rows == first
    # restoring what the mapping already holds changes nothing
    admin.post_form(f"{BASE}/{cid}/mapping/export_student/history/1/restore", {})
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == cid).version == 3
    assert admin.get(f"{BASE}/{cid}/mapping/export_student/history/9.json").status_code == 404


def test_import_a_mapping_from_the_sandbox_connection_into_production(app, live, login, ps, sandbox):
    admin = login("Sync Admin")
    cid = ps["cid"]
    _map_first_name(admin, cid, "student_legal_first_name")
    doc = admin.get(f"{BASE}/{cid}/mapping/export_student/history/1.json").json()
    with app.app_context(), database.connection_context():
        org = Organization.get_by_id(ps["org"])
        prod = create_connection(org, "powerschool", "PS Production", "production", {
            "server_url": sandbox.url, "client_id": sandbox.client_id, "client_secret": sandbox.client_secret}).id
        generic = SyncConnection.get((SyncConnection.organization == org) & (SyncConnection.adapter != "powerschool")).id
    url = f"{BASE}/{prod}/mapping/export_student/import"
    admin.page(f"{BASE}/{prod}/mapping/export_student/history")

    # rows for fields this SIS does not have, and rows that are not rows, are left out and said
    doc["rows"] += [{"to": "no_such.field", "type": "direct", "from": "gender"}, {"to": 7}, "junk",
                    {"to": "demographics.gender", "type": "match_codes", "from": "gender", "codes": ["F"]}]
    r = admin.post(url, data={"csrf_token": admin.csrf},
                   files={"mapping_file": ("ps-sandbox.json", json.dumps(doc).encode(), "application/json")})
    assert r.status_code == 302, r.text[:500]
    page = _history(admin, prod)
    assert "Imported 2 row(s) from PS Test as version 1." in page
    assert "Left out 1 row(s) for fields PS Production does not have: no_such.field." in page
    assert "2 row(s) could not be read and were left out." in page
    rows = {r["to"]: r for r in _rows(app, prod)}
    assert rows["name.first_name"] == {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"}
    assert rows["demographics.gender"] == {"to": "demographics.gender", "type": "match_codes", "from": "gender"}
    assert "Imported from PS Test" in page  # the version's note
    # the imported mapping opens in the editor like any other
    assert admin.get(f"{BASE}/{prod}/mapping/export_student/fields").status_code == 200

    # refused with the reason at the file field, nothing changed
    for files, message in [
        ({"mapping_file": ("x.json", b"\x89PNG\r\n", "image/png")}, "not a mapping document (JSON)"),
        ({"mapping_file": ("x.json", b'{"rows": []}', "application/json")}, "not a mapping downloaded from Enroll Sync"),
        ({}, "Choose a mapping file"),
    ]:
        r = admin.post(url, data={"csrf_token": admin.csrf}, files=files or None)
        assert r.status_code == 422 and message in unescape(r.text), (message, r.status_code)
    gurl = f"{BASE}/{generic}/mapping/export_student/import"
    r = admin.post(gurl, data={"csrf_token": admin.csrf},
                   files={"mapping_file": ("ps.json", json.dumps(doc).encode(), "application/json")})
    assert r.status_code == 422 and "Only a mapping for the same SIS type can be imported." in unescape(r.text)
    with app.app_context(), database.connection_context():
        assert Mapping.get(Mapping.connection == prod).version == 1
        assert not Mapping.select().where(Mapping.connection == generic).exists()
