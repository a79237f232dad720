"""Per-record truth from the generic REST adapter, against the Ed-Fi-style test server
over a real socket: NOT_FOUND for an update of an id the SIS no longer has, RETRY when
the SIS stays busy (429/503) past the transport's retries, matched_by for records found
by "Find existing record" or matched by an upserting create's natural key, answers too
slow to wait for, and tokens revoked under eight threads."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from enroll_sync import ExportRecord, Outcome
from enroll_sync.testing import results_by_record
from generic_helpers import FAST, person, student
from sis_generic import GenericRestAdapter

PUT_STUDENTS = "PUT /data/v3/ed-fi/students/{id}"
BY_EXTERNAL_ID = "GET /api/v1/people?externalId={externalId}"


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


def fresh(records):
    """The same records as the core sends them again when it knows no SIS id."""
    return [ExportRecord(r.record_id, dict(r.payload)) for r in records]


def students(server):
    return server.dump()["students"]


# ----------------------------------------------------------------------------- NOT_FOUND

def test_a_student_deleted_in_the_sis_is_not_found_on_update(make_adapter, server):
    adapter = make_adapter(update_operation=PUT_STUDENTS)
    records = [student(), student()]
    first = results_by_record(records, adapter.export(records))
    server.set_faults(gone_students=1)  # the next request for /students/{id} finds it deleted
    linked = [ExportRecord(r.record_id, dict(r.payload), first[r.record_id].sis_id) for r in records]
    results = results_by_record(linked, adapter.export(linked))
    gone = [r for r in results.values() if r.outcome == Outcome.NOT_FOUND]
    assert len(gone) == 1
    [g] = gone
    assert g.sis_id is None and g.action == "update"
    assert "no record with id" in g.message and "Nothing was written" in g.message
    assert len(students(server)) == 1, "the adapter did not create it again itself"
    assert all(r.ok for r in results.values() if r.outcome != Outcome.NOT_FOUND)
    # what the core does next: send it without the dead id -> created again
    [again] = adapter.export(fresh([r for r in records if r.record_id == g.record_id]))
    assert again.ok and again.action == "insert"
    assert len(students(server)) == 2


def test_an_unknown_id_on_a_non_upserting_api_is_not_found(people, server):
    adapter = people(lookup_operation=BY_EXTERNAL_ID)
    [res] = adapter.export([ExportRecord("p", person().payload, sis_id="777")])
    assert res.outcome == Outcome.NOT_FOUND and "id 777" in res.message
    assert server.dump()["people"] == []


def test_a_found_record_gone_before_its_update_is_retry(people, server):
    adapter = people(lookup_operation=BY_EXTERNAL_ID)
    rec = person()
    [first] = adapter.export([rec])
    server.set_faults({"status": 404, "method": "PUT", "path": "/api/v1/people/", "times": 1})
    [res] = adapter.export(fresh([rec]))
    assert res.outcome == Outcome.RETRY and res.sis_id is None
    assert "found record" in res.message and "looked up and sent again" in res.message
    [again] = adapter.export(fresh([rec]))  # the core sends it again: found and updated
    assert again.ok and again.sis_id == first.sis_id


# ----------------------------------------------------------------------------- RETRY

def test_writes_503_are_retried_by_the_transport_first(edfi, server):
    server.set_faults(writes_503=2, retry_after=0)
    results = edfi.export([student(), student()])
    assert all(r.ok for r in results), [r.message for r in results]


def test_a_503_past_the_retries_is_retry_and_nothing_is_written(make_adapter, server):
    adapter = make_adapter(max_attempts=1)
    records = [student() for _ in range(3)]
    server.set_faults(writes_503=1, retry_after=0)
    results = results_by_record(records, adapter.export(records))
    busy = [r for r in results.values() if r.outcome == Outcome.RETRY]
    assert len(busy) == 1
    [b] = busy
    assert b.sis_id is None and "too busy" in b.message and "Nothing was written" in b.message
    assert "HTTP 503" in b.message
    assert len(students(server)) == 2
    [again] = adapter.export(fresh([r for r in records if r.record_id == b.record_id]))
    assert again.ok
    assert len(students(server)) == 3


def test_a_429_past_the_retries_is_retry_too(make_adapter, server):
    adapter = make_adapter(max_attempts=2)
    server.set_faults({"status": 429, "method": "POST", "times": 2, "retry_after": 0})
    [res] = adapter.export([student()])
    assert res.outcome == Outcome.RETRY and "HTTP 429" in res.message


def test_a_sis_busy_for_two_records_holds_back_the_rest_as_retry(make_adapter, server):
    adapter = make_adapter(max_attempts=1)
    server.set_faults({"status": 503, "method": "POST", "times": 2, "retry_after": 0})
    records = [student() for _ in range(5)]
    results = results_by_record(records, adapter.export(records))
    assert all(r.outcome == Outcome.RETRY for r in results.values())
    held = [r for r in results.values() if "held back" in r.message]
    assert len(held) == 3 and all("too busy" in r.message for r in held)
    assert server.count("POST", "/data/v3/ed-fi/students") == 2
    assert students(server) == []


def test_a_busy_array_batch_is_retry_for_each_of_its_records(people, server):
    """The first batch stays 503: its records are RETRY, and the next batch is held back
    (RETRY too, nothing sent) rather than hammering a busy SIS."""
    adapter = people(request_mode="array", batch_size=3, max_attempts=1,
                     create_operation="POST /api/v1/people/batch")
    server.set_faults({"status": 503, "method": "POST", "path": "/api/v1/people/batch",
                       "times": 1, "retry_after": 0})
    records = [person() for _ in range(5)]
    results = results_by_record(records, adapter.export(records))
    assert all(r.outcome == Outcome.RETRY and r.sis_id is None for r in results.values())
    assert sum("held back" in r.message for r in results.values()) == 2
    assert server.count("POST", "/api/v1/people/batch") == 1
    assert server.dump()["people"] == []
    again = results_by_record(records, adapter.export(fresh(records)))
    assert all(r.ok for r in again.values())
    assert len(server.dump()["people"]) == 5


def test_a_busy_lookup_is_retry(people, server):
    adapter = people(lookup_operation=BY_EXTERNAL_ID, max_attempts=1)
    server.set_faults({"status": 503, "method": "GET", "path": "/api/v1/people", "times": 1,
                       "retry_after": 0})
    [res] = adapter.export([person()])
    assert res.outcome == Outcome.RETRY and "Find existing record" in res.message
    assert server.dump()["people"] == []


# ----------------------------------------------------------------------------- matched_by

def test_matched_by_names_the_fields_find_existing_record_matched_on(people, server):
    adapter = people(lookup_operation=BY_EXTERNAL_ID)
    rec = person()
    [first] = adapter.export([rec])
    assert first.matched_by is None
    [again] = adapter.export(fresh([rec]))
    assert again.ok and again.action == "update" and again.sis_id == first.sis_id
    labels = {f.key: f.label for s in adapter.target_fields() for f in s.fields}
    assert again.matched_by == labels["externalId"]


def test_matched_by_the_natural_key_of_an_upserting_create(edfi, server):
    rec = student()
    [first] = edfi.export([rec])
    assert first.action == "insert" and first.matched_by is None
    [again] = edfi.export(fresh([rec]))
    assert again.action == "update" and again.sis_id == first.sis_id
    assert again.matched_by and again.matched_by.endswith("(natural key)")
    assert "Student Unique Id" in again.matched_by or "studentUniqueId" in again.matched_by
    assert len(students(server)) == 1


# ----------------------------------------------------------------------------- too slow

def test_a_dripping_answer_is_abandoned_within_the_deadline(people, server):
    """The create is saved, its answer drips: abandoned at the deadline, the record Failed
    with "may have saved"; with Find existing record, sending it again does not duplicate."""
    plain = people(timeout=2, deadline=1)
    rec = person()
    plain.check_connection()
    server.set_faults(drip_bytes_per_s=1, fault_path="/api/v1/people")
    start = time.monotonic()
    [res] = plain.export([rec])
    elapsed = time.monotonic() - start
    server.set_faults(drip_bytes_per_s=0)
    assert elapsed < 2.5, elapsed
    assert res.outcome == Outcome.FAILED and "too slowly" in res.message
    assert "may have saved it" in res.message and "may create a duplicate" in res.message
    assert len(server.dump()["people"]) == 1, "saved; only the answer was slow"
    [again] = people(lookup_operation=BY_EXTERNAL_ID).export(fresh([rec]))
    assert again.ok and again.action == "update" and again.matched_by
    assert len(server.dump()["people"]) == 1


def test_slow_lookups_twice_hold_back_the_rest(people, server):
    adapter = people(lookup_operation=BY_EXTERNAL_ID, timeout=2, deadline=0.5)
    adapter.check_connection()
    server.set_faults(drip_bytes_per_s=4, fault_path="/api/v1/people")
    start = time.monotonic()
    results = adapter.export([person() for _ in range(5)])
    elapsed = time.monotonic() - start
    assert elapsed < 3, elapsed
    assert all(r.outcome == Outcome.FAILED for r in results)
    assert "too slowly" in results[0].message and "looked up first" in results[0].message
    assert sum("held back" in r.message for r in results) == 3
    assert server.dump()["people"] == []


def test_a_dripping_schema_fails_the_check_within_the_deadline(make_adapter, server):
    adapter = make_adapter(timeout=2, deadline=1)
    server.set_faults(drip_bytes_per_s=50, fault_path="/metadata/")
    start = time.monotonic()
    result = adapter.check_connection()
    assert time.monotonic() - start < 2.5
    assert not result.ok and "too slowly" in result.message


def test_the_deadline_comes_from_the_connection_settings(make_adapter):
    assert make_adapter(timeout=5)._get_transport().deadline_s == 20
    assert make_adapter(timeout=5, deadline=8)._get_transport().deadline_s == 8


# ----------------------------------------------------------------------------- tokens

def test_eight_threads_sharing_one_adapter_survive_revoked_tokens(server):
    """600 records, one request each, 8 threads on one adapter (one token): every 10th
    request with a token revokes it."""
    adapter = GenericRestAdapter(server.settings(auth="oauth2", **FAST))
    try:
        adapter.check_connection()
        server.set_faults(revoke_new_tokens_every=10)
        chunks = [[student() for _ in range(75)] for _ in range(8)]
        barrier = threading.Barrier(8)

        def work(chunk):
            barrier.wait()
            return adapter.export(chunk)

        with ThreadPoolExecutor(8) as pool:
            results = [r for rs in pool.map(work, chunks) for r in rs]
    finally:
        adapter.close()
    failed = [r.message for r in results if not r.ok]
    assert failed == [], failed[:3]
    assert len(students(server)) == 600
    statuses = [s for _, p, s in server.requests("POST", "/data/v3/ed-fi/students")]
    assert statuses.count(401) >= 10, "the fault did bite"


def test_tokens_refused_again_and_again_do_not_blame_the_secret(edfi, server):
    server.set_faults({"status": 401, "path": "/data/v3/ed-fi/students", "times": None})
    [res] = edfi.export([student()])
    assert res.outcome == Outcome.FAILED
    assert "client secret" not in res.message.lower() and "refused the credentials" not in res.message
    assert "just issued" in res.message and "not the problem" in res.message
    # the first token had worked (reading the schema): replaced, then 3 new ones refused
    assert server.count("POST", "/oauth/token") == 5
    assert server.count("POST", "/data/v3/ed-fi/students") == 5


def test_an_api_key_refused_still_says_check_the_credentials(make_adapter, server):
    adapter = make_adapter(auth="api_key", api_key="wrong-key-123")
    [res] = adapter.export([student()])
    assert res.outcome == Outcome.FAILED and "refused the credentials" in res.message


def test_a_held_back_message_says_it_once(make_adapter, server):
    adapter = make_adapter(max_attempts=1)
    server.set_faults({"status": 503, "method": "POST", "times": 2, "retry_after": 0})
    results = adapter.export([student() for _ in range(3)])
    held = results[2]
    assert "held back" in held.message
    assert held.message.count("Nothing was written") == 1, held.message
