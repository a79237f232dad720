"""Auto-map proposals and the Match Codes editor's answer list."""
from __future__ import annotations

from datetime import date

from enroll_sync.adapters import Code, FieldSection, TargetField
from enroll_sync.mapping import (MappingContext, auto_map, compile_mapping, match_code_answers, normalise_name)

# Shaped like enroll_sync.catalog.CATALOG: (key, label, section, type, options)
CATALOG = [
    ("student_legal_first_name", "Student Legal First Name", "Student Information", "text", []),
    ("student_legal_middle_name", "Student Legal Middle Name", "Student Information", "text", []),
    ("student_legal_last_name", "Student Legal Last Name", "Student Information", "text", []),
    ("student_preferred_first_name", "Preferred First Name", "Student Information", "text", []),
    ("birth_date", "Birth Date", "Student Information", "date", []),
    ("gender", "Gender", "Student Information", "choice", ["Female", "Male", "Non-binary"]),
    ("ethnicity", "Ethnicity", "Language and Demographics", "choice", ["Hispanic or Latino", "Not Hispanic or Latino"]),
    ("student_email", "Student Email", "Student Information", "email", []),
    ("home_city", "Home City", "Address", "text", []),
    ("mailing_city", "Mailing City", "Address", "text", []),
    ("home_zip", "Home ZIP Code", "Address", "text", []),
    ("guardian1_first_name", "Guardian 1 First Name", "Parent/Guardian 1", "text", []),
    ("grade_applying", "Grade Applying For", "Student Information", "choice", ["K", "1"]),
]

PS = [
    FieldSection("name", "Name", (
        TargetField("name.first_name", "First Name", required=True, max_length=50),
        TargetField("name.middle_name", "Middle Name", max_length=30),
        TargetField("name.last_name", "Last Name", required=True, max_length=50),
    )),
    FieldSection("demographics", "Demographics", (
        TargetField("demographics.birth_date", "Birth Date", type="date", required=True),
        TargetField("demographics.gender", "Gender", type="code", codes=(Code("M", "Male"), Code("F", "Female"))),
        TargetField("demographics.ethnicity", "Ethnicity", type="code",
                    codes=(Code("Y", "Hispanic or Latino"), Code("N", "Not Hispanic or Latino"))),
    )),
    FieldSection("contact_info", "Contact Info", (TargetField("contact_info.email", "Email", max_length=100),)),
    FieldSection("addresses", "Addresses", (
        TargetField("addresses.physical.city", "City", max_length=50),
        TargetField("addresses.mailing.city", "City", max_length=50),
        TargetField("addresses.physical.postal_code", "Postal Code", max_length=10),
    )),
    FieldSection("contacts", "Contacts", (TargetField("contacts.0.first_name", "First Name"),)),
    FieldSection("school_enrollment", "School Enrollment", (
        TargetField("school_enrollment.grade_level", "Grade Level", required=True),)),
]


def test_auto_map_proposes_confident_matches_in_sis_order():
    rows = auto_map(CATALOG, PS)
    assert rows == [
        {"to": "name.first_name", "type": "direct", "from": "student_legal_first_name"},
        {"to": "name.middle_name", "type": "direct", "from": "student_legal_middle_name"},
        {"to": "name.last_name", "type": "direct", "from": "student_legal_last_name"},
        {"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
         "steps": [{"kind": "date", "from_format": "auto", "to_format": "YYYY-MM-DD"}]},
        {"to": "demographics.ethnicity", "type": "match_codes", "from": "ethnicity",
         "codes": {"Hispanic or Latino": "Y", "Not Hispanic or Latino": "N"}, "unmatched": "fail"},
        {"to": "contact_info.email", "type": "direct", "from": "student_email"},
        {"to": "addresses.mailing.city", "type": "direct", "from": "mailing_city"},
    ]


def test_auto_map_leaves_alone_what_it_cannot_be_sure_of():
    targets = {r["to"] for r in auto_map(CATALOG, PS)}
    assert "demographics.gender" not in targets           # Non-binary has no code
    assert "addresses.physical.city" not in targets       # home city vs physical: not the same words
    assert "addresses.physical.postal_code" not in targets
    assert "contacts.0.first_name" not in targets         # list entries are never guessed
    assert "school_enrollment.grade_level" not in targets  # "grade applying" is not "grade level"


def test_auto_map_skips_ambiguous_names():
    catalog = CATALOG + [("first_name", "First Name", "Other", "text", [])]
    assert "name.first_name" not in {r["to"] for r in auto_map(catalog, PS)}


def test_auto_map_respects_existing_rows_and_accepts_other_catalog_shapes():
    existing = [{"to": "name.first_name", "type": "direct", "from": "student_preferred_first_name"},
                {"to": "name.last_name", "type": "do_not_map"}]
    catalog = [{"key": k, "label": l, "type": t, "options": o} for k, l, _, t, o in CATALOG]
    rows = auto_map(catalog, PS, existing_rows=existing)
    assert "name.first_name" not in {r["to"] for r in rows}
    assert {"to": "name.last_name", "type": "direct", "from": "student_legal_last_name"} in rows
    assert auto_map(["birthDate", "sex"], PS) == [
        {"to": "demographics.birth_date", "type": "transformation", "from": "birthDate",
         "steps": [{"kind": "date", "from_format": "auto", "to_format": "YYYY-MM-DD"}]}]


def test_auto_mapped_rows_compile_and_send_the_walkthrough_date():
    rows = auto_map(CATALOG, PS)
    m = compile_mapping(rows, PS)
    assert m.config_problems == []
    result = m({"student_legal_first_name": "Ana", "student_legal_last_name": "López", "birth_date": "09/01/2007",
                "ethnicity": "Hispanic or Latino"}, MappingContext(today=date(2026, 8, 15)))
    assert result.payload["demographics.birth_date"] == "2007-09-01"
    assert result.payload["demographics.ethnicity"] == "Y"


def test_auto_map_is_deterministic():
    assert auto_map(CATALOG, PS) == auto_map(list(CATALOG), list(PS))


def test_normalise_name():
    assert normalise_name("student_legal_first_name") == "first name"
    assert normalise_name("Student's Legal First Name") == "first name"
    assert normalise_name("firstName") == "first name"
    assert normalise_name("DOB") == normalise_name("date_of_birth") == normalise_name("birth_date") == "birth date"
    assert normalise_name("zip") == normalise_name("Postal Code") == "postal code"
    assert normalise_name("student") == "student"


# ----------------------------------------------------------------------------- match_code_answers

def test_match_code_answers_lists_options_then_seen_values_with_codes_and_warnings():
    lines = match_code_answers(
        ["Female", "Male", "Non-binary"],
        {"Female": 40, "male": 3, "Prefer not to say": 2, "": 9},
        {"Female": "F", "Male": "M"},
    )
    assert [(l.answer, l.code, l.unmatched, l.from_options, l.seen, l.count) for l in lines] == [
        ("Female", "F", False, True, True, 40),
        ("Male", "M", False, True, False, 0),
        ("Non-binary", None, True, True, False, 0),
        ("male", "M", False, False, True, 3),              # matches Male, like the engine does
        ("Prefer not to say", None, True, False, True, 2),
    ]


def test_match_code_answers_agree_with_the_engine():
    codes = {"Female": "F", "Male": "M"}
    m = compile_mapping([{"to": "g", "type": "match_codes", "from": "g", "codes": codes,
                          "unmatched": "fallback", "fallback": "X"}])
    ctx = MappingContext(today=date(2026, 8, 15))
    for line in match_code_answers(["Female", "Male", "Non-binary"], [" female", "MALE", "Other", None], codes):
        result = m({"g": line.answer}, ctx)
        assert bool(result.warnings) == line.unmatched, line
        if not line.unmatched:
            assert result.payload["g"] == line.code


def test_match_code_answers_flags_codes_the_sis_does_not_accept_and_takes_option_pairs():
    lines = match_code_answers([("F", "Female"), {"value": "M", "label": "Male"}], [], {"F": "F", "M": "Male"},
                               allowed_codes=[Code("F"), Code("M")])
    assert [(l.answer, l.label, l.code, l.allowed, l.count) for l in lines] == [
        ("F", "Female", "F", True, None), ("M", "Male", "Male", False, None)]


def test_match_code_answers_handles_multi_select_seen_values():
    lines = match_code_answers([], [["Asian", "White"], ["White"], "  "], {"Asian": "A"})
    assert [(l.answer, l.unmatched) for l in lines] == [("Asian", False), ("White", True)]
