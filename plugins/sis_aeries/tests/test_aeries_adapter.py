"""The Aeries adapter against the sandbox over a real socket: settings, Test Connection
(the year trap, the certificate), target fields, export (insert, update, re-sync,
renumbered SIS, ignored fields, Aeries' errors) and the hooks."""
from __future__ import annotations

import logging
import time

import pytest

from aeries_helpers import posts, record
from enroll_sync import ExportRecord, Outcome
from enroll_sync.testing import settings_schema_problems, target_field_problems
from sis_aeries import plugin
from sis_aeries.adapter import FIELDS, AeriesAdapter, match_key, start_year
from sis_aeries.sandbox import CONTACT_FIELDS, DEFAULT_CERT, STUDENT_FIELDS

WRONG_CERT = "0badc0de0badc0de0badc0de0badc0de"


def by_id(results):
    return {r.record_id: r for r in results}


def stored(sandbox, sis_id):
    return [s for s in sandbox.students() if str(s["StudentID"]) == str(sis_id)]


# ----------------------------------------------------------------------------- settings and hooks

def test_settings_schema():
    fields = {f.key: f for f in AeriesAdapter.settings_schema()}
    assert list(fields) == ["server_url", "certificate", "school_year", "batch_size", "min_interval_ms",
                            "timeout_s", "deadline_s"]
    assert fields["deadline_s"].default is None, "blank: four times the timeout"
    assert fields["certificate"].type == "secret" and fields["certificate"].default is None
    assert fields["school_year"].required and fields["school_year"].type == "integer"
    assert settings_schema_problems(AeriesAdapter.settings_schema()) == []


def test_hooks_register_the_adapter_the_command_and_the_demo_connection():
    assert plugin.register_sis_adapters() == [AeriesAdapter]
    [demo] = plugin.register_demo_connections(sandbox_urls={"aeries": "http://127.0.0.1:5999"})
    assert demo["adapter"] == "aeries" and demo["name"] == "Aeries Sandbox"
    assert demo["environment"] == "sandbox"
    assert demo["settings"]["server_url"] == "http://127.0.0.1:5999"
    assert demo["settings"]["certificate"] == DEFAULT_CERT
    assert set(demo["settings"]) <= {f.key for f in AeriesAdapter.settings_schema()}
    [default] = plugin.register_demo_connections(sandbox_urls={})
    assert default["settings"]["server_url"] == plugin.DEFAULT_SANDBOX_URL


def test_the_demo_connection_works_against_a_sandbox(sandbox):
    [demo] = plugin.register_demo_connections(sandbox_urls={"aeries": sandbox.url})
    with AeriesAdapter(demo["settings"]) as a:
        assert a.check_connection().ok


def test_lenient_settings():
    a = AeriesAdapter({"server_url": " https://d.example/aeries/api/v5/ ", "certificate": "x",
                       "school_year": "2026-2027", "batch_size": "5000", "timeout_s": "abc"})
    assert a.server_url == "https://d.example/aeries" and a.school_year == 2026
    assert a.batch_size == 1000 and a.timeout == 30
    assert start_year("2025") == 2025 and start_year(2025) == 2025 and start_year("2025-26") == 2025
    assert start_year("next") is None


# ----------------------------------------------------------------------------- Test Connection

def test_check_connection_names_version_year_and_schools(adapter):
    result = adapter.check_connection()
    assert result.ok, result.message
    assert "2025-2026 exists" in result.message and "3 active schools" in result.message
    assert result.details["Target school year"] == "2025-2026"


def test_check_connection_refuses_a_year_aeries_lacks(make_adapter, sandbox):
    result = make_adapter(school_year=2026).check_connection()
    assert not result.ok
    assert "Aeries has no 2026-2027 database (it has 2024-2025, 2025-2026)" in result.message
    assert "silently write to its default year 2025-2026" in result.message
    assert [r["path"] for r in sandbox.requests()] == ["/api/v5/systeminfo"], "stops before anything else"
    sandbox.set_faults(available_years=[2024, 2025, 2026])
    assert make_adapter(school_year=2026).check_connection().ok


def test_check_connection_needs_a_target_year(make_adapter):
    result = make_adapter(school_year=None).check_connection()
    assert not result.ok and "Set the target school year" in result.message


def test_check_connection_refuses_when_aeries_lists_no_years(make_adapter, sandbox):
    sandbox.set_faults(malformed=1, fault_path="/api/v5/systeminfo",
                       malformed_body='{"AeriesVersion": "10", "DatabaseYear": "2025-2026"}')
    result = make_adapter().check_connection()
    assert not result.ok and "did not list its year databases" in result.message


def test_check_connection_bad_certificate(make_adapter, sandbox):
    result = make_adapter(certificate=WRONG_CERT).check_connection()
    assert not result.ok
    assert "refused the API certificate (HTTP 401" in result.message
    assert "Authorization has been denied" in result.message
    assert WRONG_CERT not in result.message and sandbox.cert not in result.message


def test_check_connection_without_student_access(make_adapter, sandbox):
    sandbox.set_faults(denied_areas=["Student Data"])
    result = make_adapter().check_connection()
    assert not result.ok and "Student Data security area" in result.message
    assert "Security > API Security" in result.message


@pytest.mark.parametrize("settings,needle", [
    ({"server_url": "http://127.0.0.1:9", "max_attempts": 1}, "Could not reach 127.0.0.1:9"),
    ({"server_url": ""}, "server URL is not set"),
    ({"server_url": "district.aeries.net"}, "https://"),
    ({"certificate": ""}, "certificate is not set"),
])
def test_check_connection_settings_problems(make_adapter, settings, needle):
    result = make_adapter(**settings).check_connection()
    assert not result.ok and needle in result.message


def test_check_connection_wrong_url_and_tls(make_adapter, sandbox):
    result = make_adapter(server_url=sandbox.url + "/not-aeries").check_connection()
    assert not result.ok and "check the server URL" in result.message and "HTTP 404" in result.message
    result = make_adapter(server_url=sandbox.url.replace("http://", "https://")).check_connection()
    assert not result.ok and result.message.startswith("TLS error")
    assert make_adapter(server_url=sandbox.url + "/api/v5").check_connection().ok, "the /api suffix is dropped"
    hosted = make_adapter(server_url=sandbox.url + "/aeries/")
    assert hosted.check_connection().ok, "Aeries hosted under a path"
    [r] = hosted.export([record()])
    assert r.outcome == Outcome.SUCCEEDED
    assert {q["mount"] for q in sandbox.requests()} == {"", "/aeries"}


@pytest.mark.parametrize("kind", ["html", "not_json", "empty", "wrong_shape", "truncated"])
def test_check_connection_names_an_unreadable_answer(make_adapter, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/api/v5/schools")
    result = make_adapter().check_connection()
    assert not result.ok and "/api/v5/schools" in result.message and "server URL" in result.message


# ----------------------------------------------------------------------------- target fields

def test_target_fields(adapter, sandbox):
    sections = adapter.target_fields()
    assert target_field_problems(sections) == []
    fields = {f.key: f for s in sections for f in s.fields}
    grades = {c.value: c.label for c in fields["Grade"].codes}
    assert grades["0"] == "K - Kindergarten" and grades["-1"].startswith("TK")
    assert "-2" not in grades, "the inactive Preschool code is left out"
    schools = {c.value: c.label for c in fields["SchoolCode"].codes}
    assert set(schools) == {"990", "991", "994"}, "the inactive school is left out"
    assert "grades TK to 5" in schools["990"] and "grades 9 to 12" in schools["994"]
    assert fields["SchoolCode"].insert_only and fields["SchoolCode"].required
    assert {c.value for c in fields["Race1Code"].codes} >= {"700", "600"}
    assert "500" not in {c.value for c in fields["Race1Code"].codes}
    assert {c.value for c in fields["EthnicityCode"].codes} == {"Y", "N"}
    assert fields["BirthDate"].type == "date" and fields["BirthDate"].format == "YYYY-MM-DD"
    assert {k for k, f in fields.items() if f.required} == {"LastName", "FirstName", "BirthDate",
                                                            "SchoolCode", "Grade"}
    assert "Birthdate" not in fields and "RaceCode1" not in fields and "NextSchoolCode" not in fields


def test_the_one_table_agrees_with_the_sis(adapter):
    """Write names, read names, lengths and the extended endpoint as the sandbox models Aeries."""
    sis = {f.write: f for f in STUDENT_FIELDS}
    assert {f.key for f in FIELDS if not f.path} == set(sis)
    fields = {f.key: f for s in adapter.target_fields() for f in s.fields}
    for f in FIELDS:
        if f.path:
            continue
        assert f.read == sis[f.key].read, f.key
        assert f.extended == sis[f.key].extended, f.key
        if sis[f.key].kind == "str":
            assert fields[f.key].max_length == sis[f.key].limit, f.key
    assert CONTACT_FIELDS  # contacts: see the contacts tests once the contract has them


def test_target_fields_are_fetched_afresh(adapter, sandbox):
    adapter.target_fields()
    first = len([r for r in sandbox.requests() if "/codes/" in r["path"]])
    adapter.target_fields()
    assert len([r for r in sandbox.requests() if "/codes/" in r["path"]]) == 2 * first > 0


def test_target_fields_errors_are_adapter_errors(make_adapter, sandbox):
    from enroll_sync import AdapterError

    with pytest.raises(AdapterError, match="refused the API certificate"):
        make_adapter(certificate=WRONG_CERT).target_fields()
    sandbox.set_faults(malformed=1, malformed_kind="html", fault_path="/api/v5/codes")
    with pytest.raises(AdapterError, match="server URL"):
        make_adapter().target_fields()


# ----------------------------------------------------------------------------- preview and insert

def test_preview_shows_the_request_and_the_body_with_write_names(adapter):
    rec = record(Race2Code="600", NextSchool="991")
    preview = adapter.preview(rec)
    assert preview["request"] == "POST /api/v5/schools/990/InsertStudent?DatabaseYear=2025"
    body = preview["body"]
    assert body["BirthDate"] == "2017-03-14" and body["Grade"] == 3 and body["NextSchool"] == 991
    assert "SchoolCode" not in body, "the school is in the URL"
    linked = adapter.preview(ExportRecord("r", rec.payload, sis_id="99400007"))
    assert linked["request"] == "POST /api/v5/UpdateStudent/99400007?DatabaseYear=2025"


def test_insert_a_new_student_at_the_registrations_school(adapter, sandbox):
    rec = record(Race2Code="600", NextSchool="991", BirthCity="Fresno")
    [r] = adapter.export([rec])
    assert r.outcome == Outcome.SUCCEEDED and r.action == "insert", r.message
    [s] = stored(sandbox, r.sis_id)
    assert s["SchoolCode"] == 990 and s["Grade"] == 3 and s["Birthdate"] == "2017-03-14T00:00:00"
    assert s["RaceCode1"] == "700" and s["RaceCode2"] == "600" and s["NextSchoolCode"] == 991
    assert s["HomePhone"] == "5552013344" and s["BirthCity"] == "Fresno"
    assert r.sent == adapter.preview(rec), "what is previewed is what is sent"
    assert r.response["StudentID"] == int(r.sis_id)
    assert [p["path"] for p in posts(sandbox)] == ["/api/v5/schools/990/InsertStudent"]
    assert all("DatabaseYear=2025" in q["query"] for q in sandbox.requests() if q["path"] != "/api/v5/systeminfo")


def test_a_second_sync_updates_without_duplicates(adapter, sandbox):
    recs = [record() for _ in range(4)]
    first = by_id(adapter.export(recs))
    assert all(r.action == "insert" for r in first.values())
    again = by_id(adapter.export([ExportRecord(r.record_id, dict(r.payload, MiddleName="Mae")) for r in recs]))
    linked = by_id(adapter.export([ExportRecord(r.record_id, r.payload, sis_id=first[r.record_id].sis_id)
                                   for r in recs]))
    for rid in first:
        assert again[rid].action == "update" and again[rid].sis_id == first[rid].sis_id
        assert again[rid].matched_by == "name and birth date" and linked[rid].matched_by is None
        assert linked[rid].outcome == Outcome.SUCCEEDED and linked[rid].sis_id == first[rid].sis_id
    assert sandbox.count() == 4
    assert {s["MiddleName"] for s in sandbox.students()} == {"Luz"}, "the linked sync wrote Luz back"


def test_an_existing_student_is_matched_across_schools_and_names_as_people_write_them(adapter, sandbox):
    sandbox.seed(30, seed=4)
    existing = next(s for s in sandbox.students() if s["SchoolCode"] == 994 and not s["InactiveStatusCode"])
    rec = record(LastName=f"  {existing['LastName'].upper()} ", FirstName=existing["FirstName"].lower(),
                 BirthDate=existing["Birthdate"][:10], SchoolCode="990", Grade="3")
    [r] = adapter.export([rec])
    assert r.action == "update" and r.sis_id == str(existing["StudentID"])
    assert r.outcome == Outcome.PARTIAL, "an update cannot move the student to school 990"
    [school_error] = [e for e in r.errors if e.field == "SchoolCode"]
    assert "enrolled at 994, not 990" in school_error.message
    assert sandbox.count() == 30 and not posts(sandbox, "InsertStudent")


def test_several_matches_are_not_guessed(adapter, sandbox, api):
    body = {"LastName": "Twin", "FirstName": "Sam", "BirthDate": "2016-05-05", "Grade": 3}
    for _ in range(2):
        api.post("/api/v5/schools/990/InsertStudent", json=body)
    sandbox.clear_requests()
    [r] = adapter.export([record(LastName="Twin", FirstName="Sam", BirthDate="2016-05-05")])
    assert r.outcome == Outcome.FAILED and r.errors[0].code == "AMBIGUOUS_MATCH"
    assert "2 Aeries students match" in r.message and not posts(sandbox)


def test_two_registrations_of_one_child_in_one_batch_make_one_student(adapter, sandbox):
    rec = record()
    results = adapter.export([rec, ExportRecord("dup", dict(rec.payload))])
    assert [r.action for r in results] == ["insert", "update"]
    assert results[0].sis_id == results[1].sis_id and sandbox.count() == 1


# ----------------------------------------------------------------------------- a renumbered SIS

def resend_without_links(adapter, results, records):
    """What the core does with NOT_FOUND: the same records again, without sis_id."""
    again = [ExportRecord(r.record_id, r.payload) for r in records
             if results[r.record_id].outcome == Outcome.NOT_FOUND]
    return by_id(adapter.export(again))


def test_a_renumbered_sis_is_not_found_then_matched_under_the_new_ids(adapter, sandbox):
    recs = [record() for _ in range(3)]
    first = by_id(adapter.export(recs))
    mapping = sandbox.renumber("shift")
    sandbox.clear_requests()
    linked = [ExportRecord(r.record_id, r.payload, sis_id=first[r.record_id].sis_id) for r in recs]
    gone = by_id(adapter.export(linked))
    for rid, r in gone.items():
        assert r.outcome == Outcome.NOT_FOUND and not r.ok, r.message
        assert f"Aeries has no student {first[rid].sis_id} in 2025-2026" in r.message
    assert not posts(sandbox), "nothing written"
    again = resend_without_links(adapter, gone, recs)
    for rid, r in again.items():
        assert r.outcome == Outcome.SUCCEEDED and r.action == "update", r.message
        assert r.sis_id == str(mapping[int(first[rid].sis_id)]) and r.matched_by == "name and birth date"
    assert sandbox.count() == 3 and not posts(sandbox, "InsertStudent")


def test_an_old_id_naming_another_child_is_not_overwritten(adapter, sandbox):
    a, b = record(FirstName="Ana", BirthDate="2017-01-01"), record(FirstName="Ben", BirthDate="2016-02-02")
    first = by_id(adapter.export([a, b]))
    sandbox.renumber("shuffle")   # a's old id now names b and the other way round
    before = {s["StudentID"]: dict(s) for s in sandbox.students()}
    changed = ExportRecord(a.record_id, dict(a.payload, MiddleName="New"), sis_id=first[a.record_id].sis_id)
    [r] = adapter.export([changed])
    assert r.outcome == Outcome.NOT_FOUND and "is now Ben" in r.message
    assert {s["StudentID"]: s for s in sandbox.students()} == before, "nothing was written"
    [again] = resend_without_links(adapter, {r.record_id: r}, [changed]).values()
    assert again.outcome == Outcome.SUCCEEDED and again.sis_id == first[b.record_id].sis_id
    after = {s["StudentID"]: s for s in sandbox.students()}
    ben_now = int(first[a.record_id].sis_id)
    assert after[ben_now] == before[ben_now], "the other child was not touched"
    assert after[int(again.sis_id)]["MiddleName"] == "New"


def test_a_linked_student_gone_from_aeries_is_not_found_and_not_reinserted(adapter, sandbox):
    [first] = adapter.export([rec := record()])
    sandbox.empty()
    sandbox.clear_requests()
    [r] = adapter.export([ExportRecord(rec.record_id, rec.payload, sis_id=first.sis_id)])
    assert r.outcome == Outcome.NOT_FOUND and r.sis_id is None and not posts(sandbox)
    [again] = adapter.export([ExportRecord(rec.record_id, rec.payload)])
    assert again.action == "insert" and again.outcome == Outcome.SUCCEEDED and sandbox.count() == 1


def test_a_link_to_another_child_is_not_found(adapter, sandbox, api):
    other = api.post("/api/v5/schools/990/InsertStudent",
                     json={"LastName": "Other", "FirstName": "Kid", "BirthDate": "2015-01-01", "Grade": 3}).json()
    sandbox.clear_requests()
    [r] = adapter.export([record(sis_id=str(other["StudentID"]))])
    assert r.outcome == Outcome.NOT_FOUND and "is now Kid Other" in r.message and not posts(sandbox)


def test_a_link_with_the_same_first_name_but_nothing_else_is_not_guessed(adapter, sandbox, api):
    other = api.post("/api/v5/schools/990/InsertStudent",
                     json={"LastName": "Else", "FirstName": "Ana", "BirthDate": "2015-01-01", "Grade": 3}).json()
    sandbox.clear_requests()
    [r] = adapter.export([record(sis_id=str(other["StudentID"]))])
    assert r.outcome == Outcome.FAILED and r.errors[0].code == "LINK_CONFLICT" and not posts(sandbox)


# ----------------------------------------------------------------------------- ignored fields

def test_fields_aeries_ignored_on_insert_make_a_partial_sync(adapter, sandbox):
    sandbox.set_faults(no_insert_permission=["Race1Code", "HomeLanguageCode", "BirthCity"])
    [r] = adapter.export([record(BirthCity="Fresno")])
    assert r.outcome == Outcome.PARTIAL and r.action == "insert" and r.sis_id, r.message
    assert {e.field for e in r.errors} == {"Race1Code", "HomeLanguageCode", "BirthCity"}
    assert all(e.code == "NOT_WRITTEN" for e in r.errors)
    assert "Not written: HomeLanguageCode, Race1Code, BirthCity" in r.message
    race = next(e for e in r.errors if e.field == "Race1Code")
    assert "Insert permission" in race.message and "sent '700', Aeries has blank" in race.message


def test_an_update_aeries_kept_none_of_is_failed(adapter, sandbox):
    [first] = adapter.export([rec := record()])
    sandbox.set_faults(no_update_permission=["MiddleName", "ParentGuardianName"])
    [r] = adapter.export([ExportRecord(rec.record_id, {"MiddleName": "Mae", "ParentGuardianName": "Luis"},
                                       sis_id=first.sis_id)])
    assert r.outcome == Outcome.FAILED and r.sis_id == first.sis_id
    assert {e.field for e in r.errors} == {"MiddleName", "ParentGuardianName"}
    assert "kept none of it" in r.message and "Update permission" in r.errors[0].message


def test_an_update_with_some_fields_ignored_is_partial(adapter, sandbox):
    [first] = adapter.export([rec := record()])
    sandbox.set_faults(no_update_permission=["BirthDate"])
    [r] = adapter.export([ExportRecord(rec.record_id, dict(rec.payload, BirthDate="2017-03-15", MiddleName="Mae"),
                                       sis_id=first.sis_id)])
    assert r.outcome == Outcome.PARTIAL and [e.field for e in r.errors] == ["BirthDate"]
    assert stored(sandbox, first.sis_id)[0]["MiddleName"] == "Mae"


def test_read_names_in_a_payload_are_not_sent(adapter, sandbox):
    [r] = adapter.export([record(Birthdate="2017-03-14")])
    assert r.outcome == Outcome.FAILED and r.errors[0].code == "UNKNOWN_FIELD" and not posts(sandbox)


# ----------------------------------------------------------------------------- the year trap at export

def test_export_refuses_a_year_aeries_lacks_and_sends_nothing(make_adapter, sandbox):
    results = make_adapter(school_year=2026).export([record(), record()])
    assert all(r.outcome == Outcome.FAILED and r.errors[0].code == "YEAR_NOT_AVAILABLE" for r in results)
    assert "Nothing was sent" in results[0].message and "no 2026-2027 database" in results[0].message
    assert not posts(sandbox) and sandbox.count() == 0


def test_export_writes_to_the_target_year_database(make_adapter, sandbox):
    sandbox.set_faults(available_years=[2024, 2025, 2026])
    [r] = make_adapter(school_year=2026).export([record()])
    assert r.outcome == Outcome.SUCCEEDED and "(2026-2027)" in r.message
    assert stored(sandbox, r.sis_id) == [] and len(sandbox.students(2026)) == 1


# ----------------------------------------------------------------------------- Aeries' errors

def test_bad_certificate_at_export(make_adapter, sandbox):
    results = make_adapter(certificate=WRONG_CERT).export([record(), record()])
    assert all(r.outcome == Outcome.FAILED for r in results)
    assert "refused the API certificate" in results[0].message
    assert all(WRONG_CERT not in r.message for r in results)
    assert not posts(sandbox)


def test_a_400_fails_its_student_with_aeries_message_and_the_rest_goes_on(adapter, sandbox):
    sandbox.set_faults(reject_last_names=["Refused"])
    ok, bad = record(), record(LastName="Refused")
    res = by_id(adapter.export([ok, bad]))
    assert res[ok.record_id].outcome == Outcome.SUCCEEDED
    r = res[bad.record_id]
    assert r.outcome == Outcome.FAILED and "rejected by a district validation rule" in r.message
    assert r.errors[0].field == "LastName" and r.response == {"Message": r.errors[0].message}


def test_a_missing_area_stops_the_export(adapter, sandbox):
    sandbox.set_faults(denied_areas=["Student Data:Insert"])
    results = adapter.export([record(), record(), record()])
    assert all(r.outcome == Outcome.FAILED for r in results)
    assert "Insert access to the Student Data security area" in results[0].message
    assert "Nothing was sent for this student" in results[1].message
    assert len(posts(sandbox)) == 1


def test_501_names_the_feature_flag(adapter, sandbox):
    sandbox.set_faults(not_implemented=["/api/v5/schools/990/InsertStudent"])
    [r, rest] = adapter.export([record(), record()])
    assert r.outcome == Outcome.FAILED and "HTTP 501" in r.message and "v5 Enhancements" in r.message
    assert rest.errors[0].code == "NOT_SENT"


def test_404_says_check_the_server_url(make_adapter, sandbox):
    [r] = make_adapter(server_url=sandbox.url + "/elsewhere").export([record()])
    assert r.outcome == Outcome.FAILED and "HTTP 404" in r.message and "check the server URL" in r.message


def test_update_of_a_student_gone_between_lookup_and_write(adapter, sandbox, monkeypatch):
    [first] = adapter.export([rec := record()])
    real = adapter._roster

    def roster_then_renumber():
        r = real()
        sandbox.renumber("shift")
        return r
    monkeypatch.setattr(adapter, "_roster", roster_then_renumber)
    [r] = adapter.export([ExportRecord(rec.record_id, rec.payload, sis_id=first.sis_id)])
    assert r.outcome == Outcome.NOT_FOUND and "Invalid Student ID" in r.message
    assert r.response == {"Message": "Invalid Student ID"}


@pytest.mark.parametrize("overrides,key,needle", [
    ({"LastName": "x" * 101}, "LastName", "longer than Aeries' 100"),
    ({"Grade": "19"}, "Grade", "-2 to 18"),
    ({"Grade": "K"}, "Grade", "whole number"),
    ({"BirthDate": "03/14/2017"}, "BirthDate", "YYYY-MM-DD"),
    ({"EthnicityCode": "H"}, "EthnicityCode", "Y or N"),
    ({"MailingAddressState": "Calif"}, "MailingAddressState", "2 characters"),
    ({"BirthDate": None}, "BirthDate", "required for a new student"),
    ({"SchoolCode": None}, "SchoolCode", "required for a new student"),
])
def test_aeries_rules_are_checked_before_sending(adapter, sandbox, overrides, key, needle):
    [r] = adapter.export([record(**overrides)])
    assert r.outcome == Outcome.FAILED and key in {e.field for e in r.errors}
    assert needle in r.message and not posts(sandbox)


def test_grade_must_be_offered_and_the_school_active(adapter, sandbox):
    [r] = adapter.export([record(SchoolCode="994", Grade="3")])
    assert r.errors[0].code == "GRADE_NOT_OFFERED" and "grades 9 to 12, not 3" in r.message
    [r] = adapter.export([record(SchoolCode="997", Grade="3")])
    assert r.errors[0].code == "INVALID_SCHOOL"
    [r] = adapter.export([record(SchoolCode="990", Grade="0")])
    assert r.outcome == Outcome.SUCCEEDED, "K is grade 0 at a TK-5 school"
    assert not posts(sandbox, "/schools/994") and not posts(sandbox, "/schools/997")


# ----------------------------------------------------------------------------- faults

def test_429_with_retry_after_then_the_insert(adapter, sandbox):
    sandbox.set_faults(burst_429=2, retry_after="0", fault_path="/api/v5/schools/990/InsertStudent")
    [r] = adapter.export([record()])
    assert r.outcome == Outcome.SUCCEEDED and sandbox.count() == 1
    assert [p["status"] for p in posts(sandbox)] == [429, 429, 200]


def test_aeries_busy_past_the_retries_is_retry_and_nothing_is_written(adapter, sandbox):
    sandbox.set_faults(burst_503=10, retry_after="0", fault_path="/api/v5/schools/990/InsertStudent")
    [r] = adapter.export([record()])
    assert r.outcome == Outcome.RETRY and not r.ok and "HTTP 503" in r.message
    assert "Nothing was written" in r.message and sandbox.count() == 0
    sandbox.set_faults(burst_503=0)
    [first] = adapter.export([rec := record()])
    sandbox.set_faults(burst_429=10, retry_after="0", fault_path="/api/v5/UpdateStudent")
    [r] = adapter.export([ExportRecord(rec.record_id, rec.payload, sis_id=first.sis_id)])
    assert r.outcome == Outcome.RETRY and "429" in r.message


def test_a_busy_roster_is_retry_for_every_record(adapter, sandbox):
    sandbox.set_faults(burst_429=10, retry_after="0", fault_path="/api/v5/schools/990/students")
    results = adapter.export([record(), record()])
    assert [r.outcome for r in results] == [Outcome.RETRY, Outcome.RETRY] and not posts(sandbox)


def test_a_500_on_insert_is_looked_up_not_sent_again(adapter, sandbox):
    sandbox.set_faults(fail_500=1, fault_path="/api/v5/schools/990/InsertStudent")
    [r] = adapter.export([rec := record()])
    assert r.outcome == Outcome.RETRY and not r.sis_id and sandbox.count() == 0, r.message
    assert "HTTP 500 (An error has occurred.)" in r.message and "does not hold the student" in r.message
    assert [p["status"] for p in posts(sandbox)] == [500], "an insert is never sent blindly again"
    assert any("/students/grade/3" in q["path"] for q in sandbox.requests()), "looked up after the 500"
    [again] = adapter.export([rec])  # what the core does with RETRY
    assert again.outcome == Outcome.SUCCEEDED and again.action == "insert" and sandbox.count() == 1


def test_a_lost_insert_answer_does_not_make_a_duplicate(adapter, sandbox):
    sandbox.set_faults(lost_answers=1)
    [r] = adapter.export([record()])
    assert r.outcome == Outcome.SUCCEEDED and r.action == "insert" and r.sis_id, r.message
    assert sandbox.count() == 1 and len(posts(sandbox)) == 1


def test_an_insert_that_timed_out_is_looked_up_and_left_to_the_core(make_adapter, sandbox):
    sandbox.set_faults(timeouts=1, hang_s=0.6, fault_path="/api/v5/schools/990/InsertStudent")
    adapter = make_adapter(timeout_s=0.3)
    [r] = adapter.export([rec := record()])
    assert r.outcome == Outcome.RETRY and "did not answer" in r.message and sandbox.count() == 0, r.message
    time.sleep(0.5)  # the hung request ends (the sandbox answers 500 without saving)
    assert len(posts(sandbox, "InsertStudent")) == 1
    [again] = adapter.export([rec])
    assert again.outcome == Outcome.SUCCEEDED and sandbox.count() == 1


def test_an_insert_whose_look_up_fails_too_says_it_may_be_saved(adapter, sandbox, monkeypatch):
    sandbox.set_faults(fail_500=1, fault_path="/api/v5/schools/990/InsertStudent")
    monkeypatch.setattr(adapter, "_find_new", lambda p, known: (None, False))
    [r] = adapter.export([record()])
    assert r.outcome == Outcome.FAILED and "may or may not have been saved" in r.message
    assert len(posts(sandbox, "InsertStudent")) == 1


def test_a_503_without_retry_after_on_insert_is_looked_up(adapter, sandbox):
    sandbox.set_faults(burst_503=1, fault_path="/api/v5/schools/990/InsertStudent")  # no Retry-After
    [r] = adapter.export([rec := record()])
    assert r.outcome == Outcome.RETRY and sandbox.count() == 0
    assert [p["status"] for p in posts(sandbox)] == [503], "a bare 503 may come after the SIS took it"
    assert adapter.export([rec])[0].outcome == Outcome.SUCCEEDED and sandbox.count() == 1


def test_updates_are_retried_by_the_transport(adapter, sandbox):
    [first] = adapter.export([rec := record()])
    sandbox.set_faults(fail_500=2, fault_path="/api/v5/UpdateStudent")
    [r] = adapter.export([ExportRecord(rec.record_id, rec.payload, sis_id=first.sis_id)])
    assert r.outcome == Outcome.SUCCEEDED
    assert [p["status"] for p in posts(sandbox, "UpdateStudent")] == [500, 500, 200]


def test_retries_give_up_with_a_message(adapter, sandbox):
    [first] = adapter.export([rec := record()])
    sandbox.set_faults(fail_500=10, fault_path="/api/v5/UpdateStudent")
    [r] = adapter.export([ExportRecord(rec.record_id, rec.payload, sis_id=first.sis_id)])
    assert r.outcome == Outcome.FAILED and "Gave up" in r.message and "syncing it again is safe" in r.message
    assert len(posts(sandbox, "UpdateStudent")) == 4


@pytest.mark.parametrize("kind", ["truncated", "html", "empty", "wrong_shape", "missing_keys"])
def test_an_unreadable_write_answer_is_failed_not_succeeded(adapter, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/api/v5/schools/990/InsertStudent")
    [r] = adapter.export([rec := record()])
    assert r.outcome == Outcome.FAILED and "may or may not have been saved" in r.message
    [again] = adapter.export([rec])
    assert again.outcome == Outcome.SUCCEEDED and sandbox.count() == 1


def test_an_unreadable_roster_sends_nothing(adapter, sandbox):
    sandbox.set_faults(malformed=1, malformed_kind="wrong_shape", fault_path="/api/v5/schools/991/students")
    results = adapter.export([record(), record()])
    assert all(r.errors[0].code == "LOOKUP_FAILED" for r in results) and not posts(sandbox)


def test_the_roster_is_read_in_pages(make_adapter, sandbox):
    sandbox.seed(120, seed=5)
    adapter = make_adapter(page_size=25)
    [r] = adapter.export([record()])
    assert r.outcome == Outcome.SUCCEEDED
    reads = [q for q in sandbox.requests() if q["path"] == "/api/v5/schools/990/students"]
    assert len(reads) >= 2 and "StartingRecord=26&EndingRecord=50" in reads[1]["query"]


def test_a_dripping_answer_is_read_whole(adapter, sandbox):
    sandbox.set_faults(drip=3, drip_ms=5, drip_bytes=512)
    [r] = adapter.export([record()])
    assert r.outcome == Outcome.SUCCEEDED


def test_no_secret_in_results_messages_or_logs(make_adapter, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    sandbox.set_faults(fail_500=2, burst_429=1, reject_last_names=["Refused"])
    a = make_adapter()
    results = a.export([record(), record(LastName="Refused")]) + make_adapter(certificate=WRONG_CERT).export([record()])
    a.check_connection()
    text = repr(results) + caplog.text
    assert sandbox.cert not in text and WRONG_CERT not in text


def test_match_key_normalises_names():
    assert match_key("O'Brien-Díaz ", "ANA", "2017-03-14T00:00:00") == match_key("obrien diaz", "Ana", "2017-03-14")
    assert match_key("", "Ana", "2017-03-14") is None


def test_a_twin_is_not_the_same_child_but_a_corrected_record_is(adapter):
    twin = [{"FirstName": "Sam", "LastName": "Lee", "Birthdate": "2016-05-05T00:00:00"}]
    assert adapter._identity_conflict({"FirstName": "Max", "LastName": "Lee", "BirthDate": "2016-05-05"}, twin)
    assert adapter._identity_conflict({"FirstName": "Sam", "LastName": "Lee", "BirthDate": "2016-05-06"}, twin) is None
    assert adapter._identity_conflict({"FirstName": "Sam", "LastName": "Lee-Park", "BirthDate": "2016-05-05"},
                                      twin) is None
    assert adapter._identity_conflict({"FirstName": "Sam", "LastName": "Kim", "BirthDate": "2017-01-01"}, twin)
    assert adapter._identity_conflict({"MiddleName": "Jo"}, twin) is None, "nothing to compare"


def test_a_failing_roster_page_is_retried(make_adapter, sandbox):
    sandbox.seed(80, seed=6)
    sandbox.set_faults(page_error_at=21)
    [r] = make_adapter(page_size=20).export([record()])
    assert r.outcome == Outcome.SUCCEEDED
    statuses = [q["status"] for q in sandbox.requests() if "StartingRecord=21&" in q["query"]]
    assert 500 in statuses and statuses[-1] == 200


def test_a_student_renamed_by_hand_in_aeries_is_still_updated(adapter, sandbox):
    import httpx

    [first] = adapter.export([rec := record()])
    httpx.post(sandbox.url + f"/sandbox/students/{first.sis_id}/change", json={"fields": {"LastName": "Married"}})
    [r] = adapter.export([ExportRecord(rec.record_id, rec.payload, sis_id=first.sis_id)])
    assert r.outcome == Outcome.SUCCEEDED and r.sis_id == first.sis_id, "first name and birth date agree"


def test_the_deadline_comes_from_the_settings(make_adapter):
    assert make_adapter(timeout_s=2).transport.deadline_s == 8
    assert make_adapter(timeout_s=2, deadline_s="3").transport.deadline_s == 3


def test_an_insert_answer_too_slow_for_the_deadline_is_looked_up_not_sent_again(make_adapter, sandbox):
    sandbox.set_faults(drip=1, drip_ms=200, drip_bytes=16, fault_path="/api/v5/schools/990/InsertStudent")
    started = time.monotonic()
    [r] = make_adapter(deadline_s=1).export([record()])
    assert time.monotonic() - started < 8
    assert r.outcome == Outcome.SUCCEEDED and r.action == "insert", r.message
    assert sandbox.count() == 1 and len(posts(sandbox, "InsertStudent")) == 1


def test_busy_writes_end_in_retry_and_reads_are_not_busy(adapter, sandbox):
    sandbox.set_faults(busy_writes=4, retry_after="0")
    [r] = adapter.export([rec := record()])
    assert r.outcome == Outcome.RETRY and "busy" in r.message and sandbox.count() == 0
    assert [p["status"] for p in posts(sandbox)] == [503] * 4
    [again] = adapter.export([rec])
    assert again.outcome == Outcome.SUCCEEDED and sandbox.count() == 1
