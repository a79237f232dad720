"""Mapping engine throughput against a hand-written function producing the same payloads.

Builds a 60-row mapping (10 Transformation chains using Date, Phone Number, Join,
Pick, Proper Case, Substitute (regex), If Then Else, Transliterate, Max Length,
Lower, Squish; 8 Match Codes rows; 42 Direct rows) against PowerSchool-like target
fields with lengths, codes and required fields, generates 20,000 registrations
deterministically (accented names, MM/DD/YYYY dates, phones in mixed formats,
Female/Male/Non-binary, blanks), maps them with the compiled engine and with a
plain Python function written for this mapping, asserts the payloads are equal
for every record, and prints records/s of each and the ratio (engine time /
hand-written time; lower is better, target <= 3). The last line is JSON.

    python benchmarks/mapping.py [--records N] [--repeat R]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
import unicodedata
from datetime import date

try:
    import enroll_sync  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from enroll_sync.adapters import Code, FieldSection, TargetField
from enroll_sync.mapping import MappingContext, compile_mapping
from enroll_sync.plugins import build_plugin_manager, step_classes

SEED = 20260901
TODAY = date(2026, 8, 15)

# ----------------------------------------------------------------------------- data

FIRST = ["José", "María", "Zoë", "Ana María", "Nguyễn", "Chloé", "Łukasz", "Søren", "Björn", "Renée",
         "liam", "NOAH", "Olivia", "emma", "AVA", "Mateo", "Sofía", "Jürgen", "François", "Aoife",
         "DeShawn", "LaToya", "Mary-Kate", "Zoe", "Ethan", "Isabella", "Mía", "Thomas", "Ines", "Kai"]
LAST = ["García", "O'BRIEN", "mcdonald", "Müller", "Nguyễn", "Smith-Jones", "Johnson", "Øster",
        "Martínez", "López", "D'Angelo", "van der Berg", "WILLIAMS", "brown", "Dvořák", "Kowalski",
        "Hernández", "Lee", "Pérez", "Strauß", "Nakamura", "Ramírez", "Cohen", "Okafor", "Silva"]
MIDDLE = ["", "", "", "Lynn", "José", "Marie", "Ann", "Élise", "James", "  "]
GENDERS = ["Female", "Male", "Female", "Male", "Non-binary", "female"]
GRADES = ["PK", "TK", "K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
LANGUAGES = ["English", "English", "Spanish", "Vietnamese", "Mandarin", "Arabic", "Tagalog", "Somali", "Other"]
ETHNICITY = ["Hispanic or Latino", "Not Hispanic or Latino"]
RACES = ["American Indian or Alaska Native", "Asian", "Black or African American",
         "Native Hawaiian or Other Pacific Islander", "White", "Two or More Races"]
RELATIONSHIPS = ["Mother", "Father", "Mother", "Father", "Grandparent", "Guardian", "Aunt", "Foster Parent"]
STATES = ["CA", "TX", "NY", "FL", "IL", "WA", "OR", "AZ", "CO", "MA"]
TRANSPORT = ["Bus", "Car", "Walk", "Bike", "Public Transit"]
STREETS = ["Main St", "Mission Street", "Calle Ñandú", "  Oak   Avenue ", "Martin Luther King Jr Blvd",
           "5th Ave", "Cañada Rd", "Elm Street"]
CITIES = ["San Francisco", "Oakland", "San José", "Austin", "Brooklyn", "Seattle", "Tucson"]
YES_NO = ["Yes", "No", "No"]
EMPLOYERS = ["", "City of Oakland", "Kaiser", "Self-employed", "Café Rosa", "Unified School District"]


def _phone(rng: random.Random) -> str:
    a, b, c = rng.randint(200, 989), rng.randint(200, 999), rng.randint(0, 9999)
    return rng.choice([
        f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"{a}{b}{c:04d}", f"+1 {a} {b} {c:04d}",
        f"{a}.{b}.{c:04d}", f"1-{a}-{b}-{c:04d}",
    ])


def _mdy(rng: random.Random, year_from: int, year_to: int) -> str:
    d = date.fromordinal(rng.randint(date(year_from, 1, 1).toordinal(), date(year_to, 12, 31).toordinal()))
    if rng.random() < 0.1:
        return f"{d.month}/{d.day}/{d.year}"
    return f"{d.month:02d}/{d.day:02d}/{d.year}"


def make_registration(rng: random.Random, i: int) -> dict:
    g1 = rng.random() > 0.03
    g2 = rng.random() > 0.35
    r = {
        "student_legal_first_name": rng.choice(FIRST),
        "student_legal_middle_name": rng.choice(MIDDLE),
        "student_legal_last_name": rng.choice(LAST),
        "student_preferred_first_name": rng.choice(["", "", "", "", "Andy", "Bea"]),
        "birth_date": _mdy(rng, 2008, 2022),
        "birth_city": rng.choice(CITIES + ["", "Guadalajara", "Hà Nội"]),
        "birth_country": rng.choice(["United States", "Mexico", "Vietnam", "", "El Salvador"]),
        "gender": rng.choice(GENDERS),
        "grade_applying": rng.choice(GRADES),
        "state_student_id": rng.choice(["", str(rng.randint(10 ** 9, 10 ** 10 - 1))]),
        "student_email": rng.choice(["", f"student{i}@example.org"]),
        "home_language": rng.choice(LANGUAGES),
        "first_language": rng.choice(LANGUAGES),
        "ethnicity": rng.choice(ETHNICITY),
        "race": rng.choice(RACES),
        "needs_interpreter": rng.choice(YES_NO),
        "home_street": f"{rng.randint(1, 9999)} {rng.choice(STREETS)}",
        "home_apartment": rng.choice(["", "", "", "Apt 4", "Unit B", "#12"]),
        "home_city": rng.choice(CITIES),
        "home_state": rng.choice(STATES),
        "home_zip": rng.choice([f"{rng.randint(10000, 99999)}", f"{rng.randint(10000, 99999)}-{rng.randint(0, 9999):04d}",
                                f" {rng.randint(10000, 99999)} "]),
        "mailing_street": rng.choice(["", f"PO Box {rng.randint(1, 9999)}"]),
        "mailing_city": rng.choice(["", rng.choice(CITIES)]),
        "mailing_state": rng.choice(["", rng.choice(STATES)]),
        "mailing_zip": rng.choice(["", f"{rng.randint(10000, 99999)}"]),
        "home_phone": rng.choice(["", _phone(rng)]),
        "guardian1_first_name": rng.choice(FIRST) if g1 else "",
        "guardian1_last_name": rng.choice(LAST) if g1 else "",
        "guardian1_relationship": rng.choice(RELATIONSHIPS) if g1 else "",
        "guardian1_phone": _phone(rng) if g1 else "",
        "guardian1_email": rng.choice(["", f"parent{i}@example.com", f"  Parent.{i}@Example.COM "]) if g1 else "",
        "guardian1_employer": rng.choice(EMPLOYERS) if g1 else "",
        "guardian2_first_name": rng.choice(FIRST) if g2 else "",
        "guardian2_last_name": rng.choice(LAST) if g2 else "",
        "guardian2_phone": _phone(rng) if g2 else "",
        "guardian2_email": rng.choice(["", f"other{i}@example.net"]) if g2 else "",
        "emergency1_name": f"{rng.choice(FIRST)} {rng.choice(LAST)}",
        "emergency1_relationship": rng.choice(RELATIONSHIPS),
        "emergency1_phone": _phone(rng),
        "emergency2_name": rng.choice(["", f"{rng.choice(FIRST)} {rng.choice(LAST)}"]),
        "emergency2_phone": rng.choice(["", _phone(rng)]),
        "previous_school_name": rng.choice(["", "Lincoln Elementary", "Escuela Benito Juárez", "Roosevelt MS"]),
        "previous_school_city": rng.choice(["", rng.choice(CITIES)]),
        "previous_school_state": rng.choice(["", rng.choice(STATES)]),
        "previous_school_last_date": rng.choice(["", _mdy(rng, 2024, 2026)]),
        "physician_name": rng.choice(["", "Dr. Ana Ruiz", "Dr. Chen"]),
        "physician_phone": rng.choice(["", _phone(rng)]),
        "allergies": rng.choice(["", "", "Peanuts", "Penicillin, latex"]),
        "medications": rng.choice(["", "", "Albuterol inhaler"]),
        "medical_conditions": rng.choice(["", "", "Asthma", "Type 1 diabetes"]),
        "has_iep": rng.choice(YES_NO),
        "has_504": rng.choice(YES_NO),
        "gifted_program": rng.choice(YES_NO),
        "english_learner_services": rng.choice(YES_NO),
        "military_family": rng.choice(YES_NO),
        "homeless_status": rng.choice(YES_NO),
        "transportation_mode": rng.choice(TRANSPORT),
        "bus_stop": rng.choice(["", "Oak & 5th", "Main St Library"]),
        "requested_start_date": rng.choice(["", "08/19/2026", "8/19/2026", _mdy(rng, 2026, 2026)]),
        "photo_release": rng.choice(YES_NO),
        "registration.form_id": str(100000 + i),
        "registration.grade": rng.choice(GRADES),
        "registration.school_year": "2026-2027",
        "registration.status": "Approved",
        "registration.approved_at": "2026-07-01",
        "school.name": "Lincoln High",
        "school.school_number": str(rng.choice([101, 102, 205, 310])),
        "student.schoolmint_id": f"SM{i:07d}",
        "student.sis_id": rng.choice(["", str(rng.randint(1000, 99999))]),
    }
    return r


# ----------------------------------------------------------------------------- the mapping

def T(key, label, max_length=None, **kw):
    return TargetField(key, label, max_length=max_length, **kw)


GENDER_CODES = {"Female": "F", "Male": "M", "Non-binary": "X"}
GRADE_CODES = {"PK": "-2", "TK": "-1", "K": "0", **{str(g): str(g) for g in range(1, 13)}}
LANGUAGE_CODES = {"English": "00", "Spanish": "01", "Vietnamese": "02", "Mandarin": "03", "Arabic": "04",
                  "Tagalog": "05", "Somali": "06"}
ETHNICITY_CODES = {"Hispanic or Latino": "Y", "Not Hispanic or Latino": "N"}
RACE_CODES = {"American Indian or Alaska Native": "I", "Asian": "A", "Black or African American": "B",
              "Native Hawaiian or Other Pacific Islander": "P", "White": "W", "Two or More Races": "M"}
RELATIONSHIP_CODES = {"Mother": "MO", "Father": "FA", "Grandparent": "GP", "Guardian": "GU", "Aunt": "AU",
                      "Uncle": "UN", "Foster Parent": "FP"}
TRANSPORT_CODES = {"Bus": "B", "Car": "C", "Walk": "W", "Bike": "W", "Public Transit": "T"}

DIRECT = [  # (to, from, max_length)
    ("name.middle_name", "student_legal_middle_name", 30),
    ("demographics.birth_city", "birth_city", 50),
    ("demographics.birth_country", "birth_country", 50),
    ("state_province_id", "state_student_id", 32),
    ("contact_info.email", "student_email", 100),
    ("addresses.physical.city", "home_city", 50),
    ("addresses.mailing.street", "mailing_street", 60),
    ("addresses.mailing.city", "mailing_city", 50),
    ("addresses.mailing.state_province", "mailing_state", 2),
    ("addresses.mailing.postal_code", "mailing_zip", 10),
    ("contact.emergency_contact_name2", "emergency2_name", 60),
    ("contact.father", "guardian2_first_name", 60),
    ("contact.doctor_name", "physician_name", 60),
    ("contact.doctor_phone", "physician_phone", 30),
    ("ext.guardian1_employer", "guardian1_employer", 100),
    ("ext.guardian1_relationship_text", "guardian1_relationship", 40),
    ("ext.guardian2_last_name", "guardian2_last_name", 50),
    ("ext.guardian2_phone", "guardian2_phone", 30),
    ("ext.guardian2_email", "guardian2_email", 100),
    ("ext.emergency1_name", "emergency1_name", 60),
    ("ext.emergency1_relationship", "emergency1_relationship", 40),
    ("ext.emergency2_phone", "emergency2_phone", 30),
    ("ext.previous_school_name", "previous_school_name", 80),
    ("ext.previous_school_city", "previous_school_city", 50),
    ("ext.previous_school_state", "previous_school_state", 2),
    ("ext.allergies", "allergies", 500),
    ("ext.medications", "medications", 500),
    ("ext.medical_conditions", "medical_conditions", 500),
    ("ext.has_iep", "has_iep", 3),
    ("ext.has_504", "has_504", 3),
    ("ext.gifted_program", "gifted_program", 3),
    ("ext.english_learner_services", "english_learner_services", 3),
    ("ext.military_family", "military_family", 3),
    ("ext.homeless_status", "homeless_status", 3),
    ("ext.needs_interpreter", "needs_interpreter", 3),
    ("ext.bus_stop", "bus_stop", 60),
    ("ext.photo_release", "photo_release", 3),
    ("ext.schoolmint_id", "student.schoolmint_id", 20),
    ("ext.form_id", "registration.form_id", 20),
    ("school_enrollment.school_number", "school.school_number", 10),
    ("ext.first_language_text", "first_language", 40),
    ("ext.preferred_first_name", "student_preferred_first_name", 50),
]

CODES = [  # (to, from, codes, unmatched, fallback)
    ("demographics.gender", "gender", GENDER_CODES, "fail", None),
    ("school_enrollment.grade_level", "grade_applying", GRADE_CODES, "fail", None),
    ("ext.home_language", "home_language", LANGUAGE_CODES, "fallback", "99"),
    ("ext.ethnicity", "ethnicity", ETHNICITY_CODES, "fail", None),
    ("ext.race", "race", RACE_CODES, "blank", None),
    ("addresses.physical.state_province", "home_state", {s: s for s in STATES}, "fail", None),
    ("ext.guardian1_relationship", "guardian1_relationship", RELATIONSHIP_CODES, "fallback", "OT"),
    ("ext.transportation", "transportation_mode", TRANSPORT_CODES, "blank", None),
]

CHAINS = [  # (to, from, steps)
    ("demographics.birth_date", "birth_date",
     [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]),
    ("name.first_name", "student_legal_first_name",
     [{"kind": "transliterate"}, {"kind": "proper_case"}, {"kind": "max_length", "length": 50}]),
    ("name.last_name", "student_legal_last_name",
     [{"kind": "transliterate"}, {"kind": "proper_case"}, {"kind": "max_length", "length": 50}]),
    ("phones.main.number", "home_phone", [{"kind": "phone", "format": "(999) 999-9999"}]),
    ("contact.emergency_phone1", "guardian1_phone", [{"kind": "phone", "format": "999-999-9999"}]),
    ("contact.emergency_contact_name1", None,
     [{"kind": "join", "fields": ["guardian1_first_name", "guardian1_last_name"], "delimiter": " "},
      {"kind": "proper_case"}, {"kind": "max_length", "length": 60}]),
    ("addresses.physical.postal_code", "home_zip",
     [{"kind": "substitute", "mode": "regex", "find": r"^\s*(\d{5})(?:-\d{4})?\s*$", "replace": r"\1"}]),
    ("addresses.physical.street", None,
     [{"kind": "join", "fields": ["home_street", "home_apartment"], "delimiter": ", "},
      {"kind": "squish"}, {"kind": "max_length", "length": 60}]),
    ("contact.mother", None,
     [{"kind": "join", "fields": ["guardian1_first_name", "guardian1_last_name"]},
      {"kind": "if_then_else", "field": "guardian1_relationship", "operator": "equals", "compare": "Mother",
       "then_mode": "keep", "else_mode": "value", "else_value": ""},
      {"kind": "transliterate"}]),
    ("contact.guardian_email", None,
     [{"kind": "pick", "fields": ["guardian1_email", "guardian2_email"]}, {"kind": "lower"}, {"kind": "trim"}]),
]


def build_rows() -> list[dict]:
    rows = [{"to": to, "type": "direct", "from": frm} for to, frm, _ in DIRECT]
    for to, frm, codes, unmatched, fallback in CODES:
        row = {"to": to, "type": "match_codes", "from": frm, "codes": codes, "unmatched": unmatched}
        if fallback:
            row["fallback"] = fallback
        rows.append(row)
    for to, frm, steps in CHAINS:
        row = {"to": to, "type": "transformation", "steps": steps}
        if frm:
            row["from"] = frm
        rows.append(row)
    assert len(rows) == 60 and len(CHAINS) == 10 and len(CODES) == 8
    return rows


def build_targets() -> list[FieldSection]:
    fields = [T(to, to.rsplit(".", 1)[-1].replace("_", " ").title(), n) for to, _, n in DIRECT]
    fields += [
        T("name.first_name", "First Name", 50, required=True),
        T("name.last_name", "Last Name", 50, required=True),
        T("demographics.birth_date", "Birth Date", type="date", required=True),
        T("demographics.gender", "Gender", type="code", codes=(Code("F"), Code("M"), Code("X"))),
        T("school_enrollment.grade_level", "Grade Level", required=True, insert_only=True,
          codes=tuple(Code(c) for c in dict.fromkeys(GRADE_CODES.values()))),
        T("phones.main.number", "Main Phone", 30),
        T("contact.emergency_phone1", "Emergency Phone 1", 30),
        T("contact.emergency_contact_name1", "Emergency Contact 1", 60),
        T("addresses.physical.postal_code", "Postal Code", 10),
        T("addresses.physical.street", "Street", 60),
        T("addresses.physical.state_province", "State", 2),
        T("contact.mother", "Mother", 60),
        T("contact.guardian_email", "Guardian Email", 100),
    ]
    fields += [T(to, to, 10) for to, _, _, _, _ in CODES
               if to not in ("demographics.gender", "school_enrollment.grade_level",
                             "addresses.physical.state_province")]
    return [FieldSection("student", "Student", tuple(fields))]


# ----------------------------------------------------------------------------- the hand-written floor

_NON_DIGITS = re.compile(r"\D+")
_ZIP = re.compile(r"^\s*(\d{5})(?:-\d{4})?\s*$")
_TRANSLIT = str.maketrans({"ß": "ss", "Ø": "O", "ø": "o", "Ł": "L", "ł": "l", "Æ": "AE", "æ": "ae",
                           "\u2019": "'", "\u2013": "-"})
_NOT_NAME = re.compile(r"[^A-Za-z' \-]+")
_APOS = re.compile(r"(?<=[^\W\d_]{2})(['\u2019])([^\W\d_])")
_MC = re.compile(r"\bMc([a-z])")
_ROMAN = re.compile(r"\b(Ii|Iii|Iv)\b")
_AFTER_DIGIT = re.compile(r"(?<=\d)([^\W\d_]+)")


def _translit(s):
    if not s.isascii():
        s = unicodedata.normalize("NFKD", s.translate(_TRANSLIT)).encode("ascii", "ignore").decode("ascii")
    s = _NOT_NAME.sub("", s)
    return " ".join(s.split())


def _proper(s):
    if not (s.islower() or s.isupper()):
        return s
    t = s.title()
    if "'" in t:
        t = _APOS.sub(lambda m: m.group(1) + m.group(2).lower(), t)
    if "Mc" in t:
        t = _MC.sub(lambda m: "Mc" + m.group(1).upper(), t)
    if "I" in t:
        t = _ROMAN.sub(lambda m: m.group(1).upper(), t)
    if any(c.isdigit() for c in t):
        t = _AFTER_DIGIT.sub(lambda m: m.group(1).lower(), t)
    return t


def _cut(s, n):
    return s if len(s) <= n else s[:n].rstrip()


def _phone_digits(s):
    d = _NON_DIGITS.sub("", s)
    if len(d) == 11 and d[0] == "1":
        d = d[1:]
    return d


DIRECT_PAIRS = tuple((to, frm) for to, frm, _ in DIRECT)


def hand_written(src: dict) -> dict:
    out = {}
    for to, frm in DIRECT_PAIRS:
        v = src.get(frm)
        if v and not v.isspace():
            out[to] = v
    # Match Codes
    g = src.get("gender")
    if g:
        out["demographics.gender"] = GENDER_CODES.get(g) or GENDER_CODES[g.strip().title()]
    v = src.get("grade_applying")
    if v:
        out["school_enrollment.grade_level"] = GRADE_CODES[v]
    v = src.get("home_language")  # fallback: a blank answer gets it too
    out["ext.home_language"] = LANGUAGE_CODES.get(v, "99") if v and not v.isspace() else "99"
    v = src.get("ethnicity")
    if v:
        out["ext.ethnicity"] = ETHNICITY_CODES[v]
    v = src.get("race")
    if v and v in RACE_CODES:
        out["ext.race"] = RACE_CODES[v]
    v = src.get("home_state")
    if v:
        out["addresses.physical.state_province"] = v
    v = src.get("guardian1_relationship")
    out["ext.guardian1_relationship"] = RELATIONSHIP_CODES.get(v, "OT") if v and not v.isspace() else "OT"
    v = src.get("transportation_mode")
    if v and v in TRANSPORT_CODES:
        out["ext.transportation"] = TRANSPORT_CODES[v]
    # Transformations
    v = src.get("birth_date")
    if v:
        m, d, y = v.split("/")
        out["demographics.birth_date"] = f"{y}-{int(m):02d}-{int(d):02d}"
    v = src.get("student_legal_first_name")
    if v:
        v = _cut(_proper(_translit(v)), 50)
        if v:
            out["name.first_name"] = v
    v = src.get("student_legal_last_name")
    if v:
        v = _cut(_proper(_translit(v)), 50)
        if v:
            out["name.last_name"] = v
    v = src.get("home_phone")
    if v:
        d = _phone_digits(v)
        out["phones.main.number"] = f"({d[:3]}) {d[3:6]}-{d[6:]}"
    v = src.get("guardian1_phone")
    if v:
        d = _phone_digits(v)
        out["contact.emergency_phone1"] = f"{d[:3]}-{d[3:6]}-{d[6:]}"
    first, last = src.get("guardian1_first_name", "").strip(), src.get("guardian1_last_name", "").strip()
    name = " ".join(p for p in (first, last) if p)
    if name:
        out["contact.emergency_contact_name1"] = _cut(_proper(name), 60)
    v = src.get("home_zip")
    if v:
        out["addresses.physical.postal_code"] = _ZIP.sub(r"\1", v)
    street = ", ".join(p for p in (src.get("home_street", "").strip(), src.get("home_apartment", "").strip()) if p)
    if street:
        out["addresses.physical.street"] = _cut(" ".join(street.split()), 60)
    if name and src.get("guardian1_relationship", "").strip().casefold() == "mother":
        v = _translit(name)
        if v:
            out["contact.mother"] = v
    email = src.get("guardian1_email", "").strip() or src.get("guardian2_email", "").strip()
    if email:
        out["contact.guardian_email"] = email.lower().strip()
    return out


# ----------------------------------------------------------------------------- run

def _time_both(engine, baseline, records, repeat):
    """Best time of each over ``repeat`` rounds, alternating so both see the same machine load."""
    best_e = best_b = float("inf")
    out_e = out_b = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out_e = [engine(r) for r in records]
        t1 = time.perf_counter()
        out_b = [baseline(r) for r in records]
        t2 = time.perf_counter()
        best_e, best_b = min(best_e, t1 - t0), min(best_b, t2 - t1)
    return best_e, out_e, best_b, out_b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    rng = random.Random(SEED)
    records = [make_registration(rng, i) for i in range(args.records)]
    steps = step_classes(build_plugin_manager(load_entrypoints=False))
    t0 = time.perf_counter()
    mapping = compile_mapping(build_rows(), build_targets(), steps)
    compile_s = time.perf_counter() - t0
    assert not mapping.config_problems, mapping.config_problems
    ctx = MappingContext(today=TODAY, insert=True)

    engine_s, results, base_s, expected = _time_both(lambda r: mapping(r, ctx), hand_written,
                                                     records, args.repeat)

    mismatches = [i for i, (res, exp) in enumerate(zip(results, expected)) if res.payload != exp]
    if mismatches:
        i = mismatches[0]
        got, exp = results[i].payload, expected[i]
        diff = {k: (got.get(k), exp.get(k)) for k in sorted(set(got) | set(exp)) if got.get(k) != exp.get(k)}
        raise SystemExit(f"{len(mismatches)} payloads differ; first at record {i}: {diff}")
    failed = sum(1 for r in results if not r.ok)
    warned = sum(1 for r in results if r.warnings)
    assert failed == 0, [r.errors for r in results if not r.ok][:3]

    n = len(records)
    rps, base_rps = n / engine_s, n / base_s
    ratio = engine_s / base_s
    print(f"mapping: {len(mapping.rows)} rows (10 transformation chains, 8 match codes, 42 direct), "
          f"compiled in {compile_s * 1000:.1f} ms")
    print(f"records: {n}, payloads equal to the hand-written function: {n - len(mismatches)}/{n}; "
          f"records with warnings: {warned}")
    print(f"engine:       {rps:>10,.0f} records/s  ({engine_s * 1e6 / n:.1f} us/record)")
    print(f"hand-written: {base_rps:>10,.0f} records/s  ({base_s * 1e6 / n:.1f} us/record)")
    print(f"ratio (engine time / hand-written time): {ratio:.2f}  (target: >= 20,000 records/s and <= 3.00)")
    print(json.dumps({"records_per_s": round(rps), "baseline_records_per_s": round(base_rps),
                      "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
