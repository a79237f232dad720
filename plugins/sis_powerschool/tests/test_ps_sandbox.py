"""The PowerSchool sandbox speaks the API as documented: rules, quirks, reading, admin."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from ps_helpers import next_local_id, post_students, student_body
from sis_powerschool.adapter import core_sections
from sis_powerschool.sandbox import MAX_LENGTHS


def only(resp):
    """The single result of a one-student post (an OBJECT, not an array)."""
    assert resp.status_code == 200, resp.text
    result = resp.json()["results"]["result"]
    assert isinstance(result, dict), "one student -> result is an object"
    return result


def errors_of(result):
    assert result["status"] == "ERROR", result
    err = result["error_message"]["error"]
    return err if isinstance(err, list) else [err]


def codes(result):
    return {(e["field"], e["error_code"]) for e in errors_of(result)}


# ----------------------------------------------------------------------------- oauth

def test_token_expires_in_is_a_string(sandbox):
    r = httpx.post(sandbox.url + "/oauth/access_token/", data={"grant_type": "client_credentials"},
                   auth=(sandbox.client_id, sandbox.client_secret))
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], str) and int(body["expires_in"]) > 0


@pytest.mark.parametrize("auth,data,status", [
    (("enroll-sync-demo", "wrong"), {"grant_type": "client_credentials"}, 401),
    (None, {"grant_type": "client_credentials"}, 401),
    (("enroll-sync-demo", "sandbox-secret-change-me"), {"grant_type": "password"}, 400),
])
def test_token_refusals(sandbox, auth, data, status):
    r = httpx.post(sandbox.url + "/oauth/access_token", data=data, auth=auth)
    assert r.status_code == status
    assert "access_token" not in r.json()


def test_api_needs_a_valid_bearer_token(sandbox):
    assert httpx.get(sandbox.url + "/ws/v1/metadata").status_code == 401
    r = httpx.get(sandbox.url + "/ws/v1/metadata", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


# ----------------------------------------------------------------------------- discovery

def test_metadata_district_codes_and_schools(api):
    meta = api.get("/ws/v1/metadata").json()["metadata"]
    assert meta["student_max_page_size"] == 500 and meta["powerschool_version"]
    plain = api.get("/ws/v1/district").json()["district"]
    assert "entry_codes" not in plain and "entry_codes" in plain["@expansions"]
    d = api.get("/ws/v1/district", params={"expansions": "entry_codes,exit_codes"}).json()["district"]
    assert {c["code"] for c in d["entry_codes"]["entry_code"]} >= {"E1", "E2"}
    assert {c["code"] for c in d["exit_codes"]["exit_code"]} >= {"T1", "G"}
    schools = api.get("/ws/v1/district/school").json()["schools"]["school"]
    assert [s["school_number"] for s in schools] == [100, 200, 300]
    one = api.get("/ws/v1/district/school", params={"pagesize": 1}).json()["schools"]["school"]
    assert isinstance(one, dict), "one school -> an object, not an array"
    assert api.get("/ws/v1/district/school/count").json() == {"resource": {"count": 3}}


def test_extension_table_metadata(api):
    r = api.get("/ws/schema/table/u_students_extension/metadata", params={"expansions": "access"})
    cols = {c["name"]: c for c in r.json()["columns"]}
    assert cols["bus_route"]["access"] == "FullAccess" and cols["bus_route"]["length"] == 20
    assert cols["locker_combination"]["access"] == "NoAccess"
    assert cols["discipline_notes"]["access"] == "BlackListNoAccess"
    r = api.get("/ws/schema/table/u_students_extension/metadata")
    assert "access" not in r.json()["columns"][0], "access only with expansions=access"
    assert api.get("/ws/schema/table/nope/metadata").status_code == 404


# ----------------------------------------------------------------------------- insert rules

def test_a_valid_insert_is_stored(api, sandbox):
    body = student_body(uid="r1", **{"addresses.physical.street": "1 Main St",
                                     "addresses.physical.city": "Fresno",
                                     "addresses.physical.state_province": "CA",
                                     "addresses.physical.postal_code": "93701"})
    result = only(post_students(api, body))
    assert result["status"] == "SUCCESS" and result["action"] == "INSERT"
    assert result["client_uid"] == "r1"
    dcid = result["success_message"]["id"]
    assert result["success_message"]["ref"].endswith(f"/ws/v1/student/{dcid}")
    [stored] = sandbox.dump()
    assert stored["id"] == dcid and stored["name"]["first_name"] == "Ana"
    assert stored["addresses"]["physical"]["city"] == "Fresno"
    assert stored["local_id"] == int(body["local_id"])


@pytest.mark.parametrize("path", [("name", "first_name"), ("name", "last_name"),
                                  ("school_enrollment", "grade_level"),
                                  ("school_enrollment", "entry_date"),
                                  ("school_enrollment", "exit_date"),
                                  ("school_enrollment", "school_number"), ("local_id",)])
def test_insert_requires(api, sandbox, path):
    body = student_body()
    node = body
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    result = only(post_students(api, body))
    assert ("student/" + "/".join(path), "REQUIRED_FIELD_MISSING") in codes(result)
    assert sandbox.dump() == []


LENGTH_CASES = sorted((p, n) for p, n in MAX_LENGTHS.items()
                      if p[-1] not in ("entry_code", "exit_code"))  # codes: see test_code_values


@pytest.mark.parametrize("path,limit", LENGTH_CASES, ids=[".".join(p) for p, _ in LENGTH_CASES])
def test_lengths(api, sandbox, path, limit):
    key = ".".join(path)
    value = "9" * limit if "phone" in key or "postal" in key else "x" * limit
    if key.endswith("state_province"):
        value = "CA"
    extra = {}
    if key.startswith("addresses."):
        kind = path[1]
        extra = {f"addresses.{kind}.street": "1 Main", f"addresses.{kind}.city": "Town",
                 f"addresses.{kind}.state_province": "CA", f"addresses.{kind}.postal_code": "93701"}
    pairs = {"emergency_contact_name1": "emergency_phone1", "emergency_phone1": "emergency_contact_name1",
             "emergency_contact_name2": "emergency_phone2", "emergency_phone2": "emergency_contact_name2",
             "doctor_phone": "doctor_name"}
    if path[0] == "contact":
        extra[f"contact.{pairs[path[1]]}"] = "555"
    ok = only(post_students(api, student_body(**{**extra, key: value})))
    assert ok["status"] == "SUCCESS", ok
    too_long = value + value[-1]
    bad = only(post_students(api, student_body(**{**extra, key: too_long})))
    assert ("student/" + "/".join(path), "INVALID_LENGTH") in codes(bad)


def test_adapter_declares_the_lengths_the_sis_enforces():
    declared = {f.key: f.max_length for s in core_sections() for f in s.fields if f.max_length}
    enforced = {".".join(p): n for p, n in MAX_LENGTHS.items()}
    assert declared == enforced


@pytest.mark.parametrize("key,value", [
    ("demographics.gender", "X"), ("school_enrollment.enroll_status", "Z"),
    ("school_enrollment.entry_code", "NOPE"), ("school_enrollment.exit_code", "Q9"),
])
def test_code_values(api, key, value):
    result = only(post_students(api, student_body(**{key: value})))
    assert ("student/" + key.replace(".", "/"), "INVALID_VALUE") in codes(result)


def test_district_codes_fit_their_length():
    from sis_powerschool.sandbox import ENTRY_CODES, EXIT_CODES
    assert all(len(c["code"]) <= 10 for c in ENTRY_CODES + EXIT_CODES)


def test_known_codes_are_accepted(api):
    result = only(post_students(api, student_body(**{
        "demographics.gender": "M", "school_enrollment.enroll_status": "P",
        "school_enrollment.entry_code": "E2", "school_enrollment.exit_code": "G"})))
    assert result["status"] == "SUCCESS", result


@pytest.mark.parametrize("key,value", [
    ("demographics.birth_date", "03/04/2015"), ("demographics.birth_date", "2015-02-30"),
    ("school_enrollment.entry_date", "2025-8-20"),
])
def test_dates_must_be_iso(api, key, value):
    result = only(post_students(api, student_body(**{key: value})))
    assert ("student/" + key.replace(".", "/"), "INVALID_DATE") in codes(result)


def test_exit_date_after_entry_date(api):
    result = only(post_students(api, student_body(**{"school_enrollment.exit_date": "2025-08-01"})))
    assert ("student/school_enrollment/exit_date", "INVALID_DATE") in codes(result)


def test_unknown_school_and_grade_outside_the_school(api):
    r1 = only(post_students(api, student_body(**{"school_enrollment.school_number": "999"})))
    assert ("student/school_enrollment/school_number", "INVALID_SCHOOL_NUMBER") in codes(r1)
    r2 = only(post_students(api, student_body(**{"school_enrollment.grade_level": "11"})))
    assert ("student/school_enrollment/grade_level", "INVALID_GRADE_LEVEL") in codes(r2)


@pytest.mark.parametrize("kind", ["physical", "mailing"])
def test_address_is_all_or_nothing(api, kind):
    result = only(post_students(api, student_body(**{f"addresses.{kind}.street": "1 Main St",
                                                     f"addresses.{kind}.city": "Fresno"})))
    got = codes(result)
    assert (f"student/addresses/{kind}/state_province", "INCOMPLETE_ADDRESS") in got
    assert (f"student/addresses/{kind}/postal_code", "INCOMPLETE_ADDRESS") in got
    assert isinstance(result["error_message"]["error"], list), "several errors -> an array"


@pytest.mark.parametrize("given,missing", [
    ("emergency_contact_name1", "emergency_phone1"), ("emergency_phone2", "emergency_contact_name2"),
    ("doctor_name", "doctor_phone"),
])
def test_contact_pairs_are_all_or_nothing(api, given, missing):
    result = only(post_students(api, student_body(**{f"contact.{given}": "555 0101"})))
    assert codes(result) == {(f"student/contact/{missing}", "INCOMPLETE_CONTACT")}
    assert isinstance(result["error_message"]["error"], dict), "one error -> an object"


def test_enroll_status_and_enroll_status_code_conflict(api):
    result = only(post_students(api, student_body(**{"school_enrollment.enroll_status_code": "0"})))
    assert ("student/school_enrollment/enroll_status_code", "CONFLICTING_FIELDS") in codes(result)


def test_duplicate_local_id_is_invalid_local_id(api, sandbox):
    lid = next_local_id()
    assert only(post_students(api, student_body(lid)))["status"] == "SUCCESS"
    result = only(post_students(api, student_body(lid, uid="again")))
    [err] = errors_of(result)
    assert err == {"field": "student/local_id", "error_code": "INVALID_LOCAL_ID",
                   "error_description": "Local ID already exists in the database and can not "
                                        "be used in an insert."}
    assert len(sandbox.dump()) == 1


def test_bad_action_and_non_numeric_local_id(api):
    body = student_body()
    body["action"] = "DELETE"
    assert ("student/action", "INVALID_ACTION") in codes(only(post_students(api, body)))
    r = only(post_students(api, student_body(local_id="abc")))
    assert ("student/local_id", "INVALID_LOCAL_ID") in codes(r)


# ----------------------------------------------------------------------------- update rules

def _insert(api, **overrides):
    body = student_body(**overrides)
    result = only(post_students(api, body))
    assert result["status"] == "SUCCESS", result
    return result["success_message"]["id"], body


def test_update_needs_a_known_id(api):
    r = only(post_students(api, {"client_uid": "x", "action": "UPDATE", "name": {"first_name": "B"}}))
    assert ("student/id", "INVALID_ID") in codes(r)
    r = only(post_students(api, {"client_uid": "x", "action": "UPDATE", "id": 424242}))
    assert ("student/id", "INVALID_ID") in codes(r)


def test_update_changes_fields_but_not_the_enrollment(api, sandbox):
    dcid, body = _insert(api)
    r = only(post_students(api, {"client_uid": "u", "action": "UPDATE", "id": dcid,
                                 "name": {"middle_name": "Maria"},
                                 "school_enrollment": {"entry_date": "2025-09-01"}}))
    assert codes(r) == {("student/school_enrollment/entry_date", "UPDATE_NOT_ALLOWED")}
    for key, value in [("exit_date", "2026-06-01"), ("school_number", 200), ("grade_level", 4)]:
        r = only(post_students(api, {"action": "UPDATE", "id": dcid,
                                     "school_enrollment": {key: value}}))
        assert (f"student/school_enrollment/{key}", "UPDATE_NOT_ALLOWED") in codes(r)
    same = only(post_students(api, {"client_uid": "u", "action": "UPDATE", "id": dcid,
                                    "name": {"middle_name": "Maria"},
                                    "school_enrollment": {"entry_date": "2025-08-20"}}))
    assert same["status"] == "SUCCESS" and same["action"] == "UPDATE"
    [stored] = sandbox.dump()
    assert stored["name"] == {"first_name": "Ana", "last_name": body["name"]["last_name"],
                              "middle_name": "Maria"}
    assert stored["school_enrollment"]["entry_date"] == "2025-08-20"


def test_update_cannot_take_another_students_local_id(api):
    dcid1, b1 = _insert(api)
    _dcid2, b2 = _insert(api)
    r = only(post_students(api, {"action": "UPDATE", "id": dcid1, "local_id": b2["local_id"]}))
    assert ("student/local_id", "INVALID_LOCAL_ID") in codes(r)


# ----------------------------------------------------------------------------- batches

def test_several_students_give_an_array_with_counts_and_partial_errors(api, sandbox):
    good1, good2 = student_body(uid="a"), student_body(uid="c")
    bad = student_body(uid="b")
    del bad["name"]["last_name"]
    r = post_students(api, good1, bad, good2)
    assert r.status_code == 200, "per-record errors come with HTTP 200"
    results = r.json()["results"]
    assert results["insert_count"] == 2 and results["update_count"] == 0
    assert isinstance(results["result"], list)
    assert [(x["client_uid"], x["status"]) for x in results["result"]] == [
        ("a", "SUCCESS"), ("b", "ERROR"), ("c", "SUCCESS")]
    assert len(sandbox.dump()) == 2


def test_a_malformed_request_is_400(api):
    assert api.post("/ws/v1/student", content=b"{nope", headers={"Content-Type": "application/json"}).status_code == 400
    assert api.post("/ws/v1/student", json={"students": {"student": []}}).status_code == 400


def test_extension_data_is_validated_and_stored(api, sandbox):
    body = student_body()
    body["_extension_data"] = {"_table_extension": {"recordFound": False, "name": "u_students_extension",
                                                    "_field": [{"name": "bus_route", "type": "String", "value": "R7"},
                                                               {"name": "photo_release", "type": "Boolean", "value": "true"}]}}
    assert only(post_students(api, body))["status"] == "SUCCESS"
    assert sandbox.dump()[0]["extensions"] == {"u_students_extension": {"bus_route": "R7", "photo_release": True}}
    for field, code in [("locker_combination", "No access to the field"),
                        ("discipline_notes", "No access to the field"), ("nope", "INVALID_EXTENSION")]:
        b = student_body()
        b["_extension_data"] = {"_table_extension": [{"name": "u_students_extension",
                                                      "_field": {"name": field, "value": "1"}}]}
        assert (f"student/_extension_data/u_students_extension/{field}", code) in codes(only(post_students(api, b)))
    b = student_body()
    b["_extension_data"] = {"_table_extension": [{"name": "u_students_extension",
                                                  "_field": {"name": "bus_route", "value": "x" * 21}}]}
    assert ("student/_extension_data/u_students_extension/bus_route", "INVALID_LENGTH") in codes(only(post_students(api, b)))


# ----------------------------------------------------------------------------- reading

def test_search_paging_count_and_expansions(api):
    ids = []
    for i in range(5):
        dcid, body = _insert(api, **{"name.last_name": f"Jackson{i}", "state_province_id": f"S{i}"})
        ids.append((dcid, int(body["local_id"])))
    lo, hi = ids[1][1], ids[3][1]
    q = f"local_id=ge={lo};local_id=le={hi}"
    assert api.get("/ws/v1/district/student/count", params={"q": q}).json() == {"resource": {"count": 3}}
    page = api.get("/ws/v1/district/student", params={"q": q, "pagesize": 2, "page": 1}).json()["students"]
    assert [s["local_id"] for s in page["student"]] == [lo, lo + 1]
    last = api.get("/ws/v1/district/student", params={"q": q, "pagesize": 2, "page": 2}).json()["students"]
    assert isinstance(last["student"], dict) and last["student"]["local_id"] == hi
    beyond = api.get("/ws/v1/district/student", params={"q": q, "pagesize": 2, "page": 3}).json()["students"]
    assert "student" not in beyond and "u_students_extension" in beyond["@extensions"]
    wild = api.get("/ws/v1/district/student/count", params={"q": "name.last_name==jack*"}).json()
    assert wild["resource"]["count"] == 5
    exact = api.get("/ws/v1/district/student", params={"q": "state_province_id==S2"}).json()["students"]["student"]
    assert exact["id"] == ids[2][0]
    both = api.get("/ws/v1/district/student/count", params={"q": f"local_id=={lo};name.last_name==Jackson1"}).json()
    assert both["resource"]["count"] == 1
    assert api.get("/ws/v1/district/student", params={"q": "local_id=~1"}).status_code == 400
    school = api.get("/ws/v1/school/1/student/count").json()["resource"]["count"]
    assert school == 5 and api.get("/ws/v1/school/2/student/count").json()["resource"]["count"] == 0
    one = api.get(f"/ws/v1/student/{ids[0][0]}", params={
        "expansions": "demographics,school_enrollment", "extensions": "u_students_extension"}).json()["student"]
    assert one["demographics"]["gender"] == "F" and one["school_enrollment"]["school_number"] == 100
    assert "addresses" not in one and "demographics" in one["@expansions"]


def test_page_size_is_capped(api, sandbox):
    sandbox.set_faults(student_max_page_size=2)
    for _ in range(3):
        _insert(api)
    students = api.get("/ws/v1/district/student", params={"pagesize": 100}).json()["students"]["student"]
    assert len(students) == 2


def test_denied_fields_answer_no_access(api, sandbox):
    sandbox.set_faults(denied_fields=["students.dob"])
    r = post_students(api, student_body())
    assert r.status_code == 403
    assert r.json()["errors"] == [{"resource": "student", "field": "students.dob",
                                   "code": "No access to the field"}]
    r = api.get("/ws/v1/district/student", params={"expansions": "demographics"})
    assert r.status_code == 403
    assert api.get("/ws/v1/district/student").status_code == 200


def test_throttle_answers_too_many_requests(api, sandbox):
    sandbox.set_faults(min_interval_ms=5000, retry_after="5")
    assert api.get("/ws/v1/metadata").status_code == 200
    r = api.get("/ws/v1/metadata")
    assert r.status_code == 429 and r.headers["Retry-After"] == "5"
    assert "wait" in r.json()["message"] and "seconds" in r.json()["message"]


# ----------------------------------------------------------------------------- sandbox admin

def test_faults_dump_and_reset_over_http(sandbox, api):
    base = sandbox.url
    r = httpx.post(base + "/sandbox/faults", json={"latency_ms": 5, "reject_last_names": ["Nope"]})
    assert r.status_code == 200 and r.json()["latency_ms"] == 5
    assert httpx.post(base + "/sandbox/faults", json={"bogus": 1}).status_code == 400
    assert httpx.get(base + "/sandbox/faults").json()["reject_last_names"] == ["Nope"]
    r = only(post_students(api, student_body(**{"name.last_name": "nope"})))
    assert ("student/name/last_name", "INVALID_FIELD_VALUE") in codes(r)
    _insert(api)
    dump = httpx.get(base + "/sandbox/dump").json()["students"]
    assert len(dump) == 1 and dump[0]["name"]["first_name"] == "Ana"
    assert httpx.post(base + "/sandbox/reset").json() == {"ok": True}
    assert httpx.get(base + "/sandbox/dump").json() == {"students": []}
    assert httpx.get(base + "/sandbox/faults").json()["latency_ms"] == 0
    assert httpx.get(base + "/ws/v1/metadata", headers=api.headers).status_code == 401, \
        "reset forgets tokens"


def test_file_database_persists(tmp_path):
    from sis_powerschool.sandbox import serve_in_thread
    db = str(tmp_path / "ps.sqlite")
    with serve_in_thread(db=db) as h:
        tok = httpx.post(h.url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                         auth=(h.client_id, h.client_secret)).json()["access_token"]
        with httpx.Client(base_url=h.url, headers={"Authorization": f"Bearer {tok}"}) as c:
            assert only(post_students(c, student_body()))["status"] == "SUCCESS"
    with serve_in_thread(db=db) as h2:
        assert h2.count() == 1


def test_cli_command_serves_the_api(tmp_path):
    """``enroll-sync sandbox powerschool`` as a real process, with a fault flag."""
    code = ("from sis_powerschool.cli import powerschool_command as c; "
            "c(['--port', '0', '--quiet', '--client-id', 'cid', '--client-secret', 'csec', "
            "'--students', '3', '--reject-last-name', 'Smith'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("PowerSchool sandbox on http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[3]
        tok = httpx.post(url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                         auth=("cid", "csec")).json()["access_token"]
        count = httpx.get(url + "/ws/v1/district/student/count",
                          headers={"Authorization": f"Bearer {tok}"}).json()
        assert count == {"resource": {"count": 3}}
        assert httpx.get(url + "/sandbox/faults").json()["reject_last_names"] == ["Smith"]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_hooks_register_the_adapter_the_command_and_the_demo_connection():
    import click

    from sis_powerschool import plugin
    from sis_powerschool.adapter import PowerSchoolAdapter

    assert plugin.register_sis_adapters() == [PowerSchoolAdapter]

    @click.group()
    def sandbox():
        pass

    plugin.register_sandbox_commands(sandbox=sandbox)
    assert "powerschool" in sandbox.commands
    [demo] = plugin.register_demo_connections(sandbox_urls={"powerschool": "http://127.0.0.1:6001"})
    assert demo["adapter"] == "powerschool" and demo["environment"] == "sandbox"
    assert demo["settings"]["server_url"] == "http://127.0.0.1:6001"
    assert demo["settings"]["client_secret"] == "sandbox-secret-change-me"
    [default] = plugin.register_demo_connections(sandbox_urls={})
    assert default["settings"]["server_url"] == "http://127.0.0.1:5001"
    keys = {f.key for f in PowerSchoolAdapter.settings_schema()}
    assert set(demo["settings"]) <= keys
    json.dumps(demo)


def test_new_faults_over_http(sandbox, api):
    base = sandbox.url
    r = httpx.post(base + "/sandbox/faults", json={"malformed_kind": "bogus"})
    assert r.status_code == 400 and "html" in r.json()["kinds"]
    r = httpx.post(base + "/sandbox/faults", json={"revoke_tokens_every": 2, "malformed": 1,
                                                   "malformed_kind": "array",
                                                   "fault_path": "/ws/v1/district"})
    assert r.status_code == 200 and r.json()["revoke_tokens_every"] == 2
    assert api.get("/ws/v1/metadata").status_code == 200
    broken = api.get("/ws/v1/district")
    assert broken.status_code == 200 and broken.json() == []
    assert api.get("/ws/v1/metadata").status_code == 200  # the 2nd authorised request
    assert api.get("/ws/v1/metadata").status_code == 401, "revoked after the 2nd"
