"""enroll_sync.testing's checks catch broken adapters (so the contract can fail)."""
from __future__ import annotations

import pytest

from enroll_sync import (
    Code, ExportRecord, ExportResult, FieldSection, Outcome, SettingField, TargetField,
)
from enroll_sync.testing import results_by_record, settings_schema_problems, target_field_problems
from sis_powerschool.adapter import PowerSchoolAdapter, core_sections


def test_the_powerschool_schema_and_fields_pass():
    assert settings_schema_problems(PowerSchoolAdapter.settings_schema()) == []
    assert target_field_problems(core_sections(schools=[Code("100", "A")])) == []


def test_settings_problems_are_found():
    problems = settings_schema_problems([
        SettingField("api_key", "API key"),                   # a secret typed string
        SettingField("api_key", "Again", "secret"),           # duplicate key
        SettingField("mode", "Mode", "choice"),               # no choices
        SettingField("size", "Size", "integer", default=0, min=1),
        SettingField("token", "Token", "secret", default="abc"),
        SettingField("x", "", "colour"),
        SettingField("environment", "Environment", "choice", choices=(("a", "A"),)),
    ])
    text = "\n".join(problems)
    for needle in ["'api_key': looks like a secret", "'api_key': key used 2 times",
                   "'mode': a choice field needs choices", "'size': default is below min",
                   "'token': a secret must not have a default", "'x': has no label",
                   "'x': type 'colour'", "'environment' is handled by the core"]:
        assert needle in text


def test_target_field_problems_are_found():
    problems = target_field_problems([
        FieldSection("a", "A", (TargetField("x.y", "X"), TargetField("x.y", "X again"))),
        FieldSection("b", "B", ()),
        FieldSection("c", "C", (TargetField("g", "G", "code"), TargetField("h..i", "H", "blob"),
                                TargetField("j", "J", codes=(Code("1"), Code("1")))),),
    ])
    text = "\n".join(problems)
    for needle in ["field 'x.y': key used 2 times", "section 'b': has no fields",
                   "'g': typed 'code' but lists no codes", "'h..i': keys are dotted paths",
                   "'h..i': type 'blob'", "'j': duplicate code values"]:
        assert needle in text
    assert target_field_problems([]) != []


def test_results_by_record_enforces_one_result_per_record():
    recs = [ExportRecord("1", {}), ExportRecord("2", {})]
    ok = [ExportResult("2", Outcome.SUCCEEDED), ExportResult("1", Outcome.FAILED)]
    assert set(results_by_record(recs, ok)) == {"1", "2"}
    with pytest.raises(AssertionError, match="missing"):
        results_by_record(recs, ok[:1])
    with pytest.raises(AssertionError, match="several results"):
        results_by_record(recs, ok + ok[:1])
    with pytest.raises(AssertionError, match="must return a list"):
        results_by_record(recs, tuple(ok))


# ----------------------------------------------------------------------------- the kit's new checks
# Run the contract's checks directly against adapters broken on purpose (over the sandbox's
# socket), so each check is shown to fail when the adapter gets it wrong.

from enroll_sync.testing import AdapterContract  # noqa: E402
from ps_helpers import record  # noqa: E402


class _Broken(PowerSchoolAdapter):
    """PowerSchool, but forgetting one piece of per-record truth."""

    forget = ""

    def export(self, records):
        out = super().export(records)
        for r in out:
            if self.forget == "not_found" and r.outcome == Outcome.NOT_FOUND:
                r.outcome = Outcome.FAILED
            if self.forget == "matched_by":
                r.matched_by = None
            if self.forget == "retry" and r.outcome == Outcome.RETRY:
                r.outcome = Outcome.FAILED
        return out


@pytest.fixture
def broken(sandbox):
    def make(forget):
        adapter = _Broken({"server_url": sandbox.url, "client_id": sandbox.client_id,
                           "client_secret": sandbox.client_secret, "batch_size": 2,
                           "retry_backoff": 0.005, "max_backoff": 0.05, "timeout_s": 2})
        adapter.forget = forget
        return adapter
    return make


def make_records(n):
    return [record() for _ in range(n)]


def test_the_kit_passes_the_real_adapter(broken, sandbox):
    kit = AdapterContract()
    adapter = broken("")
    kit.test_update_of_an_unknown_sis_id_is_not_found(adapter, make_records, sandbox.count, "98765")
    kit.test_reexport_of_a_record_the_sis_holds_reports_matched_by(adapter, make_records,
                                                                   sandbox.count)
    kit.test_a_busy_sis_yields_retry_and_writes_nothing(
        adapter, make_records, sandbox.count, lambda n: sandbox.set_faults(busy_records=n))


def test_the_kit_catches_a_missing_not_found(broken, sandbox):
    with pytest.raises(AssertionError, match="must be NOT_FOUND"):
        AdapterContract().test_update_of_an_unknown_sis_id_is_not_found(
            broken("not_found"), make_records, sandbox.count, "98765")


def test_the_kit_catches_an_adapter_inserting_an_unknown_id_itself(make_adapter, sandbox,
                                                                   monkeypatch):
    adapter = make_adapter()
    real = adapter.export

    def insert_instead(records):  # the forbidden fallback: insert when the id is unknown
        return real([type(r)(r.record_id, r.payload) for r in records])
    monkeypatch.setattr(adapter, "export", insert_instead)
    with pytest.raises(AssertionError, match="must be NOT_FOUND"):
        AdapterContract().test_update_of_an_unknown_sis_id_is_not_found(
            adapter, make_records, sandbox.count, "98765")


def test_the_kit_requires_an_unknown_sis_id_fixture(broken, sandbox):
    with pytest.raises(pytest.fail.Exception, match="unknown_sis_id"):
        AdapterContract().test_update_of_an_unknown_sis_id_is_not_found(
            broken(""), make_records, sandbox.count, None)


def test_the_kit_catches_a_missing_matched_by(broken, sandbox):
    with pytest.raises(AssertionError, match="matched_by"):
        AdapterContract().test_reexport_of_a_record_the_sis_holds_reports_matched_by(
            broken("matched_by"), make_records, sandbox.count)


def test_the_kit_catches_busy_records_reported_failed(broken, sandbox):
    with pytest.raises(AssertionError, match="RETRY"):
        AdapterContract().test_a_busy_sis_yields_retry_and_writes_nothing(
            broken("retry"), make_records, sandbox.count,
            lambda n: sandbox.set_faults(busy_records=n))


def test_the_kit_skips_the_retry_check_only_without_the_fixture(broken, sandbox):
    with pytest.raises(pytest.skip.Exception):
        AdapterContract().test_a_busy_sis_yields_retry_and_writes_nothing(
            broken(""), make_records, sandbox.count, None)
