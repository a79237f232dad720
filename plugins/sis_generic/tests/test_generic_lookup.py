""""Find existing record": repeat safety on an API whose create does not upsert (the
test server's people API answers 409 to a second POST of the same externalId).

Matched before insert, used again when creating answers 409, never guessing between
several matches, and never creating a record it could not rule out."""
from __future__ import annotations

import pytest

from enroll_sync import ExportRecord, Outcome
from enroll_sync.testing import results_by_record
from generic_helpers import person
from sis_generic import GenericRestAdapter
from sis_generic.adapter import _found_id

BY_EMAIL = "GET /api/v1/people?email={contact.email}"
BY_EXTERNAL_ID = "GET /api/v1/people?externalId={externalId}"
POST_PEOPLE = ("POST", "/api/v1/people")


def posts(server) -> int:
    return len([r for r in server.requests(*POST_PEOPLE) if r[1] == "/api/v1/people"])


@pytest.fixture
def people(people_settings):
    made = []

    def make(**overrides) -> GenericRestAdapter:
        adapter = GenericRestAdapter(people_settings(**overrides))
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


def test_a_repeat_without_sis_id_updates_the_record_it_finds(people, server):
    adapter = people(lookup_operation=BY_EMAIL)
    records = [person(1), person(2)]
    first = results_by_record(records, adapter.export(records))
    assert [(r.outcome, r.action, r.sis_id) for r in first.values()] == [
        (Outcome.SUCCEEDED, "insert", "1"), (Outcome.SUCCEEDED, "insert", "2")]

    # the same people again, as after a crash (no SIS id known), one with a new family name
    again = [ExportRecord(r.record_id, {**r.payload, "familyName": "Kim"}) for r in records]
    second = results_by_record(again, adapter.export(again))
    for rid, r in second.items():
        assert r.outcome == Outcome.SUCCEEDED and r.action == "update"
        assert r.sis_id == first[rid].sis_id
        assert r.message.startswith(f"Find existing record found it in the SIS (id {r.sis_id}): "
                                    f"Updated in the SIS (HTTP 200)")
    assert [p["familyName"] for p in server.dump()["people"]] == ["Kim", "Kim"]
    assert posts(server) == 2, "found records are updated, not posted again"
    assert server.count("PUT", "/api/v1/people/") == 2
    assert server.count("GET", "/api/v1/people") == 4  # one lookup per record and export


def test_without_the_lookup_a_409_is_a_clear_failure_and_not_retried(people, server):
    adapter = people()
    rec = person(1)
    [created] = adapter.export([rec])
    assert created.action == "insert"
    [dup] = adapter.export([rec])
    assert dup.outcome == Outcome.FAILED and dup.sis_id is None
    assert dup.message == (
        "Not synced: conflict in the SIS (HTTP 409): A person with externalId 'P1' already exists "
        "(id 1). The record probably already exists in the SIS; set Find existing record so a "
        "repeated sync updates it. Not retried.")
    assert posts(server) == 2  # one each: the 409 was not repeated
    assert len(server.dump()["people"]) == 1


def test_a_409_on_create_is_resolved_by_the_lookup(people, server):
    adapter = people(lookup_operation=BY_EXTERNAL_ID)
    [created] = adapter.export([person(1)])
    # someone else's sync created it between our lookup and our POST: the first lookup
    # sees nothing, the POST answers 409, the second lookup finds it
    server.set_faults({"status": 200, "method": "GET", "path": "/api/v1/people",
                       "body": {"data": [], "total": 0}, "times": 1})
    [again] = adapter.export([person(1, givenName="Ana")])
    assert again.outcome == Outcome.SUCCEEDED and again.action == "update"
    assert again.sis_id == created.sis_id == "1"
    assert again.message.startswith("creating it answered HTTP 409, so Find existing record looked "
                                    "it up in the SIS (id 1): Updated in the SIS (HTTP 200)")
    assert [r[2] for r in server.requests(*POST_PEOPLE) if r[1] == "/api/v1/people"] == [201, 409]
    assert [p["givenName"] for p in server.dump()["people"]] == ["Ana"]


def test_a_409_the_lookup_cannot_explain_stays_failed(people, server):
    adapter = people(lookup_operation=BY_EMAIL)
    adapter.export([person(1)])
    # same externalId (so the SIS refuses it) but another e-mail (so the lookup misses)
    [dup] = adapter.export([person(1, **{"contact.email": "other@example.org"})])
    assert dup.outcome == Outcome.FAILED and dup.action is None
    assert "conflict in the SIS (HTTP 409): A person with externalId 'P1' already exists" in dup.message
    assert ("Find existing record (GET /api/v1/people?email={contact.email}) found no matching "
            "record, so nothing was updated either. Not retried") in dup.message
    assert posts(server) == 2
    assert [p["contact"]["email"] for p in server.dump()["people"]] == ["lee1@example.org"]


def test_several_matches_are_not_guessed_and_nothing_is_created(people, server):
    people().export([person(1), person(2)])  # two Parks in the SIS
    adapter = people(lookup_operation="GET /api/v1/people?familyName={familyName}")
    [r] = adapter.export([person(3)])
    assert r.outcome == Outcome.FAILED
    assert ("Find existing record (GET /api/v1/people?familyName=Park) found 2 records in the SIS, "
            "and which one is this student is not guessed") in r.message
    assert len(server.dump()["people"]) == 2 and server.count("PUT") == 0


def test_a_blank_match_field_is_not_sent(people, server):
    adapter = people(lookup_operation=BY_EMAIL)
    [r] = adapter.export([person(1, **{"contact.email": ""})])
    assert r.outcome == Outcome.FAILED and r.sent is None
    assert r.message.startswith("Not sent: Find existing record matches on contact.email, which is "
                                "blank for this record")
    assert server.requests(path="/api/") == []


def test_a_failing_lookup_creates_nothing(people, server):
    adapter = people(lookup_operation=BY_EMAIL)
    server.set_faults({"status": 500, "method": "GET", "times": None})
    records = [person(1), person(2), person(3)]
    results = results_by_record(records, adapter.export(records))
    first = results["person-1"]
    assert first.outcome == Outcome.FAILED
    assert first.message.startswith(
        "Not synced: Find existing record (GET /api/v1/people?email=lee1%40example.org) failed, so "
        "the record was not created (it may already be in the SIS): Gave up on GET")
    assert all(r.outcome == Outcome.FAILED for r in results.values())
    assert results["person-3"].message.startswith("Not sent: held back because the SIS failed")
    assert posts(server) == 0 and server.dump()["people"] == []


def test_an_id_pointer_that_finds_nothing_is_reported_not_inserted(people, server):
    people().export([person(1)])
    adapter = people(lookup_operation=BY_EMAIL, lookup_id_location="/data/0/uuid")
    [r] = adapter.export([person(1)])
    assert r.outcome == Outcome.FAILED
    assert "answered, but there is no id at /data/0/uuid in its answer" in r.message
    assert posts(server) == 1 and len(server.dump()["people"]) == 1


def test_in_array_mode_found_records_are_updated_and_item_409s_resolved(people, server):
    adapter = people(request_mode="array", create_operation="POST /api/v1/people/batch",
                     lookup_operation=BY_EXTERNAL_ID)
    records = [person(1), person(2)]
    first = results_by_record(records, adapter.export(records))
    assert {r.sis_id for r in first.values()} == {"1", "2"}
    # person-1 again (found, updated), person-3 new (batched); the first lookup of
    # person-2 misses, so it goes in the batch, answers 409 there and is then resolved
    server.set_faults({"status": 200, "method": "GET", "path": "/api/v1/people",
                       "body": {"data": []}, "times": 1})
    again = [person(2, givenName="Bo"), person(1, givenName="Al"), person(3)]
    results = results_by_record(again, adapter.export(again))
    assert all(r.outcome == Outcome.SUCCEEDED for r in results.values()), \
        [r.message for r in results.values()]
    assert (results["person-2"].action, results["person-2"].sis_id) == ("update", "2")
    assert "creating it answered HTTP 409" in results["person-2"].message
    assert (results["person-1"].action, results["person-1"].sis_id) == ("update", "1")
    assert (results["person-3"].action, results["person-3"].sis_id) == ("insert", "3")
    assert sorted(p["givenName"] for p in server.dump()["people"]) == ["Al", "Bo", "Lee3"]


@pytest.mark.parametrize("overrides, expected", [
    ({"update_operation": ""},
     "Find existing record needs an update operation (e.g. PUT /api/v1/people/{id}) to update "
     "the record it finds."),
    ({"lookup_operation": "GET /api/v1/people?email={email}"},
     "Find existing record (GET /api/v1/people?email={email}) matches on {email}, which is not a "
     "field of the Person schema"),
    ({"lookup_operation": "POST /api/v1/people/search"}, "Find existing record must be a GET request"),
    ({"lookup_operation": "GET /api/v1/people"}, "Find existing record needs at least one {field} "
                                                 "placeholder"),
    ({"lookup_id_location": "data.0.id"}, "must be a JSON Pointer such as /data/0/id"),
])
def test_lookup_settings_problems_are_explained(people, server, overrides, expected):
    adapter = people(**{"lookup_operation": BY_EMAIL, **overrides})
    result = adapter.check_connection()
    assert not result.ok and expected in result.message
    [r] = adapter.export([person(1)])
    assert r.outcome == Outcome.FAILED and expected in r.message
    assert server.dump()["people"] == []


def test_check_connection_tries_the_lookup(people, server):
    result = people(lookup_operation=BY_EMAIL).check_connection()
    assert result.ok, result.message
    assert "Existing records are found with GET /api/v1/people?email={contact.email}." in result.message
    assert result.details["find existing record"] == BY_EMAIL
    # a parameter the SIS does not know is ignored by it: every lookup would "find" someone
    people().export([person(1)])
    wrong = people(lookup_operation="GET /api/v1/people?mail={contact.email}").check_connection()
    assert not wrong.ok
    assert ("Find existing record (GET /api/v1/people?mail=enroll-sync-check-0) found 1 record for "
            "a value no record has: the SIS seems to ignore the filter") in wrong.message
    missing = people(lookup_operation="GET /api/v1/persons?email={contact.email}").check_connection()
    assert not missing.ok and "answered HTTP 404: the SIS has no such path" in missing.message


@pytest.mark.parametrize("answer, pointer, expected", [
    ([{"id": 7}], "", ("found", "7")),
    ([], "", ("none", None)),
    ({"data": [], "total": 0}, "", ("none", None)),
    ({"results": [{"id": "a1"}]}, "", ("found", "a1")),
    ({"people": [{"id": 3}]}, "", ("found", "3")),          # the first list of records
    ({"data": {"id": 9}}, "", ("found", "9")),               # one record in an envelope
    ({"id": 4, "name": "x"}, "", ("found", "4")),            # the record itself
    ({"data": None}, "", ("none", None)),
    ([{"id": 1}, {"id": 2}], "", ("ambiguous", 2)),
    ([{"uuid": 1}], "", ("no_id", None)),
    ({"total": 1}, "", ("no_id", None)),
    (None, "", ("none", None)),
    ({"data": [{"id": 5}]}, "/data/0/id", ("found", "5")),
    ({"data": []}, "/data/0/id", ("none", None)),
    ({"data": None}, "/data/0/id", ("none", None)),
    ({"data": [{"id": 5}, {"id": 6}]}, "/data/0/id", ("ambiguous", 2)),
    ({"data": [{"key": 5}]}, "/data/0/id", ("no_id", None)),
    ({"error": "nope"}, "/data/0/id", ("no_id", None)),
    ({"person": {"id": "p-1"}}, "/person/id", ("found", "p-1")),
    ([{"id": True}], "", ("no_id", None)),
])
def test_reading_the_found_id(answer, pointer, expected):
    assert _found_id(answer, pointer) == expected
