"""Demo data: one district, its schools, a user per role and registrations whose
answers look the way families type them (MM/DD/YYYY dates, phones in mixed
formats, accented names, blanks). Seeded, so every run produces the same data.

``load_demo`` runs once: when the demo district exists it changes nothing, so
whatever an admin changed survives the next ``make run``.
"""
from __future__ import annotations

import datetime as dt
import random

from werkzeug.security import generate_password_hash

from .catalog import install_catalog
from .db import analyze, database
from .models import (Organization, Registration, School, Student, SyncConnection, User, utcnow)

DEMO_SLUG = "riverside"
DEMO_PASSWORD = "enroll-sync-demo"
DEMO_USERS = (
    ("District Admin", "admin@riverside.example", "Dana Admin"),
    ("Sync Admin", "sync@riverside.example", "Sam Sync"),
    ("Registrar", "registrar@riverside.example", "Rita Registrar"),
    ("Viewer", "viewer@riverside.example", "Victor Viewer"),
)
DEMO_SCHOOLS = (
    ("Riverside Elementary", "101", "K", "5"),
    ("Oak Grove Elementary", "102", "K", "5"),
    ("Lincoln Middle School", "201", "6", "8"),
    ("Riverside High School", "301", "9", "12"),
    ("Bright Start Preschool Program", "901", "PK", "TK"),
)

FIRST_F = ["Sofía", "Emma", "Olivia", "Ava", "Isabella", "Mía", "Zoë", "Amélie", "Chloé", "Nguyễn Thị",
           "Aaliyah", "Fatima", "Grace", "Hannah", "Leila", "María José", "Renée", "Siobhán", "Ximena", "Yara"]
FIRST_M = ["Liam", "Noah", "José", "Mateo", "Elijah", "Lucas", "Muhammad", "André", "Jesús", "Ethan",
           "Benjamín", "Dmitri", "Kai", "Mason", "Óscar", "Raúl", "Samuel", "Tomás", "Wei", "Zoltán"]
LAST = ["García", "Smith", "Nguyễn", "Johnson", "Martínez", "O'Brien", "Williams", "Hernández", "Brown",
        "López", "Müller", "Davis", "González", "Kowalski", "Pérez", "Rodríguez", "Schäfer", "Wilson",
        "Anderson", "Thomas", "Jean-Baptiste", "Moore", "Ibáñez", "Kim", "Okafor", "Patel", "Taylor",
        "van der Berg", "Ramírez", "Young"]
STREETS = ["Maple Ave", "Oak St", "Pine Rd", "Cedar Ln", "Elm St", "Sunset Blvd", "River Rd",
           "Lakeview Dr", "Hillcrest Ave", "Main St", "Avenida del Sol", "Park Pl"]
CITIES = [("Riverside", "CA", "925"), ("Moreno Valley", "CA", "925"), ("Corona", "CA", "928"),
          ("Norco", "CA", "928"), ("Jurupa Valley", "CA", "925")]
STATUSES = (["Approved"] * 5) + ["Submitted", "Submitted", "In Review", "In Review", "Denied", "Withdrawn"]
GRADES = ["K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
RELATIONSHIPS = ["Mother", "Father", "Grandparent", "Guardian", "Aunt", "Uncle"]


def _phone(rng: random.Random) -> str:
    area, mid, last = rng.randint(200, 989), rng.randint(200, 999), rng.randint(0, 9999)
    style = rng.randrange(6)
    if style == 0:
        return f"({area}) {mid}-{last:04d}"
    if style == 1:
        return f"{area}-{mid}-{last:04d}"
    if style == 2:
        return f"{area}{mid}{last:04d}"
    if style == 3:
        return f"{area}.{mid}.{last:04d}"
    if style == 4:
        return f"+1 {area} {mid} {last:04d}"
    return f" {area} {mid}-{last:04d} "


def _date(d: dt.date) -> str:
    return d.strftime("%m/%d/%Y")


def grade_for_school(rng, school_low_high) -> str:
    low, high = school_low_high
    if low in ("PK", "TK"):
        return rng.choice(["PK", "TK"])
    lo, hi = GRADES.index(low), GRADES.index(high)
    return GRADES[rng.randint(lo, hi)]


def make_answers(rng: random.Random, grade: str, school_year: str) -> dict:
    """One registration's answers, as a family would type them."""
    gender = rng.choices(["Female", "Male", "Non-binary", ""], weights=[48, 48, 3, 1])[0]
    first = rng.choice(FIRST_F if gender == "Female" else FIRST_M if gender == "Male" else FIRST_F + FIRST_M)
    last = rng.choice(LAST)
    middle = rng.choice(["", "", "Ann", "Marie", "James", "Lee", "Alejandro", "Rose"])
    start_year = int(school_year[:4])
    age = 5 + (GRADES.index(grade) if grade in GRADES else -1)
    birth = dt.date(start_year - age - 1, 9, 2) + dt.timedelta(days=rng.randint(0, 364))
    city, state, zip3 = rng.choice(CITIES)
    street = f"{rng.randint(10, 9999)} {rng.choice(STREETS)}"
    zip_code = f"{zip3}{rng.randint(0, 99):02d}"
    same_mail = rng.random() < 0.85
    g2 = rng.random() < 0.7
    case = rng.randrange(10)
    if case == 0:
        first_typed, last_typed = first.lower(), last.upper()
    elif case == 1:
        first_typed, last_typed = f" {first} ", f"{last}  "
    else:
        first_typed, last_typed = first, last
    ans = {
        "student_legal_first_name": first_typed,
        "student_legal_middle_name": middle,
        "student_legal_last_name": last_typed,
        "student_suffix": rng.choice(["", "", "", "", "Jr.", "II"]),
        "student_preferred_first_name": rng.choice(["", "", "", first[:3]]),
        "student_preferred_last_name": "",
        "birth_date": _date(birth) if rng.random() > 0.05 else birth.strftime("%-m/%-d/%Y"),
        "birth_city": rng.choice(["Riverside", "Los Angeles", "Guadalajara", "Hanoi", "Manila", "", "San Diego"]),
        "birth_country": rng.choice(["United States", "United States", "USA", "Mexico", "Vietnam", "Philippines", ""]),
        "gender": gender,
        "grade_applying": grade,
        "state_student_id": rng.choice(["", "", f"{rng.randint(10**9, 10**10 - 1)}"]),
        "student_email": "" if age < 11 else f"{first.split()[0].lower()}.{rng.randint(1, 99)}@students.example",
        "student_cell_phone": "" if age < 12 else rng.choice(["", _phone(rng)]),
        "home_language": rng.choices(["English", "Spanish", "Vietnamese", "Mandarin", "Arabic", "Tagalog"],
                                     weights=[60, 25, 5, 4, 3, 3])[0],
        "first_language": rng.choice(["English", "Spanish", "English", "Vietnamese"]),
        "ethnicity": rng.choice(["Hispanic or Latino", "Not Hispanic or Latino", "Not Hispanic or Latino"]),
        "race": rng.choice(["White", "Asian", "Black or African American", "Two or More Races",
                            "American Indian or Alaska Native", "Native Hawaiian or Other Pacific Islander"]),
        "needs_interpreter": rng.choice(["No", "No", "No", "Yes"]),
        "home_street": street,
        "home_apartment": rng.choice(["", "", "", "Apt 4B", "Unit 12", "#3"]),
        "home_city": city,
        "home_state": state,
        "home_zip": zip_code,
        "mailing_same_as_home": "Yes" if same_mail else "No",
        "mailing_street": "" if same_mail else f"PO Box {rng.randint(100, 9999)}",
        "mailing_city": "" if same_mail else city,
        "mailing_state": "" if same_mail else state,
        "mailing_zip": "" if same_mail else zip_code,
        "home_phone": rng.choice(["", _phone(rng)]),
    }
    for n, present in ((1, True), (2, g2)):
        rel = rng.choice(RELATIONSHIPS)
        gfirst = rng.choice(FIRST_F if rel in ("Mother", "Aunt") else FIRST_M if rel in ("Father", "Uncle") else FIRST_F + FIRST_M)
        ans.update({
            f"guardian{n}_first_name": gfirst if present else "",
            f"guardian{n}_last_name": (last if rng.random() < 0.8 else rng.choice(LAST)) if present else "",
            f"guardian{n}_relationship": rel if present else "",
            f"guardian{n}_phone": _phone(rng) if present else "",
            f"guardian{n}_phone_type": rng.choice(["Cell", "Cell", "Home", "Work"]) if present else "",
            f"guardian{n}_email": f"{gfirst.split()[0].lower()}.{last.split()[0].lower().replace(chr(39), '')}{rng.randint(1, 999)}@mail.example" if present and rng.random() < 0.9 else "",
            f"guardian{n}_lives_with_student": rng.choice(["Yes", "Yes", "No"]) if present else "",
            f"guardian{n}_employer": rng.choice(["", "Riverside Hospital", "Self-employed", "City of Riverside", "Target"]) if present else "",
        })
    for n in (1, 2):
        present = n == 1 or rng.random() < 0.6
        ans.update({
            f"emergency{n}_name": f"{rng.choice(FIRST_F + FIRST_M)} {rng.choice(LAST)}" if present else "",
            f"emergency{n}_relationship": rng.choice(RELATIONSHIPS + ["Other"]) if present else "",
            f"emergency{n}_phone": _phone(rng) if present else "",
        })
    new_to_district = grade in ("K", "PK", "TK") or rng.random() < 0.3
    ans.update({
        "previous_school_name": "" if new_to_district else rng.choice(["Valley View Elementary", "St. Mary's School", "Escuela Benito Juárez", "Desert Sands Middle", "Online Academy"]),
        "previous_school_city": "" if new_to_district else rng.choice(["Phoenix", "San Bernardino", "Guadalajara", "Riverside"]),
        "previous_school_state": "" if new_to_district else rng.choice(["AZ", "CA", "TX"]),
        "previous_school_last_grade": "" if new_to_district or grade not in GRADES[1:] else GRADES[GRADES.index(grade) - 1],
        "previous_school_last_date": "" if new_to_district else _date(dt.date(start_year, 6, 1) - dt.timedelta(days=rng.randint(0, 20))),
        "physician_name": rng.choice(["", "Dr. Patel", "Dr. Nguyen", "Dr. Rosa Méndez", "Riverside Pediatrics"]),
        "physician_phone": rng.choice(["", _phone(rng)]),
        "allergies": rng.choice(["", "", "", "Peanuts", "Penicillin", "Bee stings", "None"]),
        "medications": rng.choice(["", "", "", "Inhaler (albuterol)", "EpiPen"]),
        "medical_conditions": rng.choice(["", "", "", "Asthma", "Type 1 diabetes"]),
        "has_iep": rng.choice(["No"] * 8 + ["Yes"]),
        "has_504": rng.choice(["No"] * 9 + ["Yes"]),
        "gifted_program": rng.choice(["No"] * 6 + ["Yes"]),
        "english_learner_services": rng.choice(["No"] * 4 + ["Yes"]),
        "military_family": rng.choice(["No"] * 12 + ["Yes"]),
        "homeless_status": rng.choice(["No"] * 20 + ["Yes"]),
        "transportation_mode": rng.choice(["Bus", "Car", "Car", "Walk", "Bike", "Public Transit"]),
        "bus_stop": rng.choice(["", "", "Maple & 3rd", "Oak St Park", "River Rd Library"]),
        "after_school_care": rng.choice(["No", "No", "Yes"]),
        "requested_start_date": _date(dt.date(start_year, 8, 12) + dt.timedelta(days=rng.randint(0, 30))),
        "photo_release": rng.choice(["Yes", "Yes", "No"]),
    })
    return ans


def create_registrations(org, schools, count: int, *, seed: int = 2026, school_year: str = "2026-2027",
                         statuses=STATUSES, first_form_id: int = 100001, schoolmint_start: int = 500001,
                         chunk: int = 500) -> int:
    """Insert ``count`` registrations (and their students) quickly, in chunks."""
    rng = random.Random(seed)
    now = utcnow()
    made = 0
    while made < count:
        n = min(chunk, count - made)
        students, regs = [], []
        for i in range(made, made + n):
            school = schools[i % len(schools)]
            grade = grade_for_school(rng, (school.low_grade, school.high_grade))
            answers = make_answers(rng, grade, school_year)
            status = rng.choice(statuses)
            submitted = now - dt.timedelta(days=rng.randint(1, 120), minutes=rng.randint(0, 1440))
            students.append(dict(organization=org, schoolmint_id=f"SM{schoolmint_start + i}",
                                 first_name=answers["student_legal_first_name"].strip(),
                                 last_name=answers["student_legal_last_name"].strip()))
            regs.append(dict(organization=org, form_id=first_form_id + i, school=school, grade=grade,
                             school_year=school_year, status=status, answers=answers,
                             student_name=f"{answers['student_legal_last_name'].strip()}, {answers['student_legal_first_name'].strip()}",
                             submitted_at=submitted,
                             approved_at=submitted + dt.timedelta(days=2) if status == "Approved" else None))
        with database.atomic():
            Student.insert_many(students).execute()
            ids = {s.schoolmint_id: s.id for s in Student.select(Student.id, Student.schoolmint_id).where(
                (Student.organization == org) & (Student.schoolmint_id.in_([s["schoolmint_id"] for s in students])))}
            for s, r in zip(students, regs):
                r["student"] = ids[s["schoolmint_id"]]
            Registration.insert_many(regs).execute()
        made += n
    analyze()
    return made


def load_demo(plugin_manager=None, sandbox_urls: dict | None = None, registrations: int = 320) -> tuple[bool, Organization]:
    """Create the demo district once, all or nothing (an interrupted first ``make run``
    leaves no half-built district that later runs would keep). Returns (created, organization)."""
    org = Organization.get_or_none(Organization.slug == DEMO_SLUG)
    if org is not None:
        return False, org
    with database.atomic():
        return True, _create_demo(plugin_manager, sandbox_urls, registrations)


def _create_demo(plugin_manager, sandbox_urls, registrations) -> Organization:
    org = Organization.create(name="Riverside Unified School District", slug=DEMO_SLUG,
                              uses_registration_module=True)
    install_catalog(org)
    for role, email, name in DEMO_USERS:
        User.create(organization=org, email=email, name=name, role=role,
                    password_hash=generate_password_hash(DEMO_PASSWORD))
    schools = [School.create(organization=org, name=n, school_number=num, low_grade=lo, high_grade=hi,
                             kind="Program" if "Program" in n else "School")
               for n, num, lo, hi in DEMO_SCHOOLS]
    create_registrations(org, schools, registrations)
    if plugin_manager is not None:
        create_demo_connections(org, plugin_manager, sandbox_urls or {})
    return org


def create_demo_connections(org, plugin_manager, sandbox_urls: dict) -> list:
    from .sync.connections import create_connection
    made = []
    for batch in plugin_manager.hook.register_demo_connections(sandbox_urls=sandbox_urls):
        for spec in batch or ():
            if SyncConnection.select().where((SyncConnection.organization == org) &
                                             (SyncConnection.name == spec["name"])).exists():
                continue
            made.append(create_connection(org, spec["adapter"], spec["name"], spec.get("environment", "sandbox"),
                                          spec.get("settings", {}), plugin_manager=plugin_manager))
    return made
