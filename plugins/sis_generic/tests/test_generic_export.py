"""Export over a real socket: insert, upsert, update by id, schema validation before
sending, problem details, plain error bodies, non-JSON answers, retries and the
statuses that must not be retried."""
from __future__ import annotations

import json
import time

import pytest

from enroll_sync import ExportRecord, Outcome
from enroll_sync.testing import results_by_record
from generic_helpers import person, student
from sis_generic import GenericRestAdapter

POST_STUDENTS = ("POST", "/data/v3/ed-fi/students")


def test_insert_then_reexport_upserts_without_duplicates(edfi, server):
    records = [student(), student()]
    first = results_by_record(records, edfi.export(records))
    assert [r.outcome for r in first.values()] == [Outcome.SUCCEEDED] * 2
    assert all(r.action == "insert" and r.sis_id for r in first.values())
    stored = {s["id"]: s for s in server.dump()["students"]}
    assert set(stored) == {r.sis_id for r in first.values()}
    assert stored[first[records[0].record_id].sis_id]["gradeLevel"] == 3  # "3" sent as a number

    # the same students again, without SIS ids (as after a crash), one with a new name
    again = [ExportRecord(r.record_id, {**r.payload, "firstName": "Renamed"}) for r in records]
    second = results_by_record(again, edfi.export(again))
    assert all(r.outcome == Outcome.SUCCEEDED and r.action == "update" for r in second.values())
    assert {k: r.sis_id for k, r in second.items()} == {k: r.sis_id for k, r in first.items()}
    students = server.dump()["students"]
    assert len(students) == 2
    assert {s["firstName"] for s in students} == {"Renamed"}


def test_preview_is_exactly_what_is_sent_and_stored(edfi, server):
    record = student(middleName=None, **{"birthData.birthCity": "Fresno", "addresses.0.apartmentRoomSuiteNumber": ""})
    body = edfi.preview(record)
    assert "middleName" not in body and "apartmentRoomSuiteNumber" not in body["addresses"][0]
    assert body["birthData"] == {"birthCity": "Fresno"} and body["gradeLevel"] == 3
    [result] = edfi.export([record])
    assert result.ok and result.sent == body
    [stored] = server.dump()["students"]
    assert {k: v for k, v in stored.items() if k not in ("id", "_etag", "_lastModifiedDate")} == body


def test_update_operation_puts_by_id(make_adapter, server):
    adapter = make_adapter(update_operation="PUT /data/v3/ed-fi/students/{id}")
    [created] = adapter.export([student(7)])
    assert created.action == "insert"
    changed = student(7, lastSurname="Moreno")
    [updated] = adapter.export([ExportRecord(changed.record_id, changed.payload, sis_id=created.sis_id)])
    assert updated.outcome == Outcome.SUCCEEDED and updated.action == "update"
    assert updated.sis_id == created.sis_id
    assert server.count("PUT", f"/data/v3/ed-fi/students/{created.sis_id}") == 1
    [stored] = server.dump()["students"]
    assert stored["lastSurname"] == "Moreno"

    # a stale SIS id: NOT_FOUND, nothing created (the core sends it again without the id)
    [gone] = adapter.export([ExportRecord("reg-x", student(8).payload, sis_id="deadbeef")])
    assert gone.outcome == Outcome.NOT_FOUND and gone.sis_id is None
    assert "no record with id deadbeef any more" in gone.message and "HTTP 404" in gone.message
    assert len(server.dump()["students"]) == 1


def test_invalid_record_is_reported_with_schema_messages_and_never_sent(edfi, server):
    bad = student(firstName="X" * 80, birthDate="2015-13-45", sexDescriptor="F", lastSurname="<drop>",
                  **{"addresses.0.city": "C" * 31})
    good = student()
    results = results_by_record([bad, good], edfi.export([bad, good]))
    failed = results[bad.record_id]
    assert failed.outcome == Outcome.FAILED and failed.sent is None
    by_field = {e.field: e for e in failed.errors}
    assert set(by_field) == {"firstName", "birthDate", "sexDescriptor", "lastSurname", "addresses.0.city"}
    assert "is too long" in by_field["firstName"].message
    assert "is not a 'date'" in by_field["birthDate"].message
    assert "is not one of" in by_field["sexDescriptor"].message
    assert "required" in by_field["lastSurname"].message
    assert failed.message.startswith("Not sent: the record does not match the SIS schema")
    assert results[good.record_id].outcome == Outcome.SUCCEEDED
    # only the valid record reached the server
    assert server.count(*POST_STUDENTS) == 1
    assert [s["studentUniqueId"] for s in server.dump()["students"]] == [good.payload["studentUniqueId"]]


def test_problem_details_map_to_fields(edfi, server):
    future = student(birthDate="2999-01-01", **{"addresses.0.postalCode": "ABCDE"})
    [result] = edfi.export([future])
    assert result.outcome == Outcome.FAILED
    assert {e.field: e.message for e in result.errors} == {
        "birthDate": "Birth date cannot be in the future.",
        "addresses.0.postalCode": "Postal code must be a 5-digit ZIP code (or ZIP+4)."}
    assert "HTTP 400" in result.message and "Data validation failed" in result.message
    assert result.response["body"]["type"] == "urn:ed-fi:api:bad-request:data-validation-failed"
    assert server.dump()["students"] == []


@pytest.mark.parametrize("status, words", [
    (409, "conflict in the SIS (HTTP 409): The referenced 'School' resource does not exist"),
    (412, "changed in the SIS meanwhile (HTTP 412): The resource item has been modified by another user"),
])
def test_409_and_412_are_reported_not_retried(edfi, server, status, words):
    server.set_faults({"status": status, "method": "POST", "path": "/data/v3/ed-fi/students"})
    first, second = student(), student()
    results = results_by_record([first, second], edfi.export([first, second]))
    assert results[first.record_id].outcome == Outcome.FAILED
    assert words in results[first.record_id].message
    assert "Not retried" in results[first.record_id].message
    assert results[second.record_id].outcome == Outcome.SUCCEEDED  # the next record still goes
    assert server.count(*POST_STUDENTS) == 2, "the refused request must not be repeated"
    assert len(server.dump()["students"]) == 1


def test_busy_sis_is_retried_honouring_retry_after(edfi, server):
    server.set_faults({"status": 429, "retry_after": "0", "times": 1},
                      {"status": 503, "retry_after": "0", "times": 1})
    [result] = edfi.export([student()])
    assert result.outcome == Outcome.SUCCEEDED and result.action == "insert"
    assert [r[2] for r in server.requests(*POST_STUDENTS)] == [429, 503, 201]
    assert len(server.dump()["students"]) == 1


def test_500_storm_fails_clearly_after_bounded_retries(edfi, server):
    server.set_faults({"status": 500, "times": None})
    records = [student() for _ in range(4)]
    started = time.monotonic()
    results = results_by_record(records, edfi.export(records))
    assert time.monotonic() - started < 5
    assert all(r.outcome == Outcome.FAILED for r in results.values())
    first = results[records[0].record_id]
    assert "Gave up on POST /data/v3/ed-fi/students after 3 attempts" in first.message
    assert "HTTP 500" in first.message and "not marked as synced" in first.message
    # after two records gave up, the rest are held back instead of hammering the SIS
    held = results[records[3].record_id]
    assert held.message.startswith("Not sent: held back because the SIS failed for an earlier record")
    assert server.count(*POST_STUDENTS) == 6  # 2 records x 3 attempts, bounded
    server.set_faults()
    assert server.dump()["students"] == []


def test_non_json_answers_are_not_marked_synced(edfi, server):
    server.set_faults({"status": 200, "body": "<html><body><h1>Sign in</h1></body></html>",
                       "content_type": "text/html"},
                      {"status": 400, "body": "upstream said no", "content_type": "text/plain"})
    first, second = student(), student()
    results = results_by_record([first, second], edfi.export([first, second]))
    a, b = results[first.record_id], results[second.record_id]
    assert a.outcome == Outcome.FAILED and not a.sis_id
    assert "not JSON (text/html: “Sign in”)" in a.message and "not marked as synced" in a.message
    assert b.outcome == Outcome.FAILED
    assert "HTTP 400" in b.message and "upstream said no" in b.message


def test_json_schema_configuration_reads_id_from_body_pointer_and_updates(people_settings, server):
    with GenericRestAdapter(people_settings()) as adapter:
        rec = person(1, siblings="2")
        [created] = adapter.export([rec])
        assert created.outcome == Outcome.SUCCEEDED and created.action == "insert"
        assert created.sis_id == "1"  # from /data/id
        assert server.dump()["people"][0]["siblings"] == 2

        # known SIS id -> PUT /api/v1/people/1
        [updated] = adapter.export([ExportRecord(rec.record_id, {**rec.payload, "familyName": "Kim"},
                                                 sis_id="1")])
        assert updated.outcome == Outcome.SUCCEEDED and updated.action == "update" and updated.sis_id == "1"
        assert [p["familyName"] for p in server.dump()["people"]] == ["Kim"]

        # this API does not upsert: without the id the SIS reports a duplicate (plain error body)
        [dup] = adapter.export([rec])
        assert dup.outcome == Outcome.FAILED
        assert "HTTP 409" in dup.message and "already exists (id 1)" in dup.message
        assert len(server.dump()["people"]) == 1

        # a plain {"message", "errors": {field: [...]}} body maps to fields
        [taken] = adapter.export([person(2, **{"contact.email": "lee1@example.org"})])
        assert taken.outcome == Outcome.FAILED
        assert [(e.field, e.message) for e in taken.errors] == [("contact.email", "has already been taken")]
        assert "Validation failed" in taken.message


def test_array_mode_sends_batches_and_reads_each_item(people_settings, server):
    settings = people_settings(request_mode="array", batch_size=2, update_operation="",
                               create_operation="POST /api/v1/people/batch")
    with GenericRestAdapter(settings) as adapter:
        assert adapter.batch_size == 2  # the core hands export() a few such batches at a time
        records = [person(1), person(2), person(3, givenName="G" * 60)]
        assert adapter.preview(records[0]) == [{"externalId": "P1", "givenName": "Lee1",
                                                "familyName": "Park", "grade": "K",
                                                "contact": {"email": "lee1@example.org"}}]
        results = results_by_record(records, adapter.export(records))
        assert results["person-1"].outcome == Outcome.SUCCEEDED and results["person-1"].sis_id == "1"
        assert results["person-2"].sis_id == "2"
        assert results["person-3"].outcome == Outcome.FAILED  # too long: never sent
        assert server.count("POST", "/api/v1/people/batch") == 1  # 2 valid records, batch size 2

        # a duplicate inside a batch fails alone; its neighbour succeeds
        again = [person(1), person(4)]
        results = results_by_record(again, adapter.export(again))
        assert results["person-1"].outcome == Outcome.FAILED and "HTTP 409" in results["person-1"].message
        assert results["person-4"].outcome == Outcome.SUCCEEDED and results["person-4"].sis_id == "3"
    assert sorted(p["externalId"] for p in server.dump()["people"]) == ["P1", "P2", "P4"]


def test_schema_problem_fails_every_record_without_sending(make_adapter, server):
    adapter = make_adapter(schema_url="/metadata/broken/invalid.json")
    records = [student(), student()]
    results = results_by_record(records, adapter.export(records))
    for r in results.values():
        assert r.outcome == Outcome.FAILED
        assert r.message.startswith("Not sent: The schema at") and "is not valid JSON" in r.message
    assert server.count(*POST_STUDENTS) == 0


def test_export_of_nothing_and_result_order(edfi):
    assert edfi.export([]) == []
    records = [student(), student(firstName="<drop>"), student()]
    results = edfi.export(records)
    assert [r.record_id for r in results] == [r.record_id for r in records]
    assert [r.outcome for r in results] == [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.SUCCEEDED]


def test_values_without_a_json_type_are_sent_as_text(edfi, server):
    import datetime as dt
    import decimal
    record = student(birthDate=dt.date(2014, 9, 30), gradeLevel=decimal.Decimal("2"))
    assert edfi.preview(record)["birthDate"] == "2014-09-30"
    [result] = edfi.export([record])
    assert result.ok, result.message
    [stored] = server.dump()["students"]
    assert (stored["birthDate"], stored["gradeLevel"]) == ("2014-09-30", 2)


def test_a_schema_that_cannot_check_records_fails_them_clearly(make_adapter, server):
    doc = {"type": "object", "required": ["studentUniqueId"],
           "properties": {"studentUniqueId": {"type": "string", "pattern": "["}}}
    adapter = make_adapter(schema_source="json_schema_text", schema_text=json.dumps(doc))
    [result] = adapter.export([student()])
    assert result.outcome == Outcome.FAILED
    assert result.message.startswith("Not sent: The SIS schema cannot be used to check records")
    assert server.count(*POST_STUDENTS) == 0


def test_array_answer_that_does_not_confirm_each_record_fails_them(people_settings, server):
    """POST /api/v1/people/bulk stores the people but answers only 202 {"accepted": n}."""
    settings = people_settings(request_mode="array", create_operation="POST /api/v1/people/bulk")
    records = [person(1), person(2)]
    with GenericRestAdapter(settings) as adapter:
        results = results_by_record(records, adapter.export(records))
    for r in results.values():
        assert r.outcome == Outcome.FAILED and r.sis_id is None and r.action is None
        assert r.message == (
            "Not synced: the SIS accepted the request (HTTP 202) but did not confirm this record "
            "(its answer is not a list with one item per record), so it is not marked as synced. "
            "Check in the SIS whether it was saved. A retry may create a duplicate unless Find "
            "existing record is set, so check in the SIS before syncing it again.")
        assert r.sent is not None and r.response["body"] == {"accepted": 2}
    assert len(server.dump()["people"]) == 2  # why the message says to check

    # with Find existing record, syncing them again finds and updates what was saved
    with GenericRestAdapter({**settings, "lookup_operation": "GET /api/v1/people?externalId={externalId}"}) as adapter:
        again = results_by_record(records, adapter.export(records))
        assert {(r.outcome, r.action, r.sis_id) for r in again.values()} == {
            (Outcome.SUCCEEDED, "update", "1"), (Outcome.SUCCEEDED, "update", "2")}
        # and an unconfirmed batch now says a retry is safe
        [new] = adapter.export([person(3)])
        assert new.outcome == Outcome.FAILED
        assert new.message.endswith("Syncing again is safe: Find existing record will find it and "
                                    "update it if the SIS saved it.")
    assert len(server.dump()["people"]) == 3


def test_an_empty_2xx_answer_to_a_batch_confirms_nothing(people_settings, server):
    settings = people_settings(request_mode="array", create_operation="POST /api/v1/people/batch")
    server.set_faults({"status": 204, "body": "", "path": "/api/v1/people/batch"})
    with GenericRestAdapter(settings) as adapter:
        [r] = adapter.export([person(1)])
    assert r.outcome == Outcome.FAILED
    assert "accepted the request (HTTP 204) but did not confirm this record (its answer is empty)" in r.message


def test_nan_and_infinity_are_not_sent(people_settings, server):
    import decimal
    records = [person(1, siblings=float("nan")), person(2, siblings=decimal.Decimal("Infinity")),
               person(3, siblings="1e999"), person(4, siblings=2.0)]
    with GenericRestAdapter(people_settings()) as adapter:
        results = results_by_record(records, adapter.export(records))
    assert results["person-1"].outcome == Outcome.FAILED and results["person-1"].sent is None
    assert results["person-1"].message == (
        "Not sent: siblings is nan, which is not a number the SIS can be sent (JSON has no NaN or "
        "infinity); fix the value or its mapping.")
    assert results["person-2"].message.startswith("Not sent: siblings is Infinity, which is not a number")
    # text that overflows a float stays text, and the schema check says so
    assert results["person-3"].outcome == Outcome.FAILED
    assert [(e.field, e.message) for e in results["person-3"].errors] == [
        ("siblings", "'1e999' is not of type 'integer'")]
    assert results["person-4"].outcome == Outcome.SUCCEEDED
    assert [p["externalId"] for p in server.dump()["people"]] == ["P4"]


def test_a_number_mapped_to_a_text_field_is_sent_as_text(edfi, server):
    """A form id (an int) mapped to the natural key (a string in the schema)."""
    record = student(studentUniqueId=100042)
    assert edfi.preview(record)["studentUniqueId"] == "100042"
    [result] = edfi.export([record])
    assert result.ok, result.message
    assert server.dump()["students"][0]["studentUniqueId"] == "100042"
