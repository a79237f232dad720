"""pytest plugin for Enroll Sync and for SIS adapter authors.

Registered through the ``pytest11`` entry point, so it is active in any test run
where ``enroll-sync`` is installed. Nothing here imports Flask at module level.

=============================================================================
Adapter contract tests
=============================================================================

Subclass ``AdapterContract`` in a test module of your adapter and provide:

- an ``adapter`` fixture: a configured ``SISAdapter`` instance pointing at a live
  test server (your sandbox on 127.0.0.1; never a mock);
- a ``make_records`` fixture: a callable ``make_records(n)`` returning ``n``
  ``ExportRecord``s valid for that SIS. Each call must return NEW students (fresh
  record ids and SIS keys), because several tests insert;
- optionally a ``sis_count`` fixture: a callable returning how many students the
  server holds (the retried-export test then checks that nothing was duplicated);
- an ``unknown_sis_id`` fixture: an id the server does not have (the kit sends an update
  of it and expects ``Outcome.NOT_FOUND``, with nothing written);
- optionally a ``make_sis_busy`` fixture: a callable ``make_sis_busy(n)`` after which the
  server refuses the next ``n`` record writes as "busy, try again later" (for good, past
  the adapter's own retries), so the kit can check ``Outcome.RETRY``. Skipped when absent.

Class attributes say what the SIS does: ``contract_updates_by_id = False`` for an SIS
whose writes are upserts on a natural key (a sent ``sis_id`` is not an update of that
id, so an unknown one may be created anew, but never reported as saved under that id);
``contract_reports_matched_by = False`` for an adapter that cannot tell that a record
sent without ``sis_id`` matched one the SIS had.

::

    from enroll_sync.testing import AdapterContract

    class TestMyAdapterContract(AdapterContract):
        @pytest.fixture
        def adapter(self, my_server):
            with MyAdapter({"base_url": my_server.url, ...}) as a:
                yield a

        @pytest.fixture
        def make_records(self):
            return lambda n: [ExportRecord(record_id=..., payload={...}) for ...]

An adapter that can be imported from (it overrides ``list_students``) also runs the
import contract when it provides, beside ``adapter``:

- ``sis_empty``: a callable deleting every student of the test server;
- ``sis_seed``: a callable ``sis_seed(n)`` storing ``n`` valid students in it;
- ``sis_fail_page``: a callable ``sis_fail_page(page, times)`` making the ``page``-th
  page (from 1) of the next student listing answer HTTP 500 ``times`` times in a row.

It checks paging (every student exactly once, pages no bigger than asked, the total,
resuming from a cursor), an empty SIS, a page that fails once (read again, nothing
lost) and a page that keeps failing (``AdapterError``, never a silently shorter list),
``get_student`` and ``import_fields``. Without those fixtures these tests skip.

The checks are also available as plain functions (``settings_schema_problems``,
``target_field_problems``) for use outside pytest.

=============================================================================
The app under test (core suite and plugin suites alike)
=============================================================================

So a plugin suite drives the whole core without importing its internals or the
core's ``tests/``:

- fixtures: ``app`` (the demo district on a SQLite file in ``tmp_path``; its demo
  connections point at ``demo_sandbox_urls``, a fixture to override with your test
  server's URL), ``live`` (``app`` over real HTTP: ``live.url``), ``login(role_or_email)``
  (a signed-in ``Session``) and ``anon`` (a ``Session`` not signed in). A fixture of the
  same name in your ``conftest.py`` or test module wins over these.
- building: ``make_app(tmp_path, **config)``, ``demo_app(tmp_path, sandbox_urls, ...)``,
  ``LiveServer(wsgi_app)``, ``close_database()``.
- HTTP: ``Session`` (cookies + CSRF: ``page(path)``, ``post_form(path, data, htmx=False)``),
  ``sign_in(base_url, email_or_role)``, ``ROLE_EMAIL``, ``DEMO_PASSWORD``.
- the core's state, as plain snapshots: ``connection(app, id_name_or_adapter)``,
  ``schools(app)``, ``registrations(app, ids)``, ``sync_job(app, job_id)``,
  ``save_mapping(app, connection, rows, kind="export_student")``.
- sync jobs: ``with run_worker(app):`` consumes the queue in this process;
  ``wait_for_job(app, job_id)``; ``wait_for(predicate, timeout)``; ``db(app)`` is the
  app context with a database connection, for whatever else the core offers.
"""
from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pytest

from .adapters import (
    SETTING_TYPES, AdapterError, Code, ExportRecord, ExportResult, FieldSection, Outcome, SettingField,
    SISAdapter, SISStudent, StudentPage, TargetField, can_import,
)

__all__ = [
    # adapter contract kit
    "AdapterContract", "settings_schema_problems", "target_field_problems", "results_by_record",
    "run_import", "save_import_mapping", "import_counts", "ImportInfo",
    # the app under test
    "LiveServer", "make_app", "demo_app", "close_database", "db", "Session", "sign_in", "ROLE_EMAIL", "DEMO_PASSWORD",
    "run_worker", "wait_for", "save_mapping", "connection", "schools", "registrations",
    "sync_job", "wait_for_job", "ConnectionInfo", "SchoolInfo", "RegistrationInfo", "JobInfo",
    "ItemInfo", "CLOSED_SANDBOX_URLS",
]

TARGET_TYPES = ("string", "date", "integer", "number", "boolean", "code")
SECRET_WORDS = ("secret", "password", "token", "api_key", "apikey", "private_key")


# ----------------------------------------------------------------------------- checks

def settings_schema_problems(schema: Sequence[Any]) -> list[str]:
    """Every way ``schema`` (an adapter's ``settings_schema()``) breaks the contract."""
    problems = []
    if not isinstance(schema, (list, tuple)):
        return [f"settings_schema() must return a list, not {type(schema).__name__}"]
    keys = Counter()
    for i, f in enumerate(schema):
        if not isinstance(f, SettingField):
            problems.append(f"item {i} is a {type(f).__name__}, not a SettingField")
            continue
        keys[f.key] += 1
        if not f.key or not f.key.replace("_", "").isalnum():
            problems.append(f"{f.key!r}: keys must be non-empty identifiers")
        if not f.label:
            problems.append(f"{f.key!r}: has no label")
        if f.type not in SETTING_TYPES:
            problems.append(f"{f.key!r}: type {f.type!r} is not one of {SETTING_TYPES}")
        lowered = f.key.lower()
        if any(w in lowered for w in SECRET_WORDS) and f.type != "secret":
            problems.append(f"{f.key!r}: looks like a secret but is typed {f.type!r}, "
                            f"not 'secret' (it would be stored and shown in clear)")
        if f.type == "secret" and f.default not in (None, ""):
            problems.append(f"{f.key!r}: a secret must not have a default value")
        if f.type == "choice":
            if not f.choices:
                problems.append(f"{f.key!r}: a choice field needs choices")
            elif f.default is not None and f.default not in [c[0] for c in f.choices]:
                problems.append(f"{f.key!r}: default {f.default!r} is not one of its choices")
        if f.type in ("integer", "number") and f.default is not None:
            if not isinstance(f.default, (int, float)) or isinstance(f.default, bool):
                problems.append(f"{f.key!r}: default {f.default!r} is not a number")
            else:
                if f.min is not None and f.default < f.min:
                    problems.append(f"{f.key!r}: default is below min")
                if f.max is not None and f.default > f.max:
                    problems.append(f"{f.key!r}: default is above max")
        if f.type == "boolean" and f.default is not None and not isinstance(f.default, bool):
            problems.append(f"{f.key!r}: a boolean default must be True or False")
    for key, n in keys.items():
        if n > 1:
            problems.append(f"{key!r}: key used {n} times")
    if "environment" in keys:
        problems.append("'environment' is handled by the core; leave it out of the schema")
    return problems


def target_field_problems(sections: Sequence[Any]) -> list[str]:
    """Every way ``sections`` (an adapter's ``target_fields()``) breaks the contract."""
    problems = []
    if not isinstance(sections, (list, tuple)) or not sections:
        return ["target_fields() must return a non-empty list of FieldSection"]
    section_keys = Counter()
    field_keys = Counter()
    for s in sections:
        if not isinstance(s, FieldSection):
            problems.append(f"{s!r} is not a FieldSection")
            continue
        section_keys[s.key] += 1
        if not s.key or not s.label:
            problems.append(f"section {s.key!r}: needs a key and a label")
        if not s.fields:
            problems.append(f"section {s.key!r}: has no fields")
        for f in s.fields:
            if not isinstance(f, TargetField):
                problems.append(f"section {s.key!r}: {f!r} is not a TargetField")
                continue
            field_keys[f.key] += 1
            if not f.key or any(not part for part in f.key.split(".")):
                problems.append(f"{f.key!r}: keys are dotted paths without empty parts")
            if not f.label:
                problems.append(f"{f.key!r}: has no label")
            if f.type not in TARGET_TYPES:
                problems.append(f"{f.key!r}: type {f.type!r} is not one of {TARGET_TYPES}")
            if f.max_length is not None and (not isinstance(f.max_length, int) or f.max_length <= 0):
                problems.append(f"{f.key!r}: max_length must be a positive int")
            if not isinstance(f.codes, tuple):
                problems.append(f"{f.key!r}: codes must be a tuple of Code")
            for c in f.codes:
                if not isinstance(c, Code):
                    problems.append(f"{f.key!r}: code {c!r} is not a Code")
                elif not isinstance(c.value, str) or c.value == "":
                    problems.append(f"{f.key!r}: code values must be non-empty strings")
            values = [c.value for c in f.codes if isinstance(c, Code)]
            if len(values) != len(set(values)):
                problems.append(f"{f.key!r}: duplicate code values")
            if f.type == "code" and not f.codes:
                problems.append(f"{f.key!r}: typed 'code' but lists no codes")
    for key, n in section_keys.items():
        if n > 1:
            problems.append(f"section {key!r}: key used {n} times")
    for key, n in field_keys.items():
        if n > 1:
            problems.append(f"field {key!r}: key used {n} times")
    return problems


def results_by_record(records: Sequence[ExportRecord], results: Sequence[Any]) -> dict[str, ExportResult]:
    """Check the one-result-per-record rule and index the results by record_id."""
    assert isinstance(results, list), f"export() must return a list, not {type(results).__name__}"
    for r in results:
        assert isinstance(r, ExportResult), f"{r!r} is not an ExportResult"
        assert isinstance(r.outcome, Outcome), f"{r.record_id}: outcome {r.outcome!r} is not an Outcome"
    ids = [r.record_id for r in results]
    dupes = [k for k, n in Counter(ids).items() if n > 1]
    assert not dupes, f"several results for the same record: {dupes}"
    expected = {r.record_id for r in records}
    assert set(ids) == expected, (
        f"results must match the records one to one; missing {sorted(expected - set(ids))}, "
        f"unexpected {sorted(set(ids) - expected)}")
    return {r.record_id: r for r in results}


def _describe(result: ExportResult) -> str:
    errors = "; ".join(f"{e.field}: {e.code} {e.message}" for e in result.errors)
    return f"{result.record_id}: {result.outcome.value} {result.message} {errors}".strip()


# ----------------------------------------------------------------------------- the contract

class AdapterContract:
    """Contract tests every SIS adapter must pass against its live test server.

    Subclass it as ``Test...`` (so pytest collects it) and provide the fixtures
    described in the module docstring.
    """

    #: how many records the batch tests export
    contract_batch_size = 5
    #: False when the SIS upserts on a natural key and a sent sis_id is not an update of it
    contract_updates_by_id = True
    #: False when the adapter cannot tell that a record sent without sis_id was matched
    contract_reports_matched_by = True

    @pytest.fixture
    def sis_count(self) -> Callable[[], int] | None:
        """Override to return a callable counting the students in the test server."""
        return None

    @pytest.fixture
    def unknown_sis_id(self) -> str | None:
        """Override to return an id the test server does not have."""
        return None

    @pytest.fixture
    def make_sis_busy(self) -> Callable[[int], Any] | None:
        """Override to return ``make_sis_busy(n)``: the next ``n`` record writes are refused
        as "busy, try again later", past the adapter's retries."""
        return None

    # -- settings and fields
    def test_settings_schema_is_valid(self, adapter: SISAdapter):
        assert isinstance(adapter, SISAdapter)
        assert type(adapter).name and type(adapter).label, "set the name and label class attributes"
        problems = settings_schema_problems(type(adapter).settings_schema())
        assert not problems, "\n".join(problems)

    def test_target_fields_are_well_formed(self, adapter: SISAdapter):
        sections = adapter.target_fields()
        problems = target_field_problems(sections)
        assert not problems, "\n".join(problems)

    def test_check_connection_succeeds(self, adapter: SISAdapter):
        result = adapter.check_connection()
        assert result.ok, result.message
        assert result.message

    # -- preview and export
    def test_preview_is_json_serialisable(self, adapter: SISAdapter, make_records):
        for record in make_records(2):
            body = adapter.preview(record)
            json.dumps(body)  # raises when not serialisable
            assert body, "preview() returned an empty body for a valid record"

    def test_batch_export_returns_one_result_per_record(self, adapter: SISAdapter, make_records,
                                                        sis_count):
        records = make_records(self.contract_batch_size)
        before = sis_count() if sis_count else None
        results = adapter.export(records)
        by_id = results_by_record(records, results)
        failed = [_describe(r) for r in by_id.values() if not r.ok]
        assert not failed, "valid records failed:\n" + "\n".join(failed)
        for r in by_id.values():
            assert r.sis_id, f"{r.record_id}: a succeeded record must carry its SIS id"
        if sis_count:
            assert sis_count() == before + len(records), "each new record adds one student"

    def test_export_result_order_does_not_matter(self, adapter: SISAdapter, make_records):
        records = list(reversed(make_records(3)))
        results = adapter.export(records)
        by_id = results_by_record(records, results)
        assert all(r.ok for r in by_id.values()), [_describe(r) for r in by_id.values()]

    def test_retried_export_does_not_duplicate(self, adapter: SISAdapter, make_records, sis_count):
        records = make_records(self.contract_batch_size)
        first = results_by_record(records, adapter.export(records))
        assert all(r.ok for r in first.values()), [_describe(r) for r in first.values()]
        after_first = sis_count() if sis_count else None
        # The same records again, as after a crash: no SIS id known to the core.
        again = [ExportRecord(record_id=r.record_id, payload=dict(r.payload), sis_id=None)
                 for r in records]
        second = results_by_record(again, adapter.export(again))
        assert all(r.ok for r in second.values()), [_describe(r) for r in second.values()]
        for rid, r in second.items():
            assert r.action != "insert", f"{rid}: exported again, it must not be inserted again"
            assert r.sis_id == first[rid].sis_id, f"{rid}: matched a different student"
        if sis_count:
            assert sis_count() == after_first, "a retried export created duplicate students"

    def test_export_of_nothing_returns_nothing(self, adapter: SISAdapter):
        assert adapter.export([]) == []

    # -- the SIS's own truth: NOT_FOUND, matched_by, RETRY
    def test_update_of_an_unknown_sis_id_is_not_found(self, adapter: SISAdapter, make_records,
                                                       sis_count, unknown_sis_id):
        if not unknown_sis_id:
            pytest.fail("Provide an `unknown_sis_id` fixture: an id your test server does not "
                        "have. The kit sends an update of it and expects Outcome.NOT_FOUND.")
        [new] = make_records(1)
        record = ExportRecord(record_id=new.record_id, payload=dict(new.payload),
                              sis_id=str(unknown_sis_id))
        before = sis_count() if sis_count else None
        [result] = results_by_record([record], adapter.export([record])).values()
        assert result.sis_id != str(unknown_sis_id), (
            f"{_describe(result)}: the SIS does not have {unknown_sis_id}; never report it back "
            f"as the record's id")
        if not self.contract_updates_by_id:
            # an upsert on the natural key may create it anew, under another id
            assert result.outcome == Outcome.NOT_FOUND or result.ok, _describe(result)
            return
        assert result.outcome == Outcome.NOT_FOUND, (
            f"an update of an id the SIS does not have must be NOT_FOUND: {_describe(result)}")
        assert not result.ok
        if sis_count:
            assert sis_count() == before, ("NOT_FOUND means nothing was written: the adapter "
                                           "must not insert the record itself")

    def test_reexport_of_a_record_the_sis_holds_reports_matched_by(self, adapter: SISAdapter,
                                                                  make_records, sis_count):
        if not self.contract_reports_matched_by:
            pytest.skip("this adapter does not report matched_by (contract_reports_matched_by)")
        records = make_records(2)
        first = results_by_record(records, adapter.export(records))
        assert all(r.ok for r in first.values()), [_describe(r) for r in first.values()]
        assert all(not r.matched_by for r in first.values()), (
            "a record the SIS did not have was not matched: matched_by must be empty")
        after_first = sis_count() if sis_count else None
        again = [ExportRecord(record_id=r.record_id, payload=dict(r.payload)) for r in records]
        second = results_by_record(again, adapter.export(again))
        for rid, r in second.items():
            assert r.ok, _describe(r)
            assert r.sis_id == first[rid].sis_id, f"{rid}: matched a different student"
            assert isinstance(r.matched_by, str) and r.matched_by.strip(), (
                f"{rid}: found in the SIS without a sis_id, it must say how (matched_by)")
        if sis_count:
            assert sis_count() == after_first, "a re-export created duplicate students"

    def test_a_busy_sis_yields_retry_and_writes_nothing(self, adapter: SISAdapter, make_records,
                                                        sis_count, make_sis_busy):
        if make_sis_busy is None:
            pytest.skip("the plugin provides no `make_sis_busy` fixture")
        records = make_records(self.contract_batch_size)
        before = sis_count() if sis_count else None
        make_sis_busy(1)
        results = results_by_record(records, adapter.export(records))
        retry = [r for r in results.values() if r.outcome == Outcome.RETRY]
        assert retry, "the SIS refused a record as busy; it must come back as RETRY: " + \
            "; ".join(_describe(r) for r in results.values())
        others = [r for r in results.values() if r.outcome != Outcome.RETRY]
        assert all(r.ok for r in others), [_describe(r) for r in others]
        for r in retry:
            assert not r.ok and not r.sis_id, f"{_describe(r)}: RETRY means nothing was written"
            assert r.message, f"{r.record_id}: say why it is to be sent again"
        if sis_count:
            assert sis_count() == before + len(others), "a RETRY record must not be written"
        # sent again as the core does, once the SIS is no longer busy: written, once
        again = [ExportRecord(record_id=r.record_id, payload=dict(r.payload))
                 for r in records if results[r.record_id].outcome == Outcome.RETRY]
        second = results_by_record(again, adapter.export(again))
        assert all(r.ok for r in second.values()), [_describe(r) for r in second.values()]
        if sis_count:
            assert sis_count() == before + len(records)

    # -- import (SIS -> Enroll): only for adapters that list students
    @pytest.fixture
    def sis_empty(self) -> Callable[[], Any] | None:
        """Override: a callable deleting every student of the test server."""
        return None

    @pytest.fixture
    def sis_seed(self) -> Callable[[int], Any] | None:
        """Override: a callable storing ``n`` valid students in the test server."""
        return None

    @pytest.fixture
    def sis_fail_page(self) -> Callable[[int, int], Any] | None:
        """Override: ``(page, times)``: that page of the next listing answers 500 ``times`` times."""
        return None

    @staticmethod
    def _importable(adapter, *fixtures):
        if not can_import(type(adapter)):
            pytest.skip(f"{type(adapter).__name__} does not list students (no import)")
        if any(f is None for f in fixtures):
            pytest.skip("provide the sis_empty, sis_seed and sis_fail_page fixtures to run the import contract")

    @staticmethod
    def _read(adapter, **kw) -> list[StudentPage]:
        pages = []
        for page in adapter.list_students(**kw):
            assert isinstance(page, StudentPage), f"list_students yielded {type(page).__name__}, not StudentPage"
            for st in page.students:
                assert isinstance(st, SISStudent), f"{st!r} is not an SISStudent"
                assert isinstance(st.sis_id, str) and st.sis_id, f"{st!r}: sis_id must be a non-empty str"
                assert isinstance(st.values, dict), f"{st.sis_id}: values must be a dict"
                assert all(isinstance(k, str) and k for k in st.values), f"{st.sis_id}: keys are dotted paths"
                json.dumps(st.values, default=str)
            pages.append(page)
        return pages

    def test_import_fields_are_well_formed(self, adapter: SISAdapter):
        self._importable(adapter)
        problems = target_field_problems(adapter.import_fields())
        assert not problems, "\n".join(problems)

    def test_list_students_pages_every_student_exactly_once(self, adapter, sis_empty, sis_seed, sis_fail_page):
        self._importable(adapter, sis_empty, sis_seed, sis_fail_page)
        sis_empty()
        sis_seed(23)
        pages = self._read(adapter, page_size=5)
        ids = [st.sis_id for p in pages for st in p.students]
        assert len(ids) == 23 and len(set(ids)) == 23, f"{len(ids)} listed, {len(set(ids))} distinct, 23 stored"
        assert all(len(p.students) <= 5 for p in pages), "a page held more students than page_size"
        assert len(pages) >= 5, "23 students at 5 per page take at least 5 pages"
        assert all(p.total in (None, 23) for p in pages), [p.total for p in pages]
        assert pages[-1].cursor is None, "the last page carries no cursor"
        assert all(p.cursor for p in pages[:-1]), "every page but the last carries a cursor"
        # resuming from the second page's cursor lists exactly what came after it
        rest = self._read(adapter, page_size=5, cursor=pages[1].cursor)
        assert [st.sis_id for p in rest for st in p.students] == ids[10:]

    def test_list_students_of_an_empty_sis(self, adapter, sis_empty, sis_seed, sis_fail_page):
        self._importable(adapter, sis_empty, sis_seed, sis_fail_page)
        sis_empty()
        pages = self._read(adapter, page_size=5)
        assert pages, "an empty SIS still yields one (empty) page"
        assert [st for p in pages for st in p.students] == []
        assert all(p.total in (None, 0) for p in pages)

    def test_a_page_failing_once_is_read_again(self, adapter, sis_empty, sis_seed, sis_fail_page):
        self._importable(adapter, sis_empty, sis_seed, sis_fail_page)
        sis_empty()
        sis_seed(12)
        sis_fail_page(2, 1)
        ids = [st.sis_id for p in self._read(adapter, page_size=5) for st in p.students]
        assert len(ids) == 12 and len(set(ids)) == 12, "a page that failed once was skipped or read twice"

    def test_a_page_that_keeps_failing_raises(self, adapter, sis_empty, sis_seed, sis_fail_page):
        self._importable(adapter, sis_empty, sis_seed, sis_fail_page)
        sis_empty()
        sis_seed(12)
        sis_fail_page(2, 50)
        seen = []
        with pytest.raises(AdapterError) as caught:
            for page in adapter.list_students(page_size=5):
                seen.extend(st.sis_id for st in page.students)
        assert len(seen) == 5, f"only the first page may come before the failure ({len(seen)} did)"
        assert str(caught.value), "the error says which page failed"
        sis_fail_page(0, 1)  # the server back to normal for the next tests

    def test_get_student_reads_one_student(self, adapter, sis_empty, sis_seed, sis_fail_page):
        self._importable(adapter, sis_empty, sis_seed, sis_fail_page)
        sis_empty()
        sis_seed(3)
        listed = [st for p in self._read(adapter) for st in p.students]
        one = adapter.get_student(listed[1].sis_id)
        assert isinstance(one, SISStudent) and one.sis_id == listed[1].sis_id
        assert one.values == listed[1].values, "get_student reads what list_students lists"
        assert adapter.get_student("999999999") is None


# =============================================================================
# App fixtures (owned by the core; add below this line)
# =============================================================================


class LiveServer:
    """Serve a WSGI app (the Enroll Sync app, or a test SIS) on a free loopback port in
    a thread, so tests talk to it over real HTTP. ``.url``; ``.stop()``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import threading

        from werkzeug.serving import make_server
        self.app = app
        self.server = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


#: sandbox URLs for the demo connections that point at closed ports (nothing answers)
CLOSED_SANDBOX_URLS = {"powerschool": "http://127.0.0.1:9", "edfi": "http://127.0.0.1:9"}

#: tiny waits for the demo connections, so checks against a closed port fail fast
_FAST_RETRIES = {"retry_backoff": 0.01, "max_backoff": 0.05}

_CSRF_RE = None


def __getattr__(name):
    # Names that need httpx or the demo data load on first use, so that this plugin,
    # loaded in every pytest run, stays light.
    if name == "Session":
        return _session_class()
    if name == "ROLE_EMAIL":
        from .demo import DEMO_USERS
        return {role: email for role, email, _ in DEMO_USERS}
    if name == "DEMO_PASSWORD":
        from .demo import DEMO_PASSWORD
        return DEMO_PASSWORD
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- building the app

def make_app(tmp_path, **overrides):
    """An Enroll Sync app on a fresh SQLite file under ``tmp_path/instance`` (the database
    is neither migrated nor seeded: see ``demo_app``). No in-process sync worker (start
    one with ``run_worker``); config keys in ``overrides`` win."""
    from . import create_app
    config = {
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'instance' / 'app.db'}",
        "QUEUE_URL": f"sqlite:///{tmp_path / 'instance' / 'queue.db'}",
        "IN_PROCESS_WORKER": "0",
        "TESTING": True,
        "LOGIN_MAX_ATTEMPTS": "50",
    }
    config.update(overrides)
    return create_app(config)


def demo_app(tmp_path, sandbox_urls: dict | None = None, *, registrations: int = 40,
             connection_settings: dict | None = None, **overrides):
    """``make_app`` with the database migrated and the demo district loaded: its users
    (``ROLE_EMAIL``, password ``DEMO_PASSWORD``), five schools, ``registrations``
    registrations, and one connection per ``register_demo_connections`` answer, each
    pointed at ``sandbox_urls`` (name -> base URL; default: closed ports).
    ``connection_settings`` are merged into every demo connection's settings."""
    from .db import database
    from .demo import load_demo
    from .migrations import upgrade
    from .models import SyncConnection
    app = make_app(tmp_path, **overrides)
    urls = dict(CLOSED_SANDBOX_URLS if sandbox_urls is None else sandbox_urls)
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(app.extensions["enroll_sync.plugins"], urls, registrations=registrations)
        if connection_settings:
            for conn in SyncConnection.select():
                conn.settings = {**conn.settings, **connection_settings}
                conn.save()
    return app


def close_database() -> None:
    """Close the core's database connection if one is open (fixture teardown)."""
    from .db import database
    if database.obj is not None and not database.is_closed():
        database.close()


@contextlib.contextmanager
def db(app):
    """Inside ``app``'s context with a database connection open: for set-up and
    checks the web has no door for. Nest freely."""
    from .db import database
    with app.app_context(), database.connection_context():
        yield


@contextlib.contextmanager
def run_worker(app, workers: int = 1):
    """Consume ``app``'s sync queue in this process (threads, as ``enroll-sync serve``
    does) until the block ends; jobs started meanwhile run for real."""
    from .sync.queue import start_in_process_consumer
    consumer = start_in_process_consumer(app, workers=workers)
    try:
        yield consumer
    finally:
        consumer.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05,
             message: str = "condition"):
    """Call ``predicate`` until it returns something truthy and return that; fail the test
    with ``message`` after ``timeout`` seconds."""
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


# ----------------------------------------------------------------------------- reading and seeding the core
# Plain snapshots, so plugin suites never touch the core's models.

@dataclass(frozen=True)
class ConnectionInfo:
    """A sync connection as stored (secrets left out)."""
    id: int
    name: str
    adapter: str
    environment: str
    settings: dict
    last_check_ok: bool | None
    last_check_message: str | None


@dataclass(frozen=True)
class SchoolInfo:
    id: int
    name: str
    school_number: str
    kind: str
    connection_id: int | None


@dataclass(frozen=True)
class RegistrationInfo:
    id: int
    form_id: str
    status: str
    sync_status: str
    #: the student's SIS id on the connection of the registration's school (their link)
    sis_id: str | None


@dataclass(frozen=True)
class ItemInfo:
    """One registration in a sync job."""
    registration_id: int
    status: str
    reason: str | None
    sis_id: str | None


@dataclass(frozen=True)
class JobInfo:
    id: int
    status: str
    message: str | None
    items: tuple[ItemInfo, ...]


def _connection_query(conn: int | str):
    from .models import SyncConnection
    if isinstance(conn, int):
        return SyncConnection.id == conn
    return (SyncConnection.name == conn) | (SyncConnection.adapter == conn)


def connection(app, conn: int | str) -> ConnectionInfo:
    """The connection with id ``conn``, or named ``conn``, or the one using the adapter
    named ``conn`` (``"generic_rest"``); it must be exactly one."""
    from .models import SyncConnection
    with db(app):
        found = list(SyncConnection.select().where(_connection_query(conn)))
    assert len(found) == 1, f"{len(found)} connections match {conn!r}"
    c = found[0]
    return ConnectionInfo(c.id, c.name, c.adapter, c.environment, dict(c.settings or {}),
                          c.last_check_ok, c.last_check_message)


def save_mapping(app, conn: int | str, rows: Sequence[dict], kind: str = "export_student") -> None:
    """Save ``rows`` as the connection's mapping of ``kind`` (a new version, as the
    Field Mapping editor's Save does). ``conn`` as for ``connection``."""
    from .sync.mappings import load
    from .sync.mappings.versions import save_rows
    from .models import SyncConnection
    conn_id = connection(app, conn).id
    with db(app):
        row = SyncConnection.get_by_id(conn_id)
        save_rows(row, kind, load(row, kind), [dict(r) for r in rows], None)


def schools(app) -> list[SchoolInfo]:
    """Every school, in id order."""
    from .models import School
    with db(app):
        return [SchoolInfo(s.id, s.name, s.school_number, s.kind, s.sync_connection_id)
                for s in School.select().order_by(School.id)]


def registrations(app, ids: Sequence[int] | None = None) -> list[RegistrationInfo]:
    """The registrations with ``ids`` (every one when None), in id order."""
    from .models import Registration
    from .sync.links import sis_id_for
    with db(app):
        query = Registration.select().order_by(Registration.id)
        if ids is not None:
            query = query.where(Registration.id.in_(list(ids)))
        return [RegistrationInfo(r.id, r.form_id, r.status, r.sync_status,
                                 sis_id_for(r.student_id, r.school.sync_connection)) for r in query]


def sync_job(app, job_id: int) -> JobInfo:
    """A sync job and its items, as stored now."""
    from .models import SyncItem, SyncJob
    with db(app):
        job = SyncJob.get_by_id(job_id)
        items = tuple(ItemInfo(i.registration_id, i.status, i.reason, i.sis_id)
                      for i in SyncItem.select().where(SyncItem.job == job_id).order_by(SyncItem.id))
    return JobInfo(job.id, job.status, job.message, items)


def wait_for_job(app, job_id: int, timeout: float = 60.0) -> JobInfo:
    """Wait until the job has left the queue and stopped running (a worker must be
    consuming: ``run_worker``); return it."""
    from .models import ACTIVE_JOB_STATUSES

    def finished():
        job = sync_job(app, job_id)
        return job if job.status not in ACTIVE_JOB_STATUSES else None
    return wait_for(finished, timeout, interval=0.1, message=f"sync job {job_id} to finish")


# ----------------------------------------------------------------------------- imports (SIS -> Enroll)

@dataclass(frozen=True)
class ImportInfo:
    """An import job (or preview) as stored: status, message, outcome counts by status
    (Created, Updated, Unchanged, Conflict, Skipped, Failed)."""
    id: int
    status: str
    message: str | None
    counts: dict


def save_import_mapping(app, conn: int | str, rows: Sequence[dict]) -> None:
    """Save ``rows`` as the connection's Import Student Mapping (``"overwrite": True`` on
    a row checks its Overwrite)."""
    save_mapping(app, conn, rows, kind="import_student")


def import_counts(app, job_id: int) -> ImportInfo:
    """An import job and its counts, as stored now."""
    from .models import SyncJob
    from .sync.imports.jobs import import_counts as counts
    with db(app):
        job = SyncJob.get_by_id(job_id)
        return ImportInfo(job.id, job.status, job.message, counts(job.id))


def run_import(app, conn: int | str, *, preview: bool = False, full: bool = False) -> ImportInfo:
    """Start an import (or a preview) of the connection and run it to its end in this
    thread, as a worker would; return it."""
    from .models import SyncConnection
    from .sync.imports.jobs import start_import
    from .sync.imports.runner import run_import_job
    conn_id = connection(app, conn).id
    with db(app):
        job = start_import(app, SyncConnection.get_by_id(conn_id), None, preview=preview, full=full)
        run_import_job(app, job.id)
    return import_counts(app, job.id)


# ----------------------------------------------------------------------------- HTTP sessions

_SESSION = None


def _session_class():
    global _SESSION, _CSRF_RE
    if _SESSION is not None:
        return _SESSION
    import re

    import httpx
    _CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"|name="csrf-token" content="([^"]+)"')

    class Session(httpx.Client):
        """An HTTP client that keeps cookies and knows the page's CSRF token:
        ``page(path)`` GETs and remembers the token; ``post_form(path, data, htmx=False)``
        posts it (as the form field, or the ``X-CSRFToken`` header of an HTMX request)."""

        csrf: str | None = None

        def remember_csrf(self, resp):
            m = _CSRF_RE.search(resp.text)
            if m:
                self.csrf = m.group(1) or m.group(2)
            return resp

        def page(self, path, **kw):
            return self.remember_csrf(self.get(path, **kw))

        def post_form(self, path, data=None, csrf=True, htmx=False, **kw):
            data = dict(data or {})
            headers = dict(kw.pop("headers", {}) or {})
            if csrf and self.csrf is None:
                self.page("/login")
            if htmx:
                headers["HX-Request"] = "true"
                if csrf:
                    headers["X-CSRFToken"] = self.csrf
            elif csrf:
                data.setdefault("csrf_token", self.csrf)
            return self.post(path, data=data, headers=headers, **kw)

    Session.__qualname__ = "Session"
    _SESSION = Session
    return Session


def sign_in(base_url: str, email: str, password: str | None = None):
    """A ``Session`` signed in as ``email`` (or a demo role: ``"District Admin"``) with
    the demo password unless ``password`` is given; close it when done."""
    from .demo import DEMO_PASSWORD, DEMO_USERS
    email = {role: e for role, e, _ in DEMO_USERS}.get(email, email)
    s = _session_class()(base_url=base_url, follow_redirects=False, timeout=30)
    s.page("/login")
    resp = s.post_form("/login", {"email": email, "password": DEMO_PASSWORD if password is None else password})
    assert resp.status_code == 302, resp.text[:500]
    # signing in starts a new session with a new CSRF token: read it from the first page
    s.page("/", follow_redirects=True)
    return s


# ----------------------------------------------------------------------------- fixtures
# A plugin suite (or the core's conftest) may override any of them by name.

@pytest.fixture
def demo_sandbox_urls() -> dict:
    """Where the demo connections of the ``app`` fixture point (name -> base URL).
    Override it to aim a demo connection at your test server."""
    return dict(CLOSED_SANDBOX_URLS)


@pytest.fixture
def app(tmp_path, demo_sandbox_urls):
    """The demo app (``demo_app``) on a SQLite file in ``tmp_path``, its connections
    retrying quickly so checks against closed ports fail fast."""
    application = demo_app(tmp_path, demo_sandbox_urls, connection_settings=_FAST_RETRIES)
    yield application
    close_database()


@pytest.fixture
def live(app):
    """``app`` served over real HTTP on a loopback port (a ``LiveServer``: ``.url``)."""
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture
def login(live):
    """``login(role_or_email) -> Session`` signed in to ``live``; closed after the test."""
    sessions = []

    def _login(role_or_email):
        s = sign_in(live.url, role_or_email)
        sessions.append(s)
        return s

    yield _login
    for s in sessions:
        s.close()


@pytest.fixture
def anon(live):
    """A ``Session`` on ``live`` that has not signed in."""
    s = _session_class()(base_url=live.url, follow_redirects=False, timeout=30)
    yield s
    s.close()
