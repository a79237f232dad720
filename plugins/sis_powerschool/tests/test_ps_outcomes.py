"""Per-record truth from the PowerSchool adapter, against the sandbox over a real socket:
NOT_FOUND for an update of an id PowerSchool no longer has, RETRY for "busy, try again",
matched_by for match-before-insert, look-up failures held to the students they concern,
answers too slow to wait for, and tokens revoked under eight threads."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from enroll_sync import ExportRecord, Outcome
from ps_helpers import next_local_id, record
from sis_powerschool.adapter import LOOKUP_FAILURE_BUDGET, Match


def by_id(results):
    return {r.record_id: r for r in results}


def searches(sandbox):
    return [r for r in sandbox.requests() if r["path"].startswith("/ws/v1/district/student")]


def fresh(records):
    """The same records as the core sends them again when it knows no SIS id."""
    return [ExportRecord(r.record_id, dict(r.payload)) for r in records]


# ----------------------------------------------------------------------------- NOT_FOUND

def test_an_update_of_an_id_powerschool_does_not_have_is_not_found(adapter, sandbox):
    rec = record(sis_id="987654")
    [res] = adapter.export([rec])
    assert res.outcome == Outcome.NOT_FOUND, res.message
    assert res.sis_id is None, "the dead id is not handed back to be linked again"
    assert "no student with id 987654" in res.message and "Nothing was saved" in res.message
    assert sandbox.count() == 0, "the adapter does not insert it itself"
    assert searches(sandbox) == [], "an update is not looked up"


def test_after_the_sis_was_emptied_updates_are_not_found_and_sending_again_inserts(adapter, sandbox):
    records = [record() for _ in range(3)]
    first = by_id(adapter.export(records))
    sandbox.empty()
    linked = [ExportRecord(r.record_id, dict(r.payload), first[r.record_id].sis_id) for r in records]
    again = adapter.export(linked)
    assert [r.outcome for r in again] == [Outcome.NOT_FOUND] * 3
    assert sandbox.count() == 0
    # what the core does next: the same records without the dead ids
    third = by_id(adapter.export(fresh(records)))
    assert all(r.ok and r.action == "insert" and r.matched_by is None for r in third.values())
    assert sandbox.count() == 3


def test_after_a_restore_under_new_ids_sending_again_matches_by_local_id(adapter, sandbox):
    records = [record() for _ in range(3)]
    first = by_id(adapter.export(records))
    moved = sandbox.renumber()
    assert moved
    linked = [ExportRecord(r.record_id, dict(r.payload), first[r.record_id].sis_id) for r in records]
    assert [r.outcome for r in adapter.export(linked)] == [Outcome.NOT_FOUND] * 3
    third = by_id(adapter.export(fresh(records)))
    assert all(r.ok and r.action == "update" for r in third.values())
    assert all(r.matched_by == "local id" for r in third.values())
    assert {r.sis_id for r in third.values()}.isdisjoint({r.sis_id for r in first.values()})
    assert sandbox.count() == 3, "no duplicate"


def test_a_match_that_vanished_before_its_update_is_retried_not_not_found(adapter, sandbox,
                                                                          monkeypatch):
    """Match-before-insert found a student that is gone when it is updated: NOT_FOUND
    would send the same record again in a loop; RETRY looks it up afresh."""
    rec = record()
    monkeypatch.setattr(adapter, "_find_existing", lambda records, tables: {
        rec.record_id: Match(dcid="424242", by="local_id", local_id=rec.payload["local_id"])})
    [res] = adapter.export([rec])
    assert res.outcome == Outcome.RETRY and res.sis_id is None
    assert "matched by local id" in res.message and "looked up and sent again" in res.message
    assert sandbox.count() == 0


# ----------------------------------------------------------------------------- RETRY

def test_busy_records_are_retry_and_nothing_is_saved(make_adapter, sandbox):
    adapter = make_adapter(batch_size=10)
    records = [record() for _ in range(5)]
    sandbox.set_faults(busy_records=2)
    results = by_id(adapter.export(records))
    retry = [r for r in results.values() if r.outcome == Outcome.RETRY]
    assert len(retry) == 2
    assert all(r.ok for r in results.values() if r.outcome != Outcome.RETRY)
    for r in retry:
        assert r.sis_id is None and "busy" in r.message and "Nothing was saved" in r.message
        assert any(e.code == "SERVER_BUSY" for e in r.errors)
    assert sandbox.count() == 3
    # sent again, as the core does after a short wait: saved, once
    again = adapter.export(fresh([rec for rec in records if results[rec.record_id].outcome
                                  == Outcome.RETRY]))
    assert all(r.ok and r.action == "insert" for r in again)
    assert sandbox.count() == 5


def test_a_busy_update_is_retry_too(adapter, sandbox):
    [first] = adapter.export([record("u")])
    sandbox.set_faults(busy_records=1)
    [res] = adapter.export([ExportRecord("u", {"name.first_name": "Cy"}, sis_id=first.sis_id)])
    assert res.outcome == Outcome.RETRY and res.action == "update"


def test_a_batch_refused_503_after_every_retry_is_retry(make_adapter, sandbox):
    adapter = make_adapter(max_attempts=2, match_existing=False)
    adapter.check_connection()
    sandbox.set_faults(burst_503=2, fault_path="/ws/v1/student")
    results = adapter.export([record() for _ in range(3)])
    assert [r.outcome for r in results] == [Outcome.RETRY] * 3
    assert "too busy" in results[0].message and "HTTP 503" in results[0].message
    assert sandbox.count() == 0


def test_a_batch_failing_500_is_not_retry(make_adapter, sandbox):
    """A 500 may come after PowerSchool saved the batch: Failed, "may have been saved"."""
    adapter = make_adapter(max_attempts=2, match_existing=False)
    adapter.check_connection()
    sandbox.set_faults(fail_500=2, fault_path="/ws/v1/student")
    results = adapter.export([record() for _ in range(2)])
    assert [r.outcome for r in results] == [Outcome.FAILED] * 2
    assert "may have saved" in results[0].message and "Syncing again is safe" in results[0].message


# ----------------------------------------------------------------------------- matched_by

def test_matched_by_state_student_number(adapter, sandbox):
    [old] = adapter.export([record("old", state_province_id="CA-99")])
    [res] = adapter.export([record("new", state_province_id="CA-99")])
    assert res.ok and res.sis_id == old.sis_id and res.matched_by == "state student number"


def test_matched_by_after_powerschool_refused_a_duplicate_insert(adapter, sandbox):
    """The lost-answer path: the retried POST meets INVALID_LOCAL_ID and is matched."""
    records = [record() for _ in range(2)]
    sandbox.set_faults(lost_answers=1)
    results = adapter.export(records)
    assert all(r.ok and r.action == "update" and r.matched_by == "local id" for r in results)
    assert sandbox.count() == 2


# ----------------------------------------------------------------------------- look-ups

def test_a_failed_look_up_holds_back_only_the_students_it_concerns(make_adapter, sandbox):
    adapter = make_adapter(max_attempts=1)
    adapter.check_connection()
    base = next_local_id()
    records = [record(local_id=base + i) for i in range(1, 5)]
    for _ in range(6):
        next_local_id()
    adapter.export([record(local_id=base + 9)])  # the adapter now holds a snapshot of PowerSchool's keys
    # the snapshot's refresh fails (so every key is looked up), then the range count, then
    # (narrowing down) the first student's search, twice
    sandbox.set_faults(fail_500=4, fault_path="/ws/v1/district/student")
    results = by_id(adapter.export(records))
    failed = [r for r in results.values() if not r.ok]
    assert len(failed) == 1, [r.message for r in results.values()]
    [f] = failed
    assert f.outcome == Outcome.FAILED and f.errors[0].code == "LOOKUP_FAILED"
    assert f"Student Number {records[0].payload['local_id']}" in f.message
    assert "HTTP 500" in f.message and "not inserted" in f.message
    assert "it may already be there" in f.message and "Syncing it again is safe" in f.message
    assert sandbox.count() == 3 + 1


def test_a_failed_look_up_does_not_fail_updates_of_known_ids(make_adapter, sandbox):
    adapter = make_adapter(max_attempts=1)
    [known] = adapter.export([record("known")])
    sandbox.set_faults(fail_500=50, fault_path="/ws/v1/district/student")
    results = by_id(adapter.export([
        ExportRecord("known", {"name.first_name": "Di"}, sis_id=known.sis_id),
        record("new1"), record("new2")]))
    assert results["known"].ok and results["known"].action == "update"
    assert results["new1"].errors[0].code == results["new2"].errors[0].code == "LOOKUP_FAILED"
    assert sandbox.count() == 1


def test_a_look_up_failing_every_time_is_not_split_without_end(make_adapter, sandbox):
    adapter = make_adapter(max_attempts=1)
    adapter.check_connection()
    sandbox.clear_requests()
    sandbox.set_faults(fail_500=10000, fault_path="/ws/v1/district/student")
    results = adapter.export([record() for _ in range(40)])
    assert all(r.errors[0].code == "LOOKUP_FAILED" for r in results)
    # one read of the key snapshot, then at most the budget of split look-ups
    assert len(searches(sandbox)) <= LOOKUP_FAILURE_BUDGET + 1
    assert sandbox.count() == 0


# ----------------------------------------------------------------------------- too slow

def test_a_dripping_answer_to_a_batch_is_abandoned_and_sending_again_is_safe(make_adapter,
                                                                           sandbox):
    adapter = make_adapter(timeout_s=2, deadline_s=1.5)
    records = [record() for _ in range(3)]
    adapter.check_connection()
    sandbox.set_faults(drip_bytes_per_s=1, drip_answers=1, fault_path="/ws/v1/student")
    start = time.monotonic()
    results = adapter.export(records)
    assert time.monotonic() - start < 3.5
    assert [r.outcome for r in results] == [Outcome.FAILED] * 3
    assert all(r.errors[0].code == "TIMEOUT" for r in results)
    assert "too slowly" in results[0].message and "may have saved" in results[0].message
    assert sandbox.count() == 3, "PowerSchool saved them; only the answer was slow"
    again = adapter.export(fresh(records))
    assert all(r.ok and r.action == "update" and r.matched_by == "local id" for r in again)
    assert sandbox.count() == 3


def test_with_matching_off_a_student_of_unknown_fate_is_still_looked_up(make_adapter, sandbox):
    adapter = make_adapter(timeout_s=2, deadline_s=1.0, match_existing=False)
    records = [record() for _ in range(2)]
    adapter.check_connection()
    sandbox.set_faults(drip_bytes_per_s=1, drip_answers=1, fault_path="/ws/v1/student")
    assert all(r.outcome == Outcome.FAILED for r in adapter.export(records))
    sandbox.clear_requests()
    again = adapter.export(fresh(records))
    assert all(r.ok and r.action == "update" and r.matched_by == "local id" for r in again)
    assert searches(sandbox), "looked up although matching is off"
    assert sandbox.count() == 2
    sandbox.clear_requests()
    adapter.export(fresh(records))  # their fate is known now: back to no look-ups
    assert searches(sandbox) == []


def test_batches_too_slow_twice_hold_back_the_rest(make_adapter, sandbox):
    adapter = make_adapter(timeout_s=2, deadline_s=0.5, batch_size=2, match_existing=False)
    adapter.check_connection()
    sandbox.set_faults(drip_bytes_per_s=20, fault_path="/ws/v1/student")
    start = time.monotonic()
    results = adapter.export([record() for _ in range(10)])
    elapsed = time.monotonic() - start
    assert all(r.outcome == Outcome.FAILED for r in results)
    assert sum("held back" in r.message for r in results) >= 4
    assert elapsed < 4, "not 5 batches of waiting for the deadline"


def test_the_deadline_comes_from_the_connection_settings(make_adapter):
    assert make_adapter(timeout_s=5).transport.deadline_s == 20
    assert make_adapter(timeout_s=5, deadline_s=7).transport.deadline_s == 7
    assert make_adapter(timeout_s=5, deadline_s="").transport.deadline_s == 20


# ----------------------------------------------------------------------------- tokens

def test_eight_threads_sharing_one_adapter_survive_early_revoked_tokens(make_adapter, sandbox):
    """600 records, 8 threads, one adapter (one transport, one token): every 10th request
    revokes its token and the next token issued is dead on arrival."""
    adapter = make_adapter(batch_size=10)
    adapter.check_connection()
    sandbox.set_faults(revoke_new_tokens_every=10)
    chunks = [[record() for _ in range(75)] for _ in range(8)]
    barrier = threading.Barrier(8)

    def work(chunk):
        barrier.wait()
        return adapter.export(chunk)

    with ThreadPoolExecutor(8) as pool:
        results = [r for rs in pool.map(work, chunks) for r in rs]
    failed = [r.message for r in results if not r.ok]
    assert failed == [], failed[:3]
    assert len(results) == 600 and sandbox.count() == 600
    statuses = [r["status"] for r in sandbox.requests() if r["path"].startswith("/ws/")]
    assert statuses.count(401) >= 10, "the fault did bite"


def test_tokens_refused_at_once_fail_the_export_without_blaming_the_secret(adapter, sandbox,
                                                                         monkeypatch):
    monkeypatch.setattr(sandbox.store, "token_valid", lambda token: False)
    results = adapter.export([ExportRecord("x", {"name.first_name": "A"}, sis_id="5")])
    [res] = results
    assert res.outcome == Outcome.FAILED
    assert "client ID or client secret" not in res.message
    assert "just issued" in res.message and "not the problem" in res.message


def test_a_look_up_refused_as_busy_is_retry_and_not_split(make_adapter, sandbox):
    adapter = make_adapter(max_attempts=2)
    adapter.check_connection()
    sandbox.clear_requests()
    sandbox.set_faults(burst_503=2, fault_path="/ws/v1/district/student")
    results = adapter.export([record() for _ in range(6)])
    assert all(r.outcome == Outcome.RETRY and r.sis_id is None for r in results)
    assert "too busy to look up" in results[0].message
    assert len(searches(sandbox)) == 2, "a busy SIS is not asked again and again"
    assert sandbox.count() == 0
