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
