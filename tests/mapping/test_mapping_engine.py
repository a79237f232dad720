"""The compiled mapping: payloads, problems, row config errors, validation against SIS fields, previews."""
from __future__ import annotations

import json
from datetime import date

import pluggy
import pytest

from enroll_sync.adapters import Code, FieldSection, TargetField
from enroll_sync.hookspecs import hookimpl
from enroll_sync.mapping import (MappingContext, Param, Step, StepError, TraceStep, compile_mapping,
                                 compile_row, step_catalog)

TODAY = date(2026, 8, 15)
INSERT = MappingContext(today=TODAY, insert=True)
PREVIEW = MappingContext(today=TODAY, insert=None)
UPDATE = MappingContext(today=TODAY, insert=False)

TARGETS = [
    FieldSection("name", "Name", (
        TargetField("name.first_name", "First Name", required=True, max_length=50),
        TargetField("name.middle_name", "Middle Name", max_length=30),
        TargetField("name.last_name", "Last Name", required=True, max_length=50),
    )),
    FieldSection("demographics", "Demographics", (
        TargetField("demographics.gender", "Gender", type="code", codes=(Code("M", "Male"), Code("F", "Female"))),
        TargetField("demographics.birth_date", "Birth Date", type="date", required=True),
    )),
    FieldSection("school_enrollment", "School Enrollment", (
        TargetField("school_enrollment.grade_level", "Grade Level", type="integer", required=True,
                    insert_only=True),
        TargetField("school_enrollment.enroll_status", "Enroll Status", codes=(Code("A"), Code("P"))),
    )),
    FieldSection("contact", "Contact", (
        TargetField("contact.emergency_phone1", "Emergency Phone 1", max_length=30),
        TargetField("contact.guardian_email", "Guardian Email", max_length=100),
        TargetField("ext.photo_release", "Photo Release", type="boolean"),
    )),
]

# The rows of docs/architecture.md, plus the required fields.
WALKTHROUGH_ROWS = [
    {"to": "demographics.gender", "type": "match_codes", "from": "gender",
     "codes": {"Female": "F", "Male": "M"}, "unmatched": "fallback", "fallback": "F"},
    {"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
    {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"},
    {"to": "name.middle_name", "type": "do_not_map"},
    {"to": "name.last_name", "type": "direct", "from": "student_legal_last_name"},
    {"to": "school_enrollment.grade_level", "type": "match_codes", "from": "grade_applying",
     "codes": {"K": "0", "1": "1", "2": "2"}, "unmatched": "fail"},
]

ANA = {"student_legal_first_name": "Ana", "student_legal_middle_name": "María", "student_legal_last_name": "López",
       "gender": "Female", "birth_date": "09/01/2007", "grade_applying": "K", "guardian1_phone": "415.555.0134",
       "registration.school_year": "2026-2027", "registration.status": "Approved"}


def mapping(rows=WALKTHROUGH_ROWS, targets=TARGETS, **kw):
    return compile_mapping(json.loads(json.dumps(rows)), targets, **kw)


def codes_of(result, field=None):
    return [(p.field, p.code, p.severity) for p in result.problems if field is None or p.field == field]


# ----------------------------------------------------------------------------- the happy path

def test_walkthrough_mapping_produces_the_payload_the_sis_gets():
    result = mapping()(ANA, INSERT)
    assert result.payload == {
        "demographics.gender": "F",
        "demographics.birth_date": "2007-09-01",
        "name.first_name": "Ana",
        "name.last_name": "López",
        "school_enrollment.grade_level": "0",
    }
    assert result.ok and result.problems == []


def test_payload_keys_follow_row_order():
    assert list(mapping()(ANA, INSERT).payload) == [
        "demographics.gender", "demographics.birth_date", "name.first_name", "name.last_name",
        "school_enrollment.grade_level"]


def test_blank_values_are_left_out_of_the_payload():
    rows = [
        {"to": "contact.guardian_email", "type": "direct", "from": "email"},
        {"to": "name.middle_name", "type": "transformation", "from": "middle", "steps": [{"kind": "trim"}]},
        {"to": "demographics.gender", "type": "match_codes", "from": "gender", "codes": {"Female": "F"},
         "unmatched": "blank"},
        {"to": "contact.emergency_phone1", "type": "transformation", "from": "phone",
         "steps": [{"kind": "phone"}]},
    ]
    m = compile_mapping(rows)
    for blank in (None, "", "   ", []):
        source = {"email": blank, "middle": blank, "gender": blank, "phone": blank}
        result = m(source, INSERT)
        assert result.payload == {}
        assert result.ok, result.problems
    assert m({}, INSERT).payload == {}


def test_non_blank_falsy_values_are_sent():
    rows = [{"to": "ext.photo_release", "type": "transformation", "from": "photo",
             "steps": [{"kind": "boolean", "format": "boolean"}]},
            {"to": "school_enrollment.grade_level", "type": "direct", "from": "grade"}]
    result = compile_mapping(rows, TARGETS)({"photo": "No", "grade": 0}, UPDATE)
    assert result.payload == {"ext.photo_release": False}  # grade_level is insert-only: dropped on update
    result = compile_mapping(rows, TARGETS)({"photo": "No", "grade": 0}, INSERT)
    assert result.payload == {"ext.photo_release": False, "school_enrollment.grade_level": 0}


# ----------------------------------------------------------------------------- Match Codes

def codes_row(policy=None, fallback=None, codes=None):
    row = {"to": "demographics.gender", "type": "match_codes", "from": "gender",
           "codes": codes or {"Female": "F", "Male": "M"}}
    if policy:
        row["unmatched"] = policy
    if fallback is not None:
        row["fallback"] = fallback
    return compile_mapping([row], TARGETS)


def test_match_codes_matches_ignoring_case_and_spaces():
    m = codes_row("fail")
    assert m({"gender": "Male"}, PREVIEW).payload == {"demographics.gender": "M"}
    assert m({"gender": " female "}, PREVIEW).payload == {"demographics.gender": "F"}


def test_unmatched_code_with_fallback_sends_the_fallback_and_warns():
    result = codes_row("fallback", "F")({"gender": "Non-binary"}, INSERT)
    assert result.payload["demographics.gender"] == "F"
    assert codes_of(result, "demographics.gender") == [("demographics.gender", "unmatched_code", "warning")]
    assert "Non-binary" in result.problems_for("demographics.gender")[0].message
    assert not any(p.is_error for p in result.problems_for("demographics.gender"))


def test_unmatched_code_with_blank_sends_nothing_and_warns():
    result = codes_row("blank")({"gender": "Non-binary"}, INSERT)
    assert "demographics.gender" not in result.payload
    assert codes_of(result, "demographics.gender") == [("demographics.gender", "unmatched_code", "warning")]


def test_unmatched_code_with_fail_fails_the_record_never_passing_the_answer_through():
    result = codes_row("fail")({"gender": "Non-binary"}, INSERT)
    assert "demographics.gender" not in result.payload
    assert codes_of(result, "demographics.gender") == [("demographics.gender", "unmatched_code", "error")]
    assert not result.ok


def test_match_codes_without_a_policy_fails_rather_than_passing_through():
    result = codes_row()({"gender": "Non-binary"}, UPDATE)
    assert codes_of(result) == [("demographics.gender", "unmatched_code", "error")]
    assert not result.ok and result.payload == {}


@pytest.mark.parametrize("blank", ["", "   ", None, []])
def test_a_blank_answer_follows_the_rows_unmatched_policy(blank):
    source = {"gender": blank} if blank is not None else {}
    # Leave blank: nothing sent, nothing to report
    result = codes_row("blank")(source, UPDATE)
    assert result.ok and result.payload == {} and result.problems == []
    # Fallback: the fallback is sent, with a warning that says there was no answer
    result = codes_row("fallback", "F")(source, UPDATE)
    assert result.ok and result.payload == {"demographics.gender": "F"}
    assert [p.message for p in result.problems] == ["No answer; sent the fallback 'F'."]
    # Fail the record: a blank answer has no code either
    result = codes_row("fail")(source, UPDATE)
    assert not result.ok and result.payload == {}
    assert codes_of(result) == [("demographics.gender", "unmatched_code", "error")]
    assert result.problems[0].message.startswith("No answer")


def test_match_codes_maps_multi_select_answers_item_by_item():
    row = {"to": "ext.races", "type": "match_codes", "from": "race", "codes": {"Asian": "A", "White": "W"},
           "unmatched": "blank"}
    result = compile_mapping([row])({"race": ["White", "Asian", "Other"]}, INSERT)
    assert result.payload == {"ext.races": ["W", "A"]}
    assert codes_of(result) == [("ext.races", "unmatched_code", "warning")]


def test_codes_not_known_to_the_sis_are_flagged_at_compile_and_fail_when_used():
    m = codes_row("fallback", "X", codes={"Female": "F", "Male": "Male"})
    assert [p.code for p in m.config_problems] == ["config_warning", "config_warning"]
    assert m({"gender": "Female"}, INSERT).payload == {"demographics.gender": "F"}
    bad = m({"gender": "Male"}, INSERT)
    assert codes_of(bad, "demographics.gender") == [("demographics.gender", "invalid_code", "error")]


# ----------------------------------------------------------------------------- row config errors

BAD_ROWS = [
    ({"to": "name.first_name", "type": "transformation", "from": "first", "steps": [{"kind": "rot13"}]},
     "unknown transformation 'rot13'"),
    ({"to": "name.first_name", "type": "transformation", "from": "first",
      "steps": [{"kind": "substitute", "mode": "regex", "find": "([a-z"}]}, "Step 1 (Substitute)"),
    ({"to": "name.first_name", "type": "transformation", "from": "first",
      "steps": [{"kind": "trim"}, {"kind": "date", "from_format": "someday"}]}, "Step 2 (Date)"),
    ({"to": "name.first_name", "type": "transformation", "from": "first", "steps": "trim"}, "must be a list"),
    ({"to": "name.first_name", "type": "transformation"}, "Add a step"),
    ({"to": "name.first_name", "type": "direct"}, "Choose a From Enroll Field"),
    ({"to": "name.first_name", "from": "first"}, "Choose a Mapping Type"),
    ({"to": "name.first_name", "type": "copy", "from": "first"}, "Unknown Mapping Type"),
    ({"to": "name.first_name", "type": "match_codes", "from": "first", "codes": {"A": "B"},
      "unmatched": "fallback"}, "fallback code"),
    ({"to": "name.first_name", "type": "match_codes", "from": "first", "codes": {"A": "B"},
      "unmatched": "sometimes"}, "sometimes"),
    ({"to": "name.first_name", "type": "match_codes", "from": "first", "codes": "A=B"}, "Codes"),
    ({"to": "name.first_name", "type": "direct", "from": "no_such_field"}, "unknown Enroll field 'no_such_field'"),
    ({"to": "name.first_name", "type": "transformation",
      "steps": [{"kind": "join", "fields": ["first", "ghost"]}]}, "unknown Enroll field 'ghost'"),
    ({"to": "name.first_name", "type": "direct", "from": {"key": "first"}}, "field key"),
]


@pytest.mark.parametrize("row, message", BAD_ROWS, ids=[m for _, m in BAD_ROWS])
def test_row_config_errors_are_reported_on_the_row_and_on_every_record(row, message):
    rows = [row, {"to": "name.last_name", "type": "direct", "from": "last"}]
    m = compile_mapping(rows, TARGETS, source_fields=["first", "last"])  # must not raise
    assert any(message in p.message for p in m.config_problems), m.config_problems
    assert all(p.field == "name.first_name" for p in m.config_problems)
    for source in ({"first": "Ana", "last": "López"}, {}):
        result = m(source, PREVIEW)
        assert not result.ok
        assert any(p.code == "config" and message in p.message for p in result.problems_for("name.first_name"))
        assert "name.first_name" not in result.payload
    assert m({"first": "Ana", "last": "López"}, PREVIEW).payload == {"name.last_name": "López"}
    trace = m.trace_row("name.first_name", {"first": "Ana"}, PREVIEW)
    assert trace and all(t.error for t in trace) and any(message in t.error for t in trace)
    cell = m.evaluate_row("name.first_name", {"first": "Ana"}, PREVIEW)
    assert cell.value is None and not cell.ok


def test_unknown_to_field_is_a_row_error_only_when_the_sis_fields_are_known():
    row = [{"to": "name.nickname", "type": "direct", "from": "first"}]
    assert compile_mapping(row)({"first": "Ana"}, PREVIEW).payload == {"name.nickname": "Ana"}
    m = compile_mapping(row, TARGETS)
    assert "not a field of this SIS" in m.config_problems[0].message
    assert not m({"first": "Ana"}, PREVIEW).ok


def test_system_values_are_always_readable():
    m = compile_mapping([{"to": "name.first_name", "type": "direct", "from": "student.sis_id"}],
                        source_fields=["first"])
    assert m.config_problems == []
    assert m({"student.sis_id": "123"}, PREVIEW).payload == {"name.first_name": "123"}


def test_a_to_field_mapped_twice_is_an_error_on_the_second_row():
    rows = [{"to": "name.first_name", "type": "direct", "from": "a"},
            {"to": "name.first_name", "type": "direct", "from": "b"}]
    m = compile_mapping(rows, TARGETS)
    result = m({"a": "Ana", "b": "Bea"}, PREVIEW)
    assert result.payload["name.first_name"] == "Ana"
    assert any("more than one row" in p.message for p in result.errors)


def test_malformed_rows_do_not_break_compilation():
    m = compile_mapping(["not a row", {"type": "direct", "from": "a"}], TARGETS)
    result = m({"a": "x"}, PREVIEW)
    assert not result.ok
    messages = " ".join(p.message for p in result.errors)
    assert "not a mapping row" in messages and "no To Field" in messages


class _BrokenInit(Step):
    kind, label = "broken_init", "Broken Init"

    def __init__(self, **settings):
        raise TypeError("plugin bug")


class _BrokenApply(Step):
    kind, label = "broken_apply", "Broken Apply"

    def apply(self, value, ctx):
        return value["nope"]


def test_plugin_step_bugs_become_problems_not_exceptions():
    steps = {"broken_init": _BrokenInit, "broken_apply": _BrokenApply}
    rows = [{"to": "a", "type": "transformation", "from": "x", "steps": [{"kind": "broken_init"}]},
            {"to": "b", "type": "transformation", "from": "x", "steps": [{"kind": "broken_apply"}]}]
    m = compile_mapping(rows, steps=steps)
    assert "plugin bug" in m.config_problems[0].message
    result = m({"x": "value"}, PREVIEW)
    assert codes_of(result) == [("a", "config", "error"), ("b", "step_bug", "error")]
    assert "Broken Apply" in result.problems_for("b")[0].message
    assert m.trace_row("b", {"x": "v"}, PREVIEW)[-1].error.startswith("failed unexpectedly")


# ----------------------------------------------------------------------------- step errors at apply time

def test_step_error_fails_the_record_with_the_step_and_the_value_in_the_message():
    result = mapping()(dict(ANA, birth_date="31/12/2007"), INSERT)
    assert not result.ok
    [problem] = result.problems_for("demographics.birth_date")
    assert problem.code == "step_error"
    assert "Step 1 (Date)" in problem.message and "31/12/2007" in problem.message
    assert "demographics.birth_date" not in result.payload
    assert result.payload["name.first_name"] == "Ana"  # the rest is still shown in the preview


def test_step_error_on_a_required_field_is_reported_once():
    result = mapping()(dict(ANA, birth_date="soon"), INSERT)
    assert [p.code for p in result.problems_for("demographics.birth_date")] == ["step_error"]


def test_expression_error_is_a_problem_not_a_crash():
    rows = [{"to": "x", "type": "transformation", "from": "a",
             "steps": [{"kind": "expression", "expression": "$number(value)"}]}]
    result = compile_mapping(rows)({"a": "abc"}, PREVIEW)
    assert codes_of(result) == [("x", "step_error", "error")]
    assert compile_mapping(rows)({"a": "12"}, PREVIEW).payload == {"x": 12}


# ----------------------------------------------------------------------------- validation against SIS fields

def test_value_longer_than_the_sis_allows_is_an_error():
    rows = [{"to": "name.first_name", "type": "direct", "from": "first"}]
    result = compile_mapping(rows, TARGETS)({"first": "A" * 51}, PREVIEW)
    [problem] = result.problems_for("name.first_name")
    assert (problem.code, problem.severity) == ("too_long", "error")
    assert "51" in problem.message and "50" in problem.message
    assert compile_mapping(rows, TARGETS)({"first": "A" * 50}, PREVIEW).ok


def test_max_length_step_fixes_what_is_too_long():
    rows = [{"to": "name.first_name", "type": "transformation", "from": "first",
             "steps": [{"kind": "max_length", "length": 50}]}]
    result = compile_mapping(rows, TARGETS)({"first": "A" * 80}, PREVIEW)
    assert result.ok and result.payload == {"name.first_name": "A" * 50}


def test_value_not_among_the_allowed_codes_is_an_error():
    rows = [{"to": "school_enrollment.enroll_status", "type": "direct", "from": "status"}]
    m = compile_mapping(rows, TARGETS)
    assert m({"status": "A"}, PREVIEW).ok
    bad = m({"status": "Approved"}, PREVIEW)
    assert codes_of(bad, "school_enrollment.enroll_status") == [
        ("school_enrollment.enroll_status", "invalid_code", "error")]
    assert "A, P" in bad.problems_for("school_enrollment.enroll_status")[0].message


def test_direct_date_in_the_wrong_format_is_an_error_pointing_to_the_date_step():
    rows = [{"to": "demographics.birth_date", "type": "direct", "from": "birth_date"}]
    m = compile_mapping(rows, TARGETS)
    bad = m({"birth_date": "09/01/2007"}, PREVIEW)
    assert codes_of(bad, "demographics.birth_date") == [("demographics.birth_date", "invalid_type", "error")]
    assert "Date transformation" in bad.problems[0].message
    assert m({"birth_date": "2007-09-01"}, PREVIEW).ok
    assert not m({"birth_date": "2007-02-30"}, PREVIEW).ok


@pytest.mark.parametrize("to, good, bad", [
    ("school_enrollment.grade_level", ["5", 5, "-1"], ["K", "5th", True]),
    ("ext.photo_release", ["Y", True, "false", 0], ["maybe", "2"]),
])
def test_integer_and_boolean_fields_check_their_values(to, good, bad):
    m = compile_mapping([{"to": to, "type": "direct", "from": "v"}], TARGETS)
    for v in good:
        assert m({"v": v}, UPDATE).ok, v
    for v in bad:
        assert codes_of(m({"v": v}, UPDATE), to) == [(to, "invalid_type", "error")], v


# ----------------------------------------------------------------------------- required on insert

def test_required_fields_blank_or_unmapped_fail_an_insert():
    rows = [{"to": "name.first_name", "type": "direct", "from": "first"}]
    result = compile_mapping(rows, TARGETS)({"first": ""}, INSERT)
    assert not result.ok
    assert sorted(codes_of(result)) == sorted([
        ("name.first_name", "required", "error"), ("name.last_name", "required", "error"),
        ("demographics.birth_date", "required", "error"), ("school_enrollment.grade_level", "required", "error")])
    assert "is blank" in result.problems_for("name.first_name")[0].message
    assert "is not mapped" in result.problems_for("name.last_name")[0].message


def test_required_fields_are_warnings_when_insert_is_unknown_and_skipped_on_update():
    rows = [{"to": "name.first_name", "type": "direct", "from": "first"}]
    m = compile_mapping(rows, TARGETS)
    preview = m({"first": ""}, PREVIEW)
    assert preview.ok and {p.severity for p in preview.problems} == {"warning"}
    assert m({"first": ""}, UPDATE).problems == []


def test_unmapped_required_fields_are_listed_for_the_save_summary():
    m = mapping()
    assert m.unmapped_required == []
    m2 = compile_mapping([{"to": "name.first_name", "type": "direct", "from": "first"},
                          {"to": "name.last_name", "type": "do_not_map"}], TARGETS)
    assert [t.key for t in m2.unmapped_required] == [
        "name.last_name", "demographics.birth_date", "school_enrollment.grade_level"]


def test_insert_only_fields_are_dropped_on_update():
    assert "school_enrollment.grade_level" in mapping()(ANA, INSERT).payload
    assert "school_enrollment.grade_level" not in mapping()(ANA, UPDATE).payload


# ----------------------------------------------------------------------------- previews: trace_row, evaluate_row

def test_trace_row_shows_the_value_after_each_step():
    rows = [{"to": "contact.emergency_phone1", "type": "transformation", "from": "guardian1_phone",
             "steps": [{"kind": "trim"}, {"kind": "phone", "format": "999-999-9999"}, {"kind": "max_length",
                                                                                    "length": 7}]}]
    m = compile_mapping(rows, TARGETS)
    assert m.trace_row("contact.emergency_phone1", {"guardian1_phone": " (415) 555-0134 "}, PREVIEW) == [
        TraceStep("From guardian1_phone", " (415) 555-0134 ", None),
        TraceStep("1. Trim", "(415) 555-0134", None),
        TraceStep("2. Phone Number", "415-555-0134", None),
        TraceStep("3. Max Length", "415-555", None),
    ]


def test_trace_row_stops_at_the_failing_step_with_its_message():
    trace = mapping().trace_row("demographics.birth_date", {"birth_date": "Sept 1st"}, PREVIEW)
    assert [t.label for t in trace] == ["From birth_date", "1. Date"]
    label, value, error = trace[-1]
    assert value is None and "Sept 1st" in error


def test_trace_row_for_direct_and_match_codes_rows():
    m = mapping()
    assert m.trace_row("name.first_name", ANA, PREVIEW) == [TraceStep("From student_legal_first_name", "Ana")]
    assert m.trace_row("demographics.gender", ANA, PREVIEW)[-1] == TraceStep("Match Codes", "F", None)
    failing = m.trace_row("school_enrollment.grade_level", dict(ANA, grade_applying="12"), PREVIEW)
    assert failing[-1].error and "'12' has no code" in failing[-1].error
    assert m.trace_row("name.middle_name", ANA, PREVIEW) == [TraceStep("Do Not Map", None, None)]
    with pytest.raises(KeyError):
        m.trace_row("name.nickname", ANA, PREVIEW)


def test_evaluate_row_is_exactly_what_the_whole_mapping_sends():
    m = mapping()
    sources = [ANA, dict(ANA, gender="Non-binary"), dict(ANA, birth_date="bad"), dict(ANA, grade_applying="9"),
               {"student_legal_first_name": "A" * 60}]
    for ctx in (INSERT, PREVIEW, UPDATE):
        for source in sources:
            whole = m(source, ctx)
            for section in TARGETS:
                for target in section.fields:
                    cell = m.evaluate_row(target.key, source, ctx)
                    assert cell.value == whole.payload.get(target.key)
                    assert cell.problems == whole.problems_for(target.key)


def test_compile_row_previews_a_row_being_edited():
    row = {"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
           "steps": [{"kind": "date", "from_format": "auto", "to_format": "YYYY-MM-DD"}]}
    r = compile_row(row, TARGETS)
    assert r.evaluate(ANA, PREVIEW).value == "2007-09-01"
    assert r.trace(ANA, PREVIEW)[-1].value == "2007-09-01"
    bad = compile_row({"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
                       "steps": [{"kind": "date", "to_format": "someday"}]}, TARGETS)
    assert bad.has_config_error and not bad.evaluate(ANA, PREVIEW).ok


# ----------------------------------------------------------------------------- context, warnings, plugins

def test_enroll_school_year_reads_the_registration_then_the_context():
    rows = [{"to": "x", "type": "transformation", "steps": [{"kind": "school_year", "format": "YYYY-YY"}]}]
    m = compile_mapping(rows)
    assert m({"registration.school_year": "2026-2027"}, PREVIEW).payload == {"x": "2026-27"}
    assert m({}, MappingContext(today=TODAY, school_year="2027-2028")).payload == {"x": "2027-28"}


def test_step_warnings_land_on_the_row_that_raised_them():
    rows = [{"to": "a", "type": "transformation", "from": "g",
             "steps": [{"kind": "match_codes", "codes": {"Female": "F"}, "unmatched": "fallback", "fallback": "X"}]},
            {"to": "b", "type": "direct", "from": "g"}]
    result = compile_mapping(rows)({"g": "Other"}, PREVIEW)
    assert result.payload == {"a": "X", "b": "Other"}
    assert codes_of(result) == [("a", "unmatched_code", "warning")]
    assert result.ok


class Initials(Step):
    kind = "initials"
    label = "Initials"
    params = (Param("separator", "Separator", default="."),)

    def apply(self, value, ctx):
        if value is None:
            return None
        if not str(value).strip():
            raise StepError("nothing to abbreviate")
        return "".join(w[0] + self.options["separator"] for w in str(value).split())


class InitialsPlugin:
    @hookimpl
    def register_transformations(self):
        return [Initials]


def test_plugin_steps_registered_through_the_hook_work_in_mappings():
    from enroll_sync.plugins import build_plugin_manager, step_classes

    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[InitialsPlugin()])
    steps = step_classes(pm)
    assert "initials" in steps and "date" in steps
    rows = [{"to": "x", "type": "transformation", "from": "n", "steps": [{"kind": "initials"}, {"kind": "upper"}]}]
    assert compile_mapping(rows, steps=steps)({"n": "ana maria"}, PREVIEW).payload == {"x": "A.M."}
    assert "initials" in [d["kind"] for d in step_catalog(steps)]
    # without the plugin the same saved row is a reported problem, not a crash
    assert not compile_mapping(rows)({"n": "ana maria"}, PREVIEW).ok
    assert isinstance(pm, pluggy.PluginManager)


# ----------------------------------------------------------------------------- determinism and isolation

def test_same_mapping_same_record_same_result():
    a, b = mapping(), mapping()
    for source in (ANA, dict(ANA, gender="Non-binary"), dict(ANA, birth_date="x")):
        assert a(source, INSERT) == b(source, INSERT) == a(source, INSERT)


def test_two_mappings_with_differently_configured_steps_do_not_interfere():
    us = compile_mapping([{"to": "d", "type": "transformation", "from": "d",
                           "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "MM/DD/YYYY"}]}])
    eu = compile_mapping([{"to": "d", "type": "transformation", "from": "d",
                           "steps": [{"kind": "date", "from_format": "DD/MM/YYYY", "to_format": "Month D, YYYY"}]}])
    src = {"d": "09/01/2007"}
    assert us(src, PREVIEW).payload == {"d": "09/01/2007"}
    assert eu(src, PREVIEW).payload == {"d": "January 9, 2007"}
    assert us(src, PREVIEW).payload == {"d": "09/01/2007"}


def test_the_mapping_does_not_change_its_rows_or_the_record():
    rows = json.loads(json.dumps(WALKTHROUGH_ROWS))
    source = dict(ANA)
    m = compile_mapping(rows, TARGETS)
    m(source, INSERT)
    assert rows == WALKTHROUGH_ROWS and source == ANA
    assert m.to_rows() == WALKTHROUGH_ROWS


def test_fields_used_lists_what_the_mapping_reads():
    rows = WALKTHROUGH_ROWS + [{"to": "contact.guardian_email", "type": "transformation",
                                "steps": [{"kind": "pick", "fields": ["guardian1_email", "guardian2_email"]}]}]
    assert mapping(rows).fields_used() == ["birth_date", "gender", "grade_applying", "guardian1_email",
                                           "guardian2_email", "student_legal_first_name",
                                           "student_legal_last_name"]


def test_problem_and_result_are_serialisable_for_sync_logs():
    result = mapping()(dict(ANA, gender="Non-binary", birth_date="x"), INSERT)
    json.dumps([p.to_dict() for p in result.problems])
    assert [w.code for w in result.warnings] == ["unmatched_code"]
    assert [e.code for e in result.errors] == ["step_error"]


def test_the_mapping_package_imports_nothing_from_flask():
    import ast
    import pathlib

    import enroll_sync.mapping as pkg

    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                # from ..web import x (level 2 from enroll_sync/mapping) is enroll_sync.web
                names = ["enroll_sync." + module if node.level == 2 else module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("flask", "flask_login", "werkzeug", "jinja2"), (path, name)
                assert not name.startswith("enroll_sync.web"), (path, name)
