"""The PowerSchool adapter against the sandbox over a real socket."""
from __future__ import annotations

import logging

import pytest

from enroll_sync import ExportRecord, Outcome, nest
from ps_helpers import next_local_id, payload, record
from sis_powerschool.adapter import PowerSchoolAdapter


def by_id(results):
    return {r.record_id: r for r in results}


def posts(sandbox):
    return [r for r in sandbox.requests() if r["method"] == "POST" and r["path"] == "/ws/v1/student"]


def lookups(sandbox):
    return [r for r in sandbox.requests() if r["path"].startswith("/ws/v1/district/student")]


# ----------------------------------------------------------------------------- settings and check

def test_settings_schema():
    fields = {f.key: f for f in PowerSchoolAdapter.settings_schema()}
    assert list(fields) == ["server_url", "client_id", "client_secret", "batch_size",
                            "min_interval_ms", "timeout_s", "deadline_s", "match_existing"]
    assert fields["deadline_s"].default is None, "blank: a few times the timeout"
    assert fields["client_secret"].type == "secret" and fields["client_secret"].default is None
    assert fields["match_existing"].type == "boolean" and fields["match_existing"].default is True
    assert fields["server_url"].type == "url" and fields["server_url"].required
    assert "environment" not in fields


def test_check_connection_reports_version_district_and_page_size(adapter):
    result = adapter.check_connection()
    assert result.ok, result.message
    assert "24.7.0.0.sandbox" in result.message and "Sandbox Unified School District" in result.message
    assert result.details["Students per page (max)"] == "500"


def test_check_connection_bad_credentials(make_adapter, sandbox):
    result = make_adapter(client_secret="not-the-secret-42").check_connection()
    assert not result.ok
    assert "client ID or client secret" in result.message
    assert "not-the-secret-42" not in result.message and sandbox.client_secret not in result.message


def test_check_connection_unreachable_and_wrong_url(make_adapter, sandbox):
    result = make_adapter(server_url="http://127.0.0.1:9", max_attempts=1).check_connection()
    assert not result.ok and "Could not reach 127.0.0.1:9" in result.message
    result = make_adapter(server_url=sandbox.url + "/not-powerschool").check_connection()
    assert not result.ok and "check the server URL" in result.message
    result = make_adapter(server_url="").check_connection()
    assert not result.ok and "server URL is not set" in result.message
    result = make_adapter(server_url="district.powerschool.com").check_connection()
    assert not result.ok and "https://" in result.message


def test_check_connection_tls_error(make_adapter, sandbox):
    result = make_adapter(server_url=sandbox.url.replace("http://", "https://")).check_connection()
    assert not result.ok and result.message.startswith("TLS error")


def test_check_connection_names_fields_without_access(make_adapter, sandbox):
    sandbox.set_faults(denied_fields=["students.dob", "students.gender"])
    result = make_adapter().check_connection()
    assert not result.ok
    assert "no access to: students.dob, students.gender" in result.message


# ----------------------------------------------------------------------------- target fields

def test_target_fields(adapter):
    sections = {s.key: s for s in adapter.target_fields()}
    fields = {f.key: f for s in sections.values() for f in s.fields}
    assert {"name", "demographics", "addresses.physical", "addresses.mailing", "contact",
            "contact_info", "phones", "school_enrollment", "initial_enrollment",
            "schedule_setup"} <= set(sections)
    assert fields["name.first_name"].required and fields["name.first_name"].max_length == 50
    assert fields["local_id"].required and fields["local_id"].type == "integer"
    assert [c.value for c in fields["demographics.gender"].codes] == ["M", "F"]
    assert {c.value for c in fields["school_enrollment.enroll_status"].codes} == {"A", "I", "P", "H"}
    assert {c.value for c in fields["school_enrollment.entry_code"].codes} == {"E1", "E2", "E3", "R1"}
    assert "G" in {c.value for c in fields["school_enrollment.exit_code"].codes}
    schools = {c.value: c.label for c in fields["school_enrollment.school_number"].codes}
    assert schools == {"100": "Lincoln Elementary School", "200": "Washington Middle School",
                       "300": "Roosevelt High School"}
    assert all(f.insert_only for f in sections["school_enrollment"].fields)
    assert not fields["name.first_name"].insert_only
    assert fields["demographics.birth_date"].type == "date"
    ext = sections["_extension_data.u_students_extension"]
    assert [f.key for f in ext.fields] == [
        "_extension_data.u_students_extension.bus_route",
        "_extension_data.u_students_extension.allergies",
        "_extension_data.u_students_extension.photo_release",
        "_extension_data.u_students_extension.enrollment_source"], \
        "NoAccess, BlackListNoAccess and view-only key columns are left out"
    assert fields["_extension_data.u_students_extension.bus_route"].max_length == 20
    assert fields["_extension_data.u_students_extension.photo_release"].type == "boolean"
    assert fields["_extension_data.u_studentsuserfields.siblings_enrolled"].type == "integer"


def test_target_fields_unreachable_raises_an_adapter_error(make_adapter):
    from enroll_sync import AdapterError
    with pytest.raises(AdapterError, match="Could not reach"):
        make_adapter(server_url="http://127.0.0.1:9", max_attempts=1).target_fields()


# ----------------------------------------------------------------------------- preview

def test_preview_insert_is_the_nested_student(adapter):
    rec = record("reg-1", **{"_extension_data.u_students_extension.bus_route": "R9",
                             "_extension_data.u_students_extension.photo_release": True,
                             "name.middle_name": None})
    body = adapter.preview(rec)
    assert body["client_uid"] == "reg-1" and body["action"] == "INSERT" and "id" not in body
    assert body["local_id"] == int(rec.payload["local_id"])
    assert body["name"] == {"first_name": "Ana", "last_name": rec.payload["name.last_name"]}
    assert body["school_enrollment"]["school_number"] == 100
    assert body["school_enrollment"]["grade_level"] == 3
    assert body["_extension_data"] == {"_table_extension": [{
        "recordFound": False, "name": "u_students_extension",
        "_field": [{"name": "bus_route", "type": "String", "value": "R9"},
                   {"name": "photo_release", "type": "Boolean", "value": "true"}]}]}


def test_preview_update_has_the_id_and_no_insert_only_fields(adapter):
    rec = record("reg-2", sis_id="77")
    body = adapter.preview(rec)
    assert body["action"] == "UPDATE" and body["id"] == 77
    assert "school_enrollment" not in body
    assert body["demographics"] == {"gender": "F", "birth_date": "2015-03-04"}


def test_what_is_previewed_is_what_is_sent_and_stored(adapter, sandbox):
    rec = record("reg-3", **{"addresses.physical.street": "1 Main St", "addresses.physical.city": "Fresno",
                             "addresses.physical.state_province": "CA", "addresses.physical.postal_code": "93701"})
    preview = adapter.preview(rec)
    [result] = adapter.export([rec])
    assert result.ok, result.message
    assert result.sent == preview
    [stored] = sandbox.dump()
    assert stored["addresses"]["physical"] == preview["addresses"]["physical"]
    assert stored["name"] == preview["name"]


# ----------------------------------------------------------------------------- export

def test_batches_of_the_configured_size(make_adapter, sandbox):
    adapter = make_adapter(batch_size=2)
    records = [record() for _ in range(5)]
    results = adapter.export(records)
    assert [r.record_id for r in results] == [r.record_id for r in records]
    assert all(r.ok and r.action == "insert" for r in results)
    assert len(posts(sandbox)) == 3
    assert sandbox.count() == 5


def test_single_record_result_object_and_error_object(adapter, sandbox):
    """One student posted -> ``result`` is an object; one error -> ``error`` is an object."""
    [ok] = adapter.export([record("one")])
    assert ok.outcome == Outcome.SUCCEEDED and ok.response["client_uid"] == "one"
    [bad] = adapter.export([record("two", **{"contact.doctor_name": "Dr. Who"})])
    assert bad.outcome == Outcome.FAILED
    assert [(e.field, e.code) for e in bad.errors] == [("contact.doctor_phone", "INCOMPLETE_CONTACT")]
    assert isinstance(bad.response["error_message"]["error"], dict)


def test_partial_batch_failure_with_error_lists(adapter, sandbox):
    good = [record() for _ in range(3)]
    bad = record("bad", **{"name.last_name": None, "addresses.mailing.city": "Fresno"})
    results = by_id(adapter.export([good[0], bad, good[1], good[2]]))
    assert all(results[r.record_id].ok for r in good)
    b = results["bad"]
    assert b.outcome == Outcome.FAILED and b.action == "insert" and b.sis_id is None
    got = {(e.field, e.code) for e in b.errors}
    assert ("name.last_name", "REQUIRED_FIELD_MISSING") in got
    assert ("addresses.mailing.street", "INCOMPLETE_ADDRESS") in got
    assert isinstance(b.response["error_message"]["error"], list)
    assert "last_name is required" in b.message
    assert sandbox.count() == 3
    assert {s["id"] for s in sandbox.dump()} == {int(results[r.record_id].sis_id) for r in good}


def test_rejected_by_a_district_rule(adapter, sandbox):
    sandbox.set_faults(reject_last_names=["Reject"], reject_local_ids=["123"])
    results = by_id(adapter.export([record("a", **{"name.last_name": "Reject"}),
                                    record("b", local_id=123), record("c")]))
    assert not results["a"].ok and results["a"].errors[0].field == "name.last_name"
    assert not results["b"].ok and results["b"].errors[0].field == "local_id"
    assert results["c"].ok


def test_a_record_missing_from_the_answer_is_failed_not_succeeded(adapter, sandbox):
    lost = record("lost")
    sandbox.set_faults(drop_results_for=[lost.payload["local_id"]])
    results = by_id(adapter.export([record("a"), lost, record("b")]))
    assert results["a"].ok and results["b"].ok
    assert results["lost"].outcome == Outcome.FAILED
    assert results["lost"].errors[0].code == "MISSING_RESULT"
    assert "may or may not have been saved" in results["lost"].message


def test_match_before_insert_second_sync_updates(adapter, sandbox):
    records = [record() for _ in range(4)]
    first = by_id(adapter.export(records))
    assert all(r.ok and r.action == "insert" for r in first.values())
    changed = [ExportRecord(r.record_id, {**r.payload, "name.first_name": "Bea"}) for r in records]
    second = by_id(adapter.export(changed))
    assert all(r.ok and r.action == "update" for r in second.values()), [r.message for r in second.values()]
    assert {k: r.sis_id for k, r in second.items()} == {k: r.sis_id for k, r in first.items()}
    assert "matched by local id (local_id)" in second[records[0].record_id].message
    assert all(r.matched_by == "local id" for r in second.values())
    assert all(r.matched_by is None for r in first.values())
    dump = sandbox.dump()
    assert len(dump) == 4, "no duplicate students"
    assert len({s["local_id"] for s in dump}) == 4
    assert all(s["name"]["first_name"] == "Bea" for s in dump)
    assert "school_enrollment" not in second[records[0].record_id].sent


def test_match_of_new_students_costs_one_request_not_one_per_student(adapter, sandbox):
    adapter.export([record() for _ in range(50)])
    searches = lookups(sandbox)
    # one page of the student list (the key snapshot): no student
    # has these Student Numbers, so none is looked up
    assert len(searches) == 1, searches
    assert "local_id" not in "".join(s["query"] for s in searches)
    # the next export reads only the students added since (one page), not the district again
    adapter.export([record() for _ in range(50)])
    again = lookups(sandbox)[1:]
    assert len(again) == 1 and "id%3Dgt%3D" in again[0]["query"], again


def test_a_student_added_by_hand_meanwhile_is_matched_not_duplicated(adapter, sandbox):
    """The key snapshot is brought up to date before every use: a student someone else
    inserts between two exports is seen, by Student Number and by state ID."""
    adapter.export([record() for _ in range(3)])
    lid = next_local_id()
    plain = PowerSchoolAdapter({**adapter.settings, "match_existing": False})
    [by_hand] = plain.export([record("hand", local_id=lid), ])
    [other] = plain.export([record("hand2", state_province_id="CA-9")])
    results = by_id(adapter.export([record("a", local_id=lid), record("b", state_province_id="CA-9")]))
    assert results["a"].action == "update" and results["a"].sis_id == by_hand.sis_id
    assert results["b"].action == "update" and results["b"].sis_id == other.sis_id
    assert sandbox.count() == 5


def test_match_among_many_unrelated_students(make_adapter, sandbox):
    """A sparse range (many unrelated students in it) splits into smaller searches."""
    filler = make_adapter(match_existing=False)
    base = next_local_id()
    for _ in range(120):
        next_local_id()
    assert all(r.ok for r in filler.export([record(local_id=base + i) for i in range(1, 120)]))
    adapter = make_adapter()
    adapter._page_size = 10
    ours = [record("x", local_id=base), record("y", local_id=base + 60), record("z", local_id=base + 200)]
    results = by_id(adapter.export(ours))
    assert results["x"].action == "insert" and results["z"].action == "insert"
    assert results["y"].action == "update", "base+60 existed already"
    assert sandbox.count() == 121


def test_match_by_state_id_keeps_powerschools_local_id(make_adapter, sandbox):
    adapter = make_adapter()
    [old] = adapter.export([record("old", state_province_id="CA-77")])
    new = record("new", state_province_id="CA-77", **{"name.first_name": "Bea"})
    [res] = adapter.export([new])
    assert res.ok and res.action == "update" and res.sis_id == old.sis_id
    assert "state_province_id" in res.message
    assert "local_id" not in res.sent
    [stored] = sandbox.dump()
    assert str(stored["local_id"]) == old.sent["local_id"].__str__()
    assert stored["name"]["first_name"] == "Bea"


def test_ambiguous_state_id_is_not_guessed(make_adapter, sandbox):
    plain = make_adapter(match_existing=False)
    plain.export([record(state_province_id="DUP1"), record(state_province_id="DUP1")])
    [res] = make_adapter().export([record("r", state_province_id="DUP1")])
    assert not res.ok and res.errors[0].code == "AMBIGUOUS_MATCH"
    assert "2 PowerSchool students share state ID DUP1" in res.message
    assert sandbox.count() == 2


def test_without_matching_a_repeat_is_refused_by_powerschool(make_adapter, sandbox):
    adapter = make_adapter(match_existing=False)
    records = [record() for _ in range(2)]
    adapter.export(records)
    again = adapter.export(records)
    assert all(not r.ok and r.errors[0].code == "INVALID_LOCAL_ID" for r in again)
    assert lookups(sandbox) == [], "no lookups when matching is off"
    assert sandbox.count() == 2


def test_a_known_sis_id_updates_without_lookups(adapter, sandbox):
    [first] = adapter.export([record("k")])
    sandbox.clear_requests()
    [res] = adapter.export([ExportRecord("k", {"name.first_name": "Cy"}, sis_id=first.sis_id)])
    assert res.ok and res.action == "update" and res.sis_id == first.sis_id
    assert lookups(sandbox) == []
    assert sandbox.dump()[0]["name"]["first_name"] == "Cy"


def test_lost_answer_then_retry_updates_instead_of_duplicating(adapter, sandbox):
    """The SIS saved the batch but the answer was lost (500): the transport retries the POST,
    PowerSchool answers INVALID_LOCAL_ID, the adapter finds the students and updates them."""
    records = [record() for _ in range(3)]
    sandbox.set_faults(lost_answers=1)
    results = by_id(adapter.export(records))
    assert all(r.ok for r in results.values()), [r.message for r in results.values()]
    assert all(r.action == "update" for r in results.values())
    assert sandbox.count() == 3
    assert [r["status"] for r in posts(sandbox)] == [500, 200, 200]


def test_extension_fields_are_sent_and_stored(adapter, sandbox):
    rec = record(**{"_extension_data.u_students_extension.bus_route": "R2",
                    "_extension_data.u_studentsuserfields.home_language": "Spanish"})
    [res] = adapter.export([rec])
    assert res.ok, res.message
    assert sandbox.dump()[0]["extensions"] == {"u_students_extension": {"bus_route": "R2"},
                                               "u_studentsuserfields": {"home_language": "Spanish"}}
    [again] = adapter.export([rec])
    tables = again.sent["_extension_data"]["_table_extension"]
    assert all(t["recordFound"] for t in tables), "matched student has the rows already"


# ----------------------------------------------------------------------------- transport through the adapter

def test_token_refresh_during_export(adapter, sandbox):
    assert adapter.export([record()])[0].ok
    sandbox.set_faults(revoke_tokens=True)
    assert adapter.export([record()])[0].ok
    assert sum(1 for r in sandbox.requests() if r["path"] == "/oauth/access_token") == 2


@pytest.mark.parametrize("retry_after", [None, "0"])
def test_429_during_export(adapter, sandbox, retry_after):
    sandbox.set_faults(burst_429=2, retry_after=retry_after, fault_path="/ws/v1/student")
    results = adapter.export([record(), record()])
    assert all(r.ok for r in results)
    assert [r["status"] for r in posts(sandbox)] == [429, 429, 200]


def test_500s_exhausted_fail_that_batch_only(make_adapter, sandbox):
    adapter = make_adapter(batch_size=2, max_attempts=3)
    records = [record() for _ in range(4)]
    adapter.check_connection()
    sandbox.set_faults(fail_500=3, fault_path="/ws/v1/student")
    results = adapter.export(records)
    assert [r.ok for r in results] == [False, False, True, True]
    msg = results[0].message
    assert "after 3 attempts" in msg and "HTTP 500" in msg and "safe" in msg
    assert [r["status"] for r in posts(sandbox)] == [500, 500, 500, 200]
    assert sandbox.count() == 2


def test_timeouts_during_export_are_retried(make_adapter, sandbox):
    adapter = make_adapter(timeout_s=0.25)
    adapter.check_connection()
    sandbox.set_faults(timeouts=1, hang_s=0.6, fault_path="/ws/v1/student")
    [res] = adapter.export([record()])
    assert res.ok, res.message
    assert sandbox.count() == 1


def test_unreachable_fails_every_record_quickly(make_adapter):
    adapter = make_adapter(server_url="http://127.0.0.1:9", max_attempts=2, batch_size=1)
    results = adapter.export([record(), record(), record()])
    assert len(results) == 3 and not any(r.ok for r in results)
    assert all("Could not reach" in r.message for r in results)


def test_unreadable_answer_fails_the_batch(adapter, sandbox):
    adapter.check_connection()
    sandbox.set_faults(malformed=1, fault_path="/ws/v1/student")
    results = adapter.export([record(), record()])
    assert all(r.errors[0].code == "MALFORMED_RESPONSE" for r in results)


def test_no_field_access_fails_the_batch_with_the_fields(adapter, sandbox):
    sandbox.set_faults(denied_fields=["students.dob"])
    results = adapter.export([record(), record()])
    assert all(not r.ok for r in results)
    assert "no access to: students.dob" in results[0].message
    assert results[0].errors[0].field == "students.dob"


def test_min_interval_setting_respects_the_sis_throttle(make_adapter, sandbox):
    sandbox.set_faults(min_interval_ms=20)
    adapter = make_adapter(min_interval_ms=120, batch_size=1)  # a margin that survives a loaded machine
    assert all(r.ok for r in adapter.export([record() for _ in range(3)]))
    assert all(r["status"] != 429 for r in sandbox.requests())


def test_secrets_never_appear_in_results_messages_or_logs(make_adapter, sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    adapter = make_adapter()
    adapter.check_connection()
    sandbox.set_faults(burst_429=1, fail_500=1, fault_path="/ws/")
    results = adapter.export([record(), record("bad", **{"name.first_name": None})])
    sandbox.set_faults(revoke_tokens=True)
    results += adapter.export([record()])
    bad = make_adapter(client_secret="wrong-secret-zz9")
    results += bad.export([record()])
    checks = [adapter.check_connection(), bad.check_connection()]
    secrets = [sandbox.client_secret, "wrong-secret-zz9", *adapter.transport.secrets,
               *bad.transport.secrets]
    text = repr([(r.message, r.errors, r.sent, r.response) for r in results])
    text += repr(checks) + "\n".join(r.getMessage() for r in caplog.records)
    for s in secrets:
        if s:
            assert s not in text
    assert "client ID or client secret" in results[-1].message
