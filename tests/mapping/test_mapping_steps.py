"""Each built-in transformation step: good input, bad values (StepError) and bad settings (StepConfigError)."""
from __future__ import annotations

import json
from datetime import date, datetime

import pytest

from enroll_sync.mapping import (PARAM_TYPES, MappingContext, Step, StepConfigError, StepContext, StepError)
from enroll_sync.mapping import builtin_steps
from enroll_sync.mapping.builtin_steps import builtin_step_classes

TODAY = date(2026, 8, 15)
CTX = MappingContext(today=TODAY, school_year="2025-2026", insert=True)
STEPS = builtin_step_classes()


def make(kind: str, /, **settings) -> Step:
    return STEPS[kind](**settings)


def run(kind: str, value, source: dict | None = None, /, **settings):
    return make(kind, **settings).apply(value, StepContext(source or {}, CTX))


# ----------------------------------------------------------------------------- registration and contract

def test_every_step_the_product_offers_is_registered_through_the_plugin_hook():
    from enroll_sync.plugins import build_plugin_manager, step_classes

    kinds = step_classes(build_plugin_manager(load_entrypoints=False))
    labels = {cls.label for cls in kinds.values()}
    for label in ["Date", "Today", "Lower", "Upper", "Proper Case", "Trim", "Squish", "Value Input", "Join",
                  "Pick", "Split", "Substitute", "If Then Else", "Phone Number", "Enroll School Year",
                  "Match Codes", "Transliterate", "Max Length", "Default If Blank", "Y/N <-> 1/0", "Expression"]:
        assert label in labels
    assert kinds == STEPS


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_step_descriptions_are_renderable_forms(kind):
    cls = STEPS[kind]
    desc = json.loads(json.dumps(cls.describe()))  # JSON-safe for the web UI
    assert desc["kind"] == kind and desc["label"]
    keys = [p["key"] for p in desc["params"]]
    assert len(keys) == len(set(keys))
    for p in desc["params"]:
        assert p["type"] in PARAM_TYPES and p["label"]
        if p["type"] == "select":
            assert p["default"] in [c[0] for c in p["choices"]]
        if p["show_if"]:
            assert p["show_if"][0] in keys


def test_unknown_setting_is_a_config_error():
    with pytest.raises(StepConfigError, match="unknown setting"):
        make("upper", colour="red")


# ----------------------------------------------------------------------------- Date and Today

def test_date_walkthrough_example():
    assert run("date", "09/01/2007", from_format="MM/DD/YYYY", to_format="YYYY-MM-DD") == "2007-09-01"


def test_date_source_format_accepts_unpadded_month_and_day():
    assert run("date", "9/1/2007", from_format="MM/DD/YYYY") == "2007-09-01"
    assert run("date", " 09/01/2007 ", from_format="MM/DD/YYYY") == "2007-09-01"


@pytest.mark.parametrize("to_format, expected", [
    ("YYYY-MM-DD", "2007-09-01"), ("MM/DD/YYYY", "09/01/2007"), ("M/D/YYYY", "9/1/2007"),
    ("MM/DD/YY", "09/01/07"), ("MM-DD-YYYY", "09-01-2007"), ("DD/MM/YYYY", "01/09/2007"),
    ("DD.MM.YYYY", "01.09.2007"), ("YYYY/MM/DD", "2007/09/01"), ("YYYYMMDD", "20070901"),
    ("Month D, YYYY", "September 1, 2007"), ("Mon D, YYYY", "Sep 1, 2007"), ("D Month YYYY", "1 September 2007"),
])
def test_date_destination_formats_and_back(to_format, expected):
    assert run("date", "2007-09-01", from_format="YYYY-MM-DD", to_format=to_format) == expected
    # every destination format is also readable as a source format
    assert run("date", expected, from_format=to_format, to_format="YYYY-MM-DD") == "2007-09-01"


@pytest.mark.parametrize("text, expected", [
    ("09/01/2007", "2007-09-01"),        # US: month first
    ("9/1/2007", "2007-09-01"),
    ("13/01/2007", "2007-01-13"),        # first number over 12: day first
    ("09-01-2007", "2007-09-01"),
    ("01.09.2007", "2007-09-01"),        # dots: day first
    ("2007-09-01", "2007-09-01"),
    ("2007-09-01T08:30:00Z", "2007-09-01"),
    ("20070901", "2007-09-01"),
    ("September 1, 2007", "2007-09-01"),
    ("Sept. 1, 2007", "2007-09-01"),
    ("1 Sep 2007", "2007-09-01"),
    ("09/01/07", "2007-09-01"),
    ("09/01/85", "1985-09-01"),
])
def test_date_auto_detect(text, expected):
    assert run("date", text, from_format="auto", to_format="YYYY-MM-DD") == expected


def test_date_accepts_date_objects_and_passes_blank_through():
    assert run("date", date(2007, 9, 1), to_format="MM/DD/YYYY") == "09/01/2007"
    assert run("date", datetime(2007, 9, 1, 10, 0), to_format="MM/DD/YYYY") == "09/01/2007"
    assert run("date", None) is None
    assert run("date", "  ") is None


@pytest.mark.parametrize("text, fmt", [
    ("13/45/2007", "MM/DD/YYYY"), ("02/30/2020", "MM/DD/YYYY"), ("2007-09-01", "MM/DD/YYYY"),
    ("next tuesday", "auto"), ("09/01/2007", "YYYY-MM-DD"), ("Smarch 1, 2007", "Month D, YYYY"),
])
def test_date_that_does_not_parse_is_a_step_error_naming_the_value(text, fmt):
    with pytest.raises(StepError) as e:
        run("date", text, from_format=fmt)
    assert text in str(e.value)


@pytest.mark.parametrize("settings", [{"from_format": "MM-YYYY"}, {"to_format": "auto"}, {"to_format": "%Y-%m-%d"}])
def test_date_bad_formats_are_config_errors(settings):
    with pytest.raises(StepConfigError):
        make("date", **settings)


def test_today_uses_the_context_date_and_ignores_the_value():
    assert run("today", "anything", to_format="MM/DD/YYYY") == "08/15/2026"
    assert run("today", None) == "2026-08-15"


# ----------------------------------------------------------------------------- text

@pytest.mark.parametrize("kind, value, expected", [
    ("lower", "ANA@Example.COM", "ana@example.com"),
    ("upper", "ana lópez", "ANA LÓPEZ"),
    ("trim", "  Ana  María  ", "Ana  María"),
    ("squish", "  123   Main \t St\n Apt 4 ", "123 Main St Apt 4"),
    ("lower", 42, "42"),
])
def test_simple_text_steps(kind, value, expected):
    assert run(kind, value) == expected


@pytest.mark.parametrize("kind", ["lower", "upper", "trim", "squish", "proper_case", "max_length", "phone"])
def test_text_steps_pass_blank_through(kind):
    settings = {"length": 5} if kind == "max_length" else {}
    assert run(kind, None, **settings) is None


@pytest.mark.parametrize("value, expected", [
    ("ANA MARIA", "Ana Maria"),
    ("o'brien", "O'Brien"),
    ("D'ANGELO", "D'Angelo"),
    ("mcdonald", "McDonald"),
    ("MARY-KATE SMITH-JONES", "Mary-Kate Smith-Jones"),
    ("ANA'S CAFE", "Ana's Cafe"),
    ("JOHN SMITH III", "John Smith III"),
    ("123 MAIN ST", "123 Main St"),
    ("3RD STREET", "3rd Street"),
    ("JOSÉ ÁLVAREZ", "José Álvarez"),
    ("DeShawn", "DeShawn"),          # mixed case is kept as typed
    ("LaToya", "LaToya"),
])
def test_proper_case(value, expected):
    assert run("proper_case", value) == expected


def test_proper_case_can_also_rewrite_mixed_case():
    assert run("proper_case", "DeShawn mcKAY", keep_mixed=False) == "Deshawn McKay"
    with pytest.raises(StepConfigError):
        make("proper_case", keep_mixed="sometimes")


@pytest.mark.parametrize("value, expected", [
    ("José", "Jose"), ("Zoë Nguyễn", "Zoe Nguyen"), ("Strauß", "Strauss"), ("Øster", "Oster"),
    ("Łukasz", "Lukasz"), ("O’Brien", "O'Brien"), ("Smith-Jones", "Smith-Jones"),
    ("St. John", "St John"), ("  Ana   María ", "Ana Maria"), ("Anne-Sophie D'Arc", "Anne-Sophie D'Arc"),
])
def test_transliterate(value, expected):
    assert run("transliterate", value) == expected


def test_transliterate_keeps_digits_only_when_asked():
    assert run("transliterate", "Apt 4B") == "Apt B"
    assert run("transliterate", "Apt 4B", keep_digits=True) == "Apt 4B"


def test_transliterate_refuses_to_turn_a_name_into_nothing():
    with pytest.raises(StepError, match="李"):
        run("transliterate", "李")
    assert run("transliterate", "") is None


def test_max_length():
    assert run("max_length", "Alexandria", length=4) == "Alex"
    assert run("max_length", "Ana Maria", length=4) == "Ana"  # no trailing space after the cut
    assert run("max_length", "Ana", length=4) == "Ana"
    for bad in ({}, {"length": 0}, {"length": "ten"}, {"length": True}):
        with pytest.raises(StepConfigError):
            make("max_length", **bad)


def test_value_input_and_default_if_blank():
    assert run("value", "ignored", value="A") == "A"
    assert run("value", "ignored", value="") is None
    assert run("default", "", value="English") == "English"
    assert run("default", None, value="English") == "English"
    assert run("default", "Spanish", value="English") == "Spanish"
    with pytest.raises(StepConfigError):
        make("default", value="")


# ----------------------------------------------------------------------------- fields

SRC = {"first": "Ana", "middle": " ", "last": "López", "preferred": "", "legal": "Anabel", "grade": "K",
       "address": "123 Main St, Apt 4, Springfield", "status": "Approved"}


def test_direct_step_reads_another_field():
    assert run("field", "x", SRC, field="last") == "López"
    with pytest.raises(StepConfigError):
        make("field")


def test_join_skips_blanks_and_trims():
    assert run("join", None, SRC, fields=["first", "middle", "last"]) == "Ana López"
    assert run("join", None, SRC, fields=["last", "first"], delimiter=", ") == "López, Ana"
    assert run("join", " Dr. ", SRC, fields=["last"], include_value=True) == "Dr. López"
    assert run("join", None, SRC, fields=["middle", "preferred", "missing"]) is None
    assert run("join", None, SRC, fields="first, last") == "Ana López"  # as a form posts it
    with pytest.raises(StepConfigError):
        make("join", fields=[])


def test_pick_first_non_blank():
    assert run("pick", None, SRC, fields=["preferred", "middle", "legal", "first"]) == "Anabel"
    assert run("pick", "Annie", SRC, fields=["legal"], include_value=True) == "Annie"
    assert run("pick", "", SRC, fields=["legal"], include_value=True) == "Anabel"
    assert run("pick", None, SRC, fields=["preferred", "middle"]) is None
    with pytest.raises(StepConfigError):
        make("pick")


def test_split_parts():
    a = SRC["address"]
    assert run("split", a, delimiter=",", part=1) == "123 Main St"
    assert run("split", a, delimiter=",", part=-1) == "Springfield"
    assert run("split", a, delimiter=",", part=2, rest=True) == "Apt 4, Springfield"
    assert run("split", "Ana  Maria Lopez", part=2) == "Maria"  # empty delimiter: spaces
    assert run("split", "Ana Maria Lopez", part=2, rest=True) == "Maria Lopez"


def test_split_missing_part_is_blank_by_default_or_an_error_when_asked():
    assert run("split", "Springfield", delimiter=",", part=2) is None
    assert run("split", "Springfield", delimiter=",", part=-2) is None
    with pytest.raises(StepError, match="no part 2"):
        run("split", "Springfield", delimiter=",", part=2, missing="error")


@pytest.mark.parametrize("settings", [{"part": 0}, {"part": "second"}, {"part": 1, "missing": "maybe"}])
def test_split_bad_settings(settings):
    with pytest.raises(StepConfigError):
        make("split", **settings)


# ----------------------------------------------------------------------------- Substitute

def test_substitute_plain_and_regex():
    assert run("substitute", "Main St.", find="St.", replace="Street") == "Main Street"
    assert run("substitute", "1+1", find="+", replace=" plus ") == "1 plus 1"  # plain text, not a regex
    assert run("substitute", "MAIN ST.", find="st.", replace="Street", ignore_case=True) == "MAIN Street"
    assert run("substitute", "94110-1234", mode="regex", find=r"^(\d{5})-\d{4}$", replace=r"\1") == "94110"
    assert run("substitute", "a1b22", mode="regex", find=r"(?P<n>\d+)", replace=r"<\g<n>>") == "a<1>b<22>"
    assert run("substitute", "Lopez, Ana", mode="regex", find=r"(\w+), (\w+)", replace=r"\2 \1") == "Ana Lopez"
    assert run("substitute", "(415) 555", mode="regex", find=r"\D", replace="") == "415555"
    assert run("substitute", r"a\b", find="\\", replace="/") == "a/b"
    assert run("substitute", "A-b-C", find="B", replace=r"\1", ignore_case=True) == r"A-\1-C"  # plain: literal


def test_substitute_regex_that_backtracks_for_ever_is_stopped_with_a_message():
    """(a|aa)+$ on forty a's and a '!' takes minutes in Python's re; one answer must not
    hang the Field Mapping preview or a sync job."""
    import time
    start = time.monotonic()
    with pytest.raises(StepError, match="took longer than 0.25 s"):
        run("substitute", "a" * 40 + "!", mode="regex", find=r"(a|aa)+$", replace="x")
    assert time.monotonic() - start < 5
    assert run("substitute", "aaaa", mode="regex", find=r"(a|aa)+$", replace="x") == "x"  # fine when it matches


def test_substitute_whole_value_only():
    assert run("substitute", "N/A", find="N/A", replace="", whole_value=True) == ""
    assert run("substitute", "N/A or more", find="N/A", replace="", whole_value=True) == "N/A or more"


@pytest.mark.parametrize("settings, message", [
    ({"mode": "regex", "find": "(unclosed"}, "not a valid regular expression"),
    ({"mode": "regex", "find": "(a)", "replace": r"\2"}, "Replace with"),
    ({"mode": "regex", "find": "(a)", "replace": r"\g<nope>"}, "Replace with"),
    ({"find": ""}, "Find is required"),
    ({"mode": "glob", "find": "x"}, "not one of"),
])
def test_substitute_bad_settings_are_config_errors(settings, message):
    with pytest.raises(StepConfigError, match=message):
        make("substitute", **settings)


def test_substitute_regex_is_compiled_once_not_per_record(monkeypatch):
    step = make("substitute", mode="regex", find=r"(\d{5})-\d{4}", replace=r"\1")

    def boom(*a, **k):
        raise AssertionError("regex compiled while applying")

    monkeypatch.setattr(builtin_steps.re, "compile", boom)
    monkeypatch.setattr(builtin_steps.re, "sub", boom)
    ctx = StepContext({}, CTX)
    assert [step.apply("94110-0001", ctx) for _ in range(3)] == ["94110"] * 3


# ----------------------------------------------------------------------------- If Then Else

@pytest.mark.parametrize("settings, expected", [
    ({"field": "status", "operator": "equals", "compare": "approved", "then_value": "A"}, "A"),
    ({"field": "status", "operator": "equals", "compare": "approved", "ignore_case": False,
      "then_value": "A", "else_mode": "value", "else_value": "P"}, "P"),
    ({"field": "status", "operator": "not_equals", "compare": "Approved", "then_value": "P"}, "current"),
    ({"field": "preferred", "operator": "is_blank", "then_mode": "value", "then_value": "none"}, "none"),
    ({"field": "first", "operator": "is_not_blank", "then_mode": "keep", "else_mode": "value"}, "current"),
    ({"field": "preferred", "operator": "is_not_blank", "then_mode": "keep", "else_mode": "value",
      "else_value": ""}, None),
    ({"field": "address", "operator": "contains", "compare": "APT", "then_value": "apartment"}, "apartment"),
    ({"field": "grade", "operator": "one_of", "compare": "PK, TK, K", "then_value": "early"}, "early"),
    ({"operator": "equals", "compare": "current", "then_value": "it was me"}, "it was me"),
])
def test_if_then_else(settings, expected):
    assert run("if_then_else", "current", SRC, **settings) == expected


@pytest.mark.parametrize("settings", [
    {"operator": "contains", "compare": ""},
    {"operator": "is_greater_than"},
    {"then_mode": "maybe"},
])
def test_if_then_else_bad_settings(settings):
    with pytest.raises(StepConfigError):
        make("if_then_else", **settings)


# ----------------------------------------------------------------------------- Phone, School Year, Y/N

@pytest.mark.parametrize("fmt, expected", [
    ("(999) 999-9999", "(415) 555-0134"), ("999-999-9999", "415-555-0134"),
    ("9999999999", "4155550134"), ("999.999.9999", "415.555.0134"),
])
@pytest.mark.parametrize("value", ["(415) 555-0134", "415-555-0134", "4155550134", "+1 415 555 0134",
                                   "1-415-555-0134", "415.555.0134"])
def test_phone_number_formats(value, fmt, expected):
    assert run("phone", value, format=fmt) == expected


@pytest.mark.parametrize("value", ["555-0134", "+44 20 7946 0958", "415-555-0134 x12", "call me"])
def test_phone_number_with_wrong_digit_count_is_a_step_error(value):
    with pytest.raises(StepError, match="a phone number needs 10"):
        run("phone", value)


def test_phone_number_bad_format_setting():
    with pytest.raises(StepConfigError):
        make("phone", format="+1 999 999 9999")


@pytest.mark.parametrize("fmt, expected", [
    ("YYYY-YYYY", "2026-2027"), ("YYYY-YY", "2026-27"), ("YY-YY", "26-27"), ("START", "2026"), ("END", "2027"),
])
def test_enroll_school_year_formats_the_registration_school_year(fmt, expected):
    assert run("school_year", "ignored", {"registration.school_year": "2026-2027"}, format=fmt) == expected
    assert run("school_year", None, {"registration.school_year": "2026-27"}, format=fmt) == expected


def test_enroll_school_year_falls_back_to_the_context_and_rejects_nonsense():
    assert run("school_year", None, {}, format="YYYY-YYYY") == "2025-2026"  # CTX.school_year
    ctx = StepContext({}, MappingContext(today=date(2027, 1, 10)))
    assert make("school_year").apply(None, ctx) == "2026-2027"  # derived from today
    with pytest.raises(StepError, match="next year"):
        run("school_year", None, {"registration.school_year": "next year"})
    with pytest.raises(StepError):
        run("school_year", None, {"registration.school_year": "2026-2029"})


@pytest.mark.parametrize("value, fmt, expected", [
    ("Yes", "Y/N", "Y"), ("no", "Y/N", "N"), ("Y", "1/0", "1"), ("N", "1/0", "0"), ("1", "Yes/No", "Yes"),
    ("true", "T/F", "T"), (True, "1/0", "1"), (0, "Y/N", "N"), ("checked", "boolean", True),
    ("No", "boolean", False), ("yes", "TRUE/FALSE", "TRUE"),
])
def test_boolean_format(value, fmt, expected):
    assert run("boolean", value, format=fmt) == expected


def test_boolean_format_refuses_non_answers():
    with pytest.raises(StepError, match="maybe"):
        run("boolean", "maybe")
    assert run("boolean", "") is None
    with pytest.raises(StepConfigError):
        make("boolean", format="Oui/Non")


# ----------------------------------------------------------------------------- Match Codes step

def test_match_codes_step_policies():
    codes = {"Female": "F", "Male": "M"}
    ctx = StepContext({}, CTX)
    assert make("match_codes", codes=codes).apply(" female ", ctx) == "F"
    with pytest.raises(StepError, match="Non-binary"):
        make("match_codes", codes=codes).apply("Non-binary", ctx)  # default policy: fail
    assert ctx.warnings is None

    fb = make("match_codes", codes=codes, unmatched="fallback", fallback="X")
    assert fb.apply("Non-binary", ctx) == "X"
    assert ctx.warnings and "Non-binary" in ctx.warnings[0][1]

    ctx2 = StepContext({}, CTX)
    assert make("match_codes", codes=codes, unmatched="blank").apply("Non-binary", ctx2) is None
    assert ctx2.warnings and ctx2.warnings[0][0] == "unmatched_code"


def test_match_codes_step_settings():
    assert make("match_codes", codes=[{"answer": "Female", "code": "F"}]).options["codes"] == {"Female": "F"}
    assert make("match_codes", codes=[["Male", "M"]]).options["codes"] == {"Male": "M"}
    with pytest.raises(StepConfigError, match="Fallback"):
        make("match_codes", codes={"Female": "F"}, unmatched="fallback")
    with pytest.raises(StepConfigError):
        make("match_codes", codes="Female=F")


# ----------------------------------------------------------------------------- Expression

def test_expression_reads_value_answers_today_and_school_year():
    src = {"student_legal_last_name": "López", "home_city": "Oakland", "home_state": "CA",
           "registration.school_year": "2026-2027"}
    assert run("expression", "x", src, expression='answers.home_city & ", " & answers.home_state') == "Oakland, CA"
    assert run("expression", "ana", src, expression="$uppercase(value)") == "ANA"
    assert run("expression", None, src, expression="$substring(answers.student_legal_last_name, 0, 3)") == "Lóp"
    assert run("expression", None, src, expression="$today") == "2026-08-15"
    assert run("expression", None, src, expression="$school_year") == "2026-2027"
    assert run("expression", None, src, expression='answers.`registration.school_year`') == "2026-2027"
    assert run("expression", None, src, expression="answers.nothing_here") is None


def test_expression_syntax_error_is_a_config_error():
    with pytest.raises(StepConfigError, match="Expression"):
        make("expression", expression="$uppercase(")
    with pytest.raises(StepConfigError):
        make("expression", expression="")


def test_expression_runtime_errors_are_step_errors_not_crashes():
    with pytest.raises(StepError, match="Expression"):
        run("expression", "abc", expression="$number(value)")
    with pytest.raises(StepError, match="Expression"):
        run("expression", None, expression="($f := function($x){1 + $f($x)}; $f(1))")


def test_param_cleaning_accepts_what_html_forms_post():
    step = make("join", fields="a\nb, c", delimiter="-", include_value="on")
    assert step.options == {"fields": ["a", "b", "c"], "delimiter": "-", "include_value": True}
    assert make("max_length", length="12").options["length"] == 12
    assert make("date", from_format="", to_format="").options == {"from_format": "auto", "to_format": "YYYY-MM-DD"}
    assert step.to_dict() == {"kind": "join", "fields": ["a", "b", "c"], "delimiter": "-", "include_value": True}


def test_text_steps_read_multi_select_answers_as_a_list():
    assert run("upper", ["Asian", "White"]) == "ASIAN, WHITE"
    assert run("trim", []) == ""  # blank: the engine leaves it out of the payload
