"""The Aeries sandbox speaks the API as the reference describes: certificate, year
databases, schools, codes, students (arrays), writes with write names, contacts,
silently ignored fields, errors, faults and the /sandbox admin surface."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from aeries_helpers import insert_body
from sis_aeries.sandbox import (
    CODE_SETS, CONTACT_FIELDS, DEFAULT_CERT, MALFORMED_KINDS, STUDENT_FIELDS, serve_in_thread,
)

V5 = "/api/v5"


def insert(api, school=990, year=None, **overrides):
    params = {"DatabaseYear": year} if year is not None else None
    r = api.post(f"{V5}/schools/{school}/InsertStudent", params=params, json=insert_body(**overrides))
    assert r.status_code == 200, r.text
    return r.json()


def years_of(sandbox):
    return {y: [s["StudentID"] for s in data["students"]] for y, data in sandbox.dump()["years"].items()}


# ----------------------------------------------------------------------------- certificate

def test_systeminfo_needs_no_certificate(sandbox):
    info = httpx.get(sandbox.url + f"{V5}/systeminfo").json()
    assert info["AeriesVersion"] and info["DatabaseYear"] == "2025-2026"
    assert info["AvailableDatabaseYears"] == ["2024-2025", "2025-2026"]
    assert {"LocalTimeZoneName", "CurrentDateTime"} <= set(info)


@pytest.mark.parametrize("headers", [{}, {"AERIES-CERT": "0" * 32},
                                     {"AERIES-CERT": DEFAULT_CERT.upper()}])
def test_a_missing_wrong_or_miscased_certificate_is_401(sandbox, headers):
    r = httpx.get(sandbox.url + f"{V5}/schools", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"Message": "Authorization has been denied for this request."}
    assert sandbox.requests()[-1]["cert"] in ("missing", "wrong")


def test_a_security_area_not_granted_is_401_naming_it(api, sandbox):
    sandbox.set_faults(denied_areas=["Student Data:Insert", "Contacts"])
    r = api.post(f"{V5}/schools/990/InsertStudent", json=insert_body())
    assert r.status_code == 401 and "Insert access to the Student Data" in r.json()["Message"]
    assert api.get(f"{V5}/schools/990/students").status_code == 200, "reading is still granted"
    assert api.get(f"{V5}/schools/990/contacts/1").status_code == 401


def test_gated_paths_answer_501(api, sandbox):
    sandbox.set_faults(not_implemented=["/api/v5/InsertContact"])
    r = api.post(f"{V5}/InsertContact/99400001", json={})
    assert r.status_code == 501 and "v5 Enhancements" in r.json()["Message"]


# ----------------------------------------------------------------------------- year databases

def test_a_year_the_server_lacks_silently_falls_back_to_the_default_year(api, sandbox):
    in_2026 = insert(api, year=2026)   # not available: lands in 2025 without an error
    in_2024 = insert(api, year=2024)
    in_bad = insert(api, year="next")
    by_year = years_of(sandbox)
    assert in_2026["StudentID"] in by_year["2025"] and in_bad["StudentID"] in by_year["2025"]
    assert by_year["2024"] == [in_2024["StudentID"]]
    assert "2026" not in by_year
    info = api.get(f"{V5}/systeminfo", params={"DatabaseYear": 2026}).json()
    assert info["DatabaseYear"] == "2025-2026", "systeminfo shows the year actually used"
    assert api.get(f"{V5}/systeminfo", params={"databaseyear": 2024}).json()["DatabaseYear"] == "2024-2025"


def test_a_new_year_database_can_be_added(api, sandbox):
    sandbox.set_faults(available_years=[2024, 2025, 2026])
    s = insert(api, year=2026)
    assert years_of(sandbox)["2026"] == [s["StudentID"]]
    assert "2026-2027" in api.get(f"{V5}/systeminfo").json()["AvailableDatabaseYears"]


# ----------------------------------------------------------------------------- schools and codes

def test_schools_with_grade_ranges_and_an_inactive_one(api):
    schools = {s["SchoolCode"]: s for s in api.get(f"{V5}/schools").json()}
    assert schools[990]["LowGradeLevel"] == -1 and schools[990]["HighGradeLevel"] == 5
    assert schools[994]["LowGradeLevel"] == 9 and schools[997]["InactiveStatusCode"] == "I"
    assert api.get(f"{V5}/schools/991").json()["Name"] == "Eagle Rock Middle School"
    r = api.get(f"{V5}/schools/123")
    assert r.status_code == 404 and "Message" in r.json()


@pytest.mark.parametrize("table,fieldname", [("STU", "GR"), ("student", "Grade"), ("students", "GradeCode"),
                                             ("stu", "gr")])
def test_code_sets_by_code_or_name(api, table, fieldname):
    rows = api.get(f"{V5}/codes/{table}/{fieldname}").json()
    by_code = {r["Code"]: r for r in rows}
    assert by_code["K"]["AeriesCode"] == "0" and by_code["TK"]["AeriesCode"] == "-1"
    assert by_code["PS"]["Status"] != "", "inactive codes are listed, marked by Status"
    assert set(rows[0]) >= {"Table", "Field", "Code", "Description", "AeriesCode", "Category", "SortOrder",
                            "Status", "NumericValue", "DescriptionForLanguage1", "DescriptionForLanguage6"}


def test_other_code_sets(api):
    assert {r["Code"] for r in api.get(f"{V5}/codes/STU/HomeLanguageCode").json()} >= {"00", "01"}
    assert api.get(f"{V5}/codes/STU/Race1Code").json() == api.get(f"{V5}/codes/STU/RC").json()
    rl = api.get(f"{V5}/codes/Contacts/RelationshipToStudentCode").json()
    assert {r["Code"] for r in rl} >= {"10", "11"} and any(r["Status"] for r in rl)
    assert api.get(f"{V5}/codes/STU/Nope").status_code == 404
    assert api.get(f"{V5}/codes/XYZ/GR").status_code == 404


def test_code_values_fit_the_write_lengths():
    limits = {f.write: f.limit for f in STUDENT_FIELDS}
    for (table, code), rows in CODE_SETS.items():
        if table == "STU" and code in ("HL", "CL", "LF", "RC", "PED", "TG"):
            name = {"HL": "HomeLanguageCode", "CL": "CorrespondenceLanguageCode", "LF": "LanguageFluencyCode",
                    "RC": "Race1Code", "PED": "ParentEdLevelCode", "TG": "InactiveStatusCode"}[code]
            assert all(len(r["Code"]) <= limits[name] for r in rows), code


# ----------------------------------------------------------------------------- reading students

def test_students_are_arrays_per_school_with_paging_and_filters(api, sandbox):
    sandbox.seed(60, seed=3)
    everyone = api.get(f"{V5}/schools/990/students").json()
    assert isinstance(everyone, list) and everyone and all(s["SchoolCode"] == 990 for s in everyone)
    page = api.get(f"{V5}/schools/990/students", params={"StartingRecord": 2, "EndingRecord": 4}).json()
    assert page == everyone[1:4]
    one = everyone[0]
    assert api.get(f"{V5}/schools/990/students/{one['StudentID']}").json() == [one]
    assert api.get(f"{V5}/schools/990/students/sn/{one['StudentNumber']}").json() == [one]
    graded = api.get(f"{V5}/schools/990/students/grade/{one['Grade']}").json()
    assert one in graded and all(s["Grade"] == one["Grade"] for s in graded)
    assert api.get(f"{V5}/schools/990/students/1").json() == []
    assert api.get(f"{V5}/schools/123/students").status_code == 404


def test_the_student_endpoint_is_scoped_to_its_school(api):
    s = insert(api, school=994, Grade=9, BirthDate="2011-02-03")
    assert api.get(f"{V5}/schools/990/students/{s['StudentID']}").json() == []
    assert api.get(f"{V5}/schools/994/students/{s['StudentID']}").json()[0]["StudentID"] == s["StudentID"]


def test_extended_fields_come_only_from_extended(api):
    s = insert(api, BirthCity="Fresno", USEnterDate="2021-01-04", LastSchool=12)
    assert "BirthCity" not in s and "LastSchool" not in s
    [ext] = api.get(f"{V5}/schools/990/students/{s['StudentID']}/extended").json()
    assert ext["BirthCity"] == "Fresno" and ext["USEnterDate"] == "2021-01-04T00:00:00"
    assert ext["LastSchool"] == 12 and ext["RecordAddedSystem"] == "API"


def test_one_student_can_have_records_at_several_schools(api, sandbox):
    sandbox.seed(400, seed=11)
    records = sandbox.students()
    ids = [s["StudentID"] for s in records]
    multi = {i for i in ids if ids.count(i) > 1}
    assert multi, "the seed has transfers"
    sid = sorted(multi)[0]
    mine = [s for s in records if s["StudentID"] == sid]
    assert len({s["SchoolCode"] for s in mine}) == 2
    assert sorted(s["InactiveStatusCode"] for s in mine) == ["", "I"]


# ----------------------------------------------------------------------------- InsertStudent

def test_insert_answers_one_student_with_read_names(api, sandbox):
    s = insert(api, **{"Race2Code": "600", "NextSchool": 991})
    assert isinstance(s, dict) and s["StudentID"] >= 99400001 and s["SchoolCode"] == 990
    assert s["StudentNumber"] == 1
    assert s["Birthdate"] == "2020-03-14T00:00:00" and "BirthDate" not in s
    assert s["RaceCode1"] == "700" and s["RaceCode2"] == "600" and "Race1Code" not in s
    assert s["NextSchoolCode"] == 991 and "NextSchool" not in s
    assert s["HomePhone"] == "5552013344", "phones come back digits only"
    assert s["SchoolEnterDate"] == "2025-08-20T00:00:00" and s["SchoolLeaveDate"] is None
    assert sandbox.count() == 1


def test_read_names_and_unknown_properties_are_silently_ignored_on_write(api):
    s = insert(api, BirthDate=None, Grade=5, **{"Birthdate": "2015-01-01", "RaceCode1": "600",
                                                "NextSchoolCode": 994, "Sex": "F", "Nonsense": [1]},
               Race1Code=None)
    assert s["Birthdate"] is None and s["RaceCode1"] == "" and s["NextSchoolCode"] == 0
    assert s["Grade"] == 5


def test_insert_does_not_detect_duplicates(api, sandbox):
    body = insert_body()
    a = api.post(f"{V5}/schools/990/InsertStudent", json=body).json()
    b = api.post(f"{V5}/schools/990/InsertStudent", json=body).json()
    assert a["StudentID"] != b["StudentID"] and sandbox.count() == 2


def test_omitted_fields_get_defaults(api):
    r = api.post(f"{V5}/schools/991/InsertStudent", json={})
    s = r.json()
    assert r.status_code == 200 and s["LastName"] == "" and s["Grade"] == 0 and s["Birthdate"] is None


@pytest.mark.parametrize("spec", [f for f in STUDENT_FIELDS if f.kind == "str"], ids=lambda f: f.write)
def test_string_lengths(api, spec):
    ok = api.post(f"{V5}/schools/990/InsertStudent", json={spec.write: "x" * spec.limit})
    assert ok.status_code == 200, ok.text
    r = api.post(f"{V5}/schools/990/InsertStudent", json={spec.write: "x" * (spec.limit + 1)})
    assert r.status_code == 400
    assert r.json()["Message"] == (f"The field {spec.write} must be a string with a maximum length of "
                                   f"{spec.limit}.")


@pytest.mark.parametrize("body,needle", [
    ({"Grade": 19}, "Grade must be between -2 and 18"),
    ({"NextGrade": -3}, "NextGrade must be between -2 and 18"),
    ({"Grade": "K"}, "could not convert 'K' to Grade"),
    ({"BirthDate": "03/14/2020"}, "BirthDate"),
    ({"BirthDate": "2020-02-30"}, "BirthDate"),
    ({"EthnicityCode": "H"}, "EthnicityCode must be Y or N"),
    ({"NextSchool": 40000}, "Int16"),
    ({"HomePhone": "555 201 3344 99"}, "HomePhone"),
    ({"LastName": {"a": 1}}, "LastName must be a string"),
])
def test_invalid_values_are_400_with_a_message(api, body, needle):
    r = api.post(f"{V5}/schools/990/InsertStudent", json=body)
    assert r.status_code == 400 and needle in r.json()["Message"], r.text


def test_insert_into_an_unknown_school_or_without_an_object(api):
    r = api.post(f"{V5}/schools/123/InsertStudent", json=insert_body())
    assert r.status_code == 400 and "Invalid School Code" in r.json()["Message"]
    r = api.post(f"{V5}/schools/990/InsertStudent", json=[insert_body()])
    assert r.status_code == 400 and r.json()["Message"].startswith("The request is invalid")


def test_v4_insert_still_works(api):
    r = api.post("/api/v4/schools/990/InsertStudent", json=insert_body())
    assert r.status_code == 200 and r.json()["StudentID"]


# ----------------------------------------------------------------------------- UpdateStudent

def test_update_answers_every_school_record_and_keeps_omitted_fields(api, sandbox):
    sandbox.seed(400, seed=11)
    ids = [s["StudentID"] for s in sandbox.students()]
    sid = next(i for i in ids if ids.count(i) > 1)
    r = api.post(f"{V5}/UpdateStudent/{sid}", json={"FirstName": "Zed", "BirthDate": "2012-12-12"})
    answer = r.json()
    assert r.status_code == 200 and isinstance(answer, list) and len(answer) == 2
    assert {a["FirstName"] for a in answer} == {"Zed"}
    assert {a["Birthdate"] for a in answer} == {"2012-12-12T00:00:00"}
    assert len({a["LastName"] for a in answer}) == 1 and answer[0]["LastName"], "omitted: unchanged"


def test_update_of_an_unknown_student_is_400(api):
    r = api.post(f"{V5}/UpdateStudent/12345", json={"FirstName": "X"})
    assert r.status_code == 400 and r.json() == {"Message": "Invalid Student ID"}
    assert api.post(f"{V5}/UpdateStudent/abc", json={}).status_code == 400


def test_reject_last_names_fault(api, sandbox):
    sandbox.set_faults(reject_last_names=["Nobody"])
    r = api.post(f"{V5}/schools/990/InsertStudent", json=insert_body(LastName="NOBODY"))
    assert r.status_code == 400 and "rejected" in r.json()["Message"]


# ----------------------------------------------------------------------------- field permissions

def test_a_field_without_insert_permission_is_silently_ignored(api, sandbox):
    sandbox.set_faults(no_insert_permission=["BirthDate", "RaceCode1", "Grade"])
    s = insert(api, Grade=3)
    assert s["Birthdate"] is None and s["RaceCode1"] == "" and s["Grade"] == 0
    assert s["FirstName"] == "Ana"


def test_a_field_without_update_permission_keeps_its_value(api, sandbox):
    s = insert(api)
    sandbox.set_faults(no_update_permission=["student.Birthdate"])
    [after] = api.post(f"{V5}/UpdateStudent/{s['StudentID']}",
                       json={"BirthDate": "2019-09-09", "FirstName": "Anna"}).json()
    assert after["Birthdate"] == "2020-03-14T00:00:00" and after["FirstName"] == "Anna"


def test_contact_field_permissions_are_separate(api, sandbox):
    s = insert(api)
    sandbox.set_faults(no_insert_permission=["contact.EmailAddress"])
    c = api.post(f"{V5}/InsertContact/{s['StudentID']}", json={"FirstName": "Maria", "EmailAddress": "m@x.org"}).json()
    assert c["EmailAddress"] == "" and c["FirstName"] == "Maria"
    s2 = insert(api, ParentGuardianName="Kept")
    assert s2["ParentGuardianName"] == "Kept"


# ----------------------------------------------------------------------------- contacts

def test_contacts_insert_update_list_delete(api, sandbox):
    s = insert(api)
    sid = s["StudentID"]
    c1 = api.post(f"{V5}/InsertContact/{sid}", json={
        "FirstName": "Maria", "LastName": "Rivera", "RelationshipToStudentCode": "11",
        "CellPhone": "(555) 201-3344", "AddressZip": "99999", "AddressZipExt": "1234",
        "PrimaryContact": "Y", "LivesWithStudentIndicator": "Y", "ContactOrder": 1}).json()
    assert c1["SequenceNumber"] == 1 and c1["StudentID"] == sid
    assert c1["AddressZipCode"] == "99999" and "AddressZip" not in c1 and c1["CellPhone"] == "5552013344"
    c2 = api.post(f"{V5}/InsertContact/{sid}", json={"FirstName": "Luis", "AddressZipCode": "11111"}).json()
    assert c2["SequenceNumber"] == 2 and c2["AddressZipCode"] == "", "the read name is ignored on write"
    listed = api.get(f"{V5}/schools/000/contacts/{sid}").json()
    assert [c["SequenceNumber"] for c in listed] == [1, 2], "SchoolCode is ignored with a StudentID"
    assert api.get(f"{V5}/schools/990/contacts").json() == listed
    up = api.post(f"{V5}/UpdateContact/{sid}/2", json={"LastName": "Rivera", "EmailAddress": "l@x.org"}).json()
    assert up["FirstName"] == "Luis" and up["LastName"] == "Rivera" and up["EmailAddress"] == "l@x.org"
    rest = api.delete(f"{V5}/DeleteContact/{sid}/1").json()
    assert [c["SequenceNumber"] for c in rest] == [2]
    assert api.get(f"{V5}/DeleteContact/{sid}/2").json() == [], "GET works where DELETE is blocked"
    assert api.delete(f"{V5}/DeleteContact/{sid}/2").status_code == 404


@pytest.mark.parametrize("spec", [f for f in CONTACT_FIELDS if f.kind == "str"], ids=lambda f: f.write)
def test_contact_lengths(api, spec):
    sid = insert(api)["StudentID"]
    assert api.post(f"{V5}/InsertContact/{sid}", json={spec.write: "x" * spec.limit}).status_code == 200
    r = api.post(f"{V5}/InsertContact/{sid}", json={spec.write: "x" * (spec.limit + 1)})
    assert r.status_code == 400 and spec.write in r.json()["Message"]


def test_contact_errors(api):
    sid = insert(api)["StudentID"]
    r = api.post(f"{V5}/InsertContact/1", json={"FirstName": "X"})
    assert r.status_code == 400 and r.json()["Message"] == "Invalid Student ID"
    r = api.post(f"{V5}/UpdateContact/{sid}/9", json={"FirstName": "X"})
    assert r.status_code == 400 and "Sequence Number" in r.json()["Message"]
    r = api.post(f"{V5}/InsertContact/{sid}", json={"PrimaryContact": "maybe"})
    assert r.status_code == 400 and "PrimaryContact must be Y or N" in r.json()["Message"]
    r = api.post(f"{V5}/InsertContact/{sid}", json={"ContactOrder": 0})
    assert r.status_code == 400


# ----------------------------------------------------------------------------- faults

def test_counted_faults_hit_the_next_requests_under_the_fault_path(api, sandbox):
    sandbox.set_faults(fail_500=2, fault_path="/api/v5/schools/990")
    assert api.get(f"{V5}/schools").status_code == 200
    assert [api.get(f"{V5}/schools/990/students").status_code for _ in range(3)] == [500, 500, 200]


def test_429_and_503_bursts_with_retry_after(api, sandbox):
    sandbox.set_faults(burst_429=1, burst_503=1, retry_after="3")
    r1, r2, r3 = (api.get(f"{V5}/schools") for _ in range(3))
    assert r1.status_code == 429 and r1.headers["Retry-After"] == "3"
    assert r2.status_code == 503 and r2.headers["Retry-After"] == "3"
    assert r3.status_code == 200


@pytest.mark.parametrize("kind", list(MALFORMED_KINDS))
def test_malformed_answers_are_not_processed(api, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind)
    try:
        r = api.post(f"{V5}/schools/990/InsertStudent", json=insert_body())
        body = r.text
    except httpx.HTTPError:
        body = None
    if body is not None and kind not in ("wrong_shape", "missing_keys"):
        with pytest.raises(ValueError):
            json.loads(body)
    assert sandbox.count() == 0
    assert api.get(f"{V5}/schools").status_code == 200


def test_wrong_shape_swaps_arrays_and_objects(api, sandbox):
    sandbox.set_faults(malformed=2, malformed_kind="wrong_shape")
    assert api.get(f"{V5}/schools").json() == {"Data": []}
    assert api.post(f"{V5}/schools/990/InsertStudent", json={}).json() == "unexpected"


def test_lost_answers_are_saved(api, sandbox):
    sandbox.set_faults(lost_answers=1)
    r = api.post(f"{V5}/schools/990/InsertStudent", json=insert_body())
    assert r.status_code == 500 and sandbox.count() == 1


def test_drip_sends_the_whole_answer_slowly(api, sandbox):
    fast = api.get(f"{V5}/schools").json()
    sandbox.set_faults(drip=1, drip_ms=10, drip_bytes=256)
    started = time.monotonic()
    assert api.get(f"{V5}/schools").json() == fast
    assert time.monotonic() - started > 0.05


def test_timeouts_hang_then_answer_500(api, sandbox):
    sandbox.set_faults(timeouts=1, hang_s=0.3)
    with pytest.raises(httpx.ReadTimeout):
        api.get(f"{V5}/schools", timeout=0.1)
    assert api.get(f"{V5}/schools").status_code == 200


def test_throttle(api, sandbox):
    sandbox.set_faults(min_interval_ms=300, retry_after="1")
    assert api.get(f"{V5}/schools").status_code == 200
    r = api.get(f"{V5}/schools")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"


def test_latency_and_error_rate(api, sandbox):
    sandbox.set_faults(latency_ms=60)
    started = time.monotonic()
    api.get(f"{V5}/systeminfo")
    assert time.monotonic() - started >= 0.06
    sandbox.set_faults(latency_ms=0, error_rate=1.0)
    assert api.get(f"{V5}/schools").status_code == 500


# ----------------------------------------------------------------------------- admin surface

def test_faults_over_http(sandbox):
    r = httpx.post(sandbox.url + "/sandbox/faults", json={"burst_429": 2, "no_update_permission": ["Grade"]})
    assert r.status_code == 200 and r.json()["burst_429"] == 2
    assert httpx.get(sandbox.url + "/sandbox/config").json()["no_update_permission"] == ["Grade"]
    r = httpx.post(sandbox.url + "/sandbox/faults", json={"nope": 1})
    assert r.status_code == 400 and "nope" in r.json()["Message"]
    r = httpx.post(sandbox.url + "/sandbox/faults", json={"malformed_kind": "weird"})
    assert r.status_code == 400
    r = httpx.post(sandbox.url + "/sandbox/faults", json={"available_years": "2026"})
    assert r.status_code == 400


def test_dump_requests_empty_and_reset(api, sandbox):
    s = insert(api)
    dump = httpx.get(sandbox.url + "/sandbox/dump").json()
    assert dump["default_year"] == 2025 and dump["years"]["2025"]["students"][0]["StudentID"] == s["StudentID"]
    log = httpx.get(sandbox.url + "/sandbox/requests").json()["requests"]
    assert log[-1]["path"] == f"{V5}/schools/990/InsertStudent" and log[-1]["cert"] == "valid"
    assert DEFAULT_CERT not in json.dumps(log), "the log never holds the certificate"
    sandbox.set_faults(latency_ms=5)
    assert httpx.post(sandbox.url + "/sandbox/empty").json() == {"ok": True}
    assert sandbox.count() == 0 and sandbox.faults["latency_ms"] == 5, "empty keeps the faults"
    insert(api)
    assert httpx.post(sandbox.url + "/sandbox/reset").json() == {"ok": True}
    assert sandbox.count() == 0 and sandbox.faults["latency_ms"] == 0


def test_reset_restores_the_seeded_students():
    with serve_in_thread(port=0, seed=5, seed_count=30) as h:
        before = h.students()
        api = httpx.Client(base_url=h.url, headers={"AERIES-CERT": h.cert})
        api.post(f"{V5}/schools/990/InsertStudent", json=insert_body())
        h.renumber()
        h.reset()
        assert h.students() == before and h.count() == 30


@pytest.mark.parametrize("mode", ["shift", "shuffle"])
def test_renumber_gives_the_same_students_new_ids(api, sandbox, mode):
    sandbox.seed(20, seed=2)
    before = {(s["SchoolCode"], s["StudentNumber"]): s for s in sandbox.students()}
    contacts_before = {(c["StudentID"], c["SequenceNumber"]): c for c in sandbox.contacts()}
    r = httpx.post(sandbox.url + "/sandbox/renumber", json={"mode": mode})
    mapping = {int(k): v for k, v in r.json()["ids"].items()}
    after = {(s["SchoolCode"], s["StudentNumber"]): s for s in sandbox.students()}
    assert set(after) == set(before)
    for key, old in before.items():
        new = after[key]
        assert new["StudentID"] == mapping[old["StudentID"]] != old["StudentID"]
        assert {k: v for k, v in new.items() if k != "StudentID"} == {k: v for k, v in old.items() if k != "StudentID"}
    if mode == "shift":
        assert min(mapping.values()) > max(mapping)
    else:
        assert set(mapping.values()) == set(mapping), "the old ids now name other students"
    for (sid, seq), c in contacts_before.items():
        moved = [x for x in sandbox.contacts() if x["StudentID"] == mapping[sid] and x["SequenceNumber"] == seq]
        assert len(moved) == 1 and moved[0]["FirstName"] == c["FirstName"]
    new_student = insert(api)
    assert new_student["StudentID"] not in mapping.values()


def test_seeding_is_fast_and_deterministic():
    with serve_in_thread(port=0) as a, serve_in_thread(port=0) as b:
        started = time.monotonic()
        a.seed(5000, seed=42)
        elapsed = time.monotonic() - started
        b.seed(5000, seed=42)
        assert a.students() == b.students() and a.contacts() == b.contacts()
        assert a.count() == 5000 and elapsed < 5, elapsed
        schools = {s["SchoolCode"]: s for s in httpx.get(a.url + f"{V5}/schools",
                                                         headers={"AERIES-CERT": a.cert}).json()}
        for s in a.students():
            school = schools[s["SchoolCode"]]
            if not s["InactiveStatusCode"]:
                assert school["LowGradeLevel"] <= s["Grade"] <= school["HighGradeLevel"]
        r = httpx.post(b.url + "/sandbox/seed", json={"students": 3, "seed": 1})
        assert r.json() == {"seeded": 3} and b.count() == 5003


def test_a_file_database_persists(tmp_path):
    path = str(tmp_path / "aeries.db")
    with serve_in_thread(port=0, db=path) as h:
        httpx.post(h.url + f"{V5}/schools/990/InsertStudent", json=insert_body(), headers={"AERIES-CERT": h.cert})
    with serve_in_thread(port=0, db=path) as h:
        assert h.count() == 1


def test_page_error_at_fails_one_page_once(api, sandbox):
    sandbox.seed(30, seed=1)
    sandbox.set_faults(page_error_at=3)
    params = {"StartingRecord": 3, "EndingRecord": 4}
    assert api.get(f"{V5}/schools/990/students", params=params).status_code == 500
    assert api.get(f"{V5}/schools/990/students", params=params).status_code == 200


def test_a_student_edited_by_hand(api, sandbox):
    s = insert(api)
    r = httpx.post(sandbox.url + f"/sandbox/students/{s['StudentID']}/change",
                   json={"fields": {"LastName": "Edited", "StudentID": 1}})
    assert r.status_code == 200 and r.json()[0]["LastName"] == "Edited"
    assert api.get(f"{V5}/schools/990/students/{s['StudentID']}").json()[0]["LastName"] == "Edited"
    assert httpx.post(sandbox.url + "/sandbox/students/1/change", json={"fields": {"A": 1}}).status_code == 404
    assert httpx.post(sandbox.url + "/sandbox/students/1/change", json={}).status_code == 400
