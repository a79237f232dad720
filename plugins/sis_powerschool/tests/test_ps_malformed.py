"""Malformed SIS answers (the sandbox's ``malformed`` fault) end in a clear failure,
never in an exception out of the adapter."""
from __future__ import annotations

import json

import pytest

from enroll_sync import AdapterError, Outcome
from ps_helpers import record
from sis_powerschool.sandbox import MALFORMED_KINDS

#: kinds whose body cannot be read as the answer it replaces
UNREADABLE = [k for k in MALFORMED_KINDS if k not in ("disconnect", "missing_keys")]
NOT_POWERSCHOOL = "check the server URL"


def student_posts(sandbox):
    return [r for r in sandbox.requests()
            if r["method"] == "POST" and r["path"] == "/ws/v1/student"]


# ----------------------------------------------------------------------------- check connection

@pytest.mark.parametrize("path", ["/ws/v1/metadata", "/ws/v1/district",
                                  "/ws/v1/district/student/count"])
@pytest.mark.parametrize("kind", UNREADABLE)
def test_check_connection_names_an_unreadable_answer(adapter, sandbox, path, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path=path)
    check = adapter.check_connection()
    assert not check.ok
    assert path in check.message and NOT_POWERSCHOOL in check.message, check.message


def test_check_connection_with_empty_objects_reports_unknowns(adapter, sandbox):
    sandbox.set_faults(malformed=1, malformed_kind="missing_keys", fault_path="/ws/v1/metadata")
    check = adapter.check_connection()
    assert check.ok and check.details["PowerSchool version"] == "unknown"


def test_check_connection_with_a_broken_page_size_does_not_use_it(adapter, sandbox):
    sandbox.set_faults(malformed=1, fault_path="/ws/v1/metadata", malformed_body=json.dumps(
        {"metadata": {"powerschool_version": "24.7", "student_max_page_size": "²"}}))
    assert adapter.check_connection().ok
    assert adapter.page_size() == 500, "read again from the next metadata answer"


# ----------------------------------------------------------------------------- target fields

@pytest.mark.parametrize("kind", UNREADABLE)
def test_target_fields_unreadable_listing_is_an_adapter_error(adapter, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/ws/v1/district/student")
    with pytest.raises(AdapterError) as err:
        adapter.target_fields()
    assert NOT_POWERSCHOOL in str(err.value)


def test_target_fields_survive_odd_extension_columns(adapter, sandbox):
    sandbox.set_faults(malformed=1, fault_path="/ws/schema/table/u_students_extension",
                       malformed_body=json.dumps({"name": "U_STUDENTS_EXTENSION", "columns": [
                           {"name": "bus_route", "type": "String", "length": "²",
                            "access": ["FullAccess"]},
                           "not a column",
                           {"name": "allergies", "type": ["String"], "length": {"n": 1}}]}))
    sections = {s.key: s for s in adapter.target_fields()}
    ext = {f.key: f for f in sections["_extension_data.u_students_extension"].fields}
    assert set(ext) == {"_extension_data.u_students_extension.bus_route",
                        "_extension_data.u_students_extension.allergies"}
    assert all(f.max_length is None for f in ext.values())
    assert "_extension_data.u_studentsuserfields" in sections, "the other table is unaffected"


@pytest.mark.parametrize("kind", UNREADABLE)
def test_target_fields_skip_an_unreadable_extension_table(adapter, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind,
                       fault_path="/ws/schema/table/u_students_extension")
    keys = {s.key for s in adapter.target_fields()}
    assert "_extension_data.u_students_extension" not in keys
    assert "_extension_data.u_studentsuserfields" in keys


# ----------------------------------------------------------------------------- export: lookups

@pytest.mark.parametrize("kind", [*UNREADABLE, "missing_keys"])
def test_unreadable_count_fails_the_export_clearly(adapter, sandbox, kind):
    from sis_powerschool.adapter import PowerSchoolAdapter
    records = [record() for _ in range(3)]
    # PowerSchool has these students already, so the key snapshot cannot rule them out and
    # they are looked up: 3 ids, one range count
    PowerSchoolAdapter({**adapter.settings, "match_existing": False}).export(records)
    adapter.check_connection()
    sandbox.clear_requests()
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/ws/v1/district/student/count")
    results = adapter.export(records)
    assert [r.outcome for r in results] == [Outcome.FAILED] * 3
    assert all(r.errors[0].code == "LOOKUP_FAILED" for r in results)
    assert "/count" in results[0].message and NOT_POWERSCHOOL in results[0].message
    assert student_posts(sandbox) == [] and sandbox.count() == 3
    searches = [r for r in sandbox.requests() if r["path"].startswith("/ws/v1/district/student/count")]
    assert len(searches) == 1, "no request per student after an unreadable count"


@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_snapshot_page_is_never_taken_for_no_match(adapter, sandbox, kind):
    """The page of the student list that would prove no student has these keys is garbled:
    nothing is inserted on the strength of it; each key is then looked up on its own, and
    each student is inserted once."""
    adapter.check_connection()
    sandbox.clear_requests()
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/ws/v1/district/student")
    records = [record() for _ in range(3)]
    results = adapter.export(records)
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED] * 3, [r.message for r in results]
    searches = [r for r in sandbox.requests() if r["path"] == "/ws/v1/district/student" and "q=" in r["query"]]
    assert searches, "the keys were looked up after the unreadable snapshot"
    assert sandbox.count() == 3 and len(student_posts(sandbox)) == 1


@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_search_is_not_taken_for_no_match(adapter, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/ws/v1/district/student")
    [res] = adapter.export([record()])  # one id: searched directly, no count
    assert res.outcome == Outcome.FAILED and res.errors[0].code == "LOOKUP_FAILED"
    assert NOT_POWERSCHOOL in res.message
    assert sandbox.count() == 0, "not inserted on the strength of an unreadable search"


def test_an_empty_search_answer_is_no_match(adapter, sandbox):
    sandbox.set_faults(malformed=1, malformed_body='{"students": ""}',
                       fault_path="/ws/v1/district/student")
    [res] = adapter.export([record()])
    assert res.ok and res.action == "insert"


def test_a_page_size_of_infinity_falls_back(adapter, sandbox):
    sandbox.set_faults(malformed=1, fault_path="/ws/v1/metadata",
                       malformed_body='{"metadata": {"student_max_page_size": Infinity}}')
    [res] = adapter.export([record()])
    assert res.ok, res.message
    assert adapter.page_size() == 100


# ----------------------------------------------------------------------------- export: the answer

@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_batch_answer_fails_the_batch(adapter, sandbox, kind):
    sandbox.set_faults(malformed=1, malformed_kind=kind, fault_path="/ws/v1/student")
    results = adapter.export([record(), record()])
    assert all(r.outcome == Outcome.FAILED for r in results)
    assert all(r.errors[0].code == "MALFORMED_RESPONSE" for r in results)
    assert "may or may not have been saved" in results[0].message
    assert "Syncing again is safe" in results[0].message


def test_an_answer_without_results_fails_each_record(adapter, sandbox):
    sandbox.set_faults(malformed=1, malformed_kind="missing_keys", fault_path="/ws/v1/student")
    results = adapter.export([record(), record()])
    assert [r.errors[0].code for r in results] == ["MISSING_RESULT"] * 2


def test_a_cut_connection_is_retried_then_named(make_adapter, sandbox):
    adapter = make_adapter(max_attempts=2)
    sandbox.set_faults(malformed=1, malformed_kind="disconnect", fault_path="/ws/v1/student")
    assert all(r.ok for r in adapter.export([record(), record()])), "one cut: retried"
    sandbox.set_faults(malformed=2, malformed_kind="disconnect", fault_path="/ws/v1/student")
    results = adapter.export([record(), record()])
    assert all(not r.ok for r in results)
    assert "peer closed connection" in results[0].message
    assert sandbox.count() == 2


def _one_result(sandbox, rid, **item):
    sandbox.set_faults(malformed=1, fault_path="/ws/v1/student", malformed_body=json.dumps(
        {"results": {"insert_count": 1, "result": {"client_uid": rid, **item}}}))


@pytest.mark.parametrize("success_message", [None, {}, {"id": None}, {"id": {"dcid": 7}},
                                             {"id": "seven"}, "7"])
def test_success_without_a_usable_id_is_not_a_silent_success(adapter, sandbox, success_message):
    item = {"status": "SUCCESS", "action": "INSERT"}
    if success_message is not None:
        item["success_message"] = success_message
    _one_result(sandbox, "r1", **item)
    [res] = adapter.export([record("r1")])
    assert res.outcome == Outcome.FAILED and res.errors[0].code == "MISSING_ID"
    assert "did not give its id" in res.message and "safe" in res.message


def test_success_of_an_update_keeps_the_known_id(adapter, sandbox):
    [first] = adapter.export([record("r1", local_id=620001)])
    _one_result(sandbox, "r1", status="SUCCESS", action="UPDATE")
    [again] = adapter.export([record("r1", local_id=620001, sis_id=first.sis_id)])
    assert again.ok and again.sis_id == first.sis_id


@pytest.mark.parametrize("status", [None, "", ["SUCCESS"], "MAYBE"])
def test_a_result_without_a_usable_status(adapter, sandbox, status):
    item = {"action": "INSERT"} if status is None else {"status": status, "action": "INSERT"}
    _one_result(sandbox, "r1", **item)
    [res] = adapter.export([record("r1")])
    assert res.outcome == Outcome.FAILED and res.errors[0].code == "MALFORMED_RESULT"
    assert "may or may not have been saved" in res.message


@pytest.mark.parametrize("error_message", [None, "", "plain text", ["a", {"x": 1}],
                                           {"error": "just a string"},
                                           {"error": [None, 3, {"field": ["x"]}]}])
def test_odd_error_messages_still_explain_a_failure(adapter, sandbox, error_message):
    item = {"status": "ERROR", "action": "INSERT"}
    if error_message is not None:
        item["error_message"] = error_message
    _one_result(sandbox, "r1", **item)
    [res] = adapter.export([record("r1")])
    assert res.outcome == Outcome.FAILED and res.errors and res.message


def test_an_odd_action_does_not_leak_into_the_result(adapter, sandbox):
    _one_result(sandbox, "r1", status="SUCCESS", action=["INSERT"],
                success_message={"id": 4321})
    [res] = adapter.export([record("r1")])
    assert res.ok and res.sis_id == "4321" and res.action == "insert"
