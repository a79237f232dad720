"""The Enroll registration form: the field catalog a district's form is built from.

Each field has a key (what answers and mappings use), a label, the form section it
appears in, a type, and choice options for choice fields. ``install_catalog`` writes
it for an organization; ``SYSTEM_FIELDS`` are the registration's own values that a
mapping can also read (see docs/architecture.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from .models import FormField

GENDERS = ["Female", "Male", "Non-binary"]
GRADES = ["PK", "TK", "K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
LANGUAGES = ["English", "Spanish", "Vietnamese", "Mandarin", "Arabic", "Tagalog", "Somali", "Other"]
ETHNICITY = ["Hispanic or Latino", "Not Hispanic or Latino"]
RACES = ["American Indian or Alaska Native", "Asian", "Black or African American",
         "Native Hawaiian or Other Pacific Islander", "White", "Two or More Races"]
RELATIONSHIPS = ["Mother", "Father", "Grandparent", "Guardian", "Aunt", "Uncle", "Foster Parent", "Other"]
YES_NO = ["Yes", "No"]
STATES = ["CA", "TX", "NY", "FL", "IL", "WA", "OR", "AZ", "CO", "MA"]
TRANSPORT = ["Bus", "Car", "Walk", "Bike", "Public Transit"]
PHONE_TYPES = ["Cell", "Home", "Work"]

_F = []  # (key, label, section, type, options)


def _add(section, fields):
    for spec in fields:
        key, label, typ, *rest = spec
        _F.append((key, label, section, typ, rest[0] if rest else []))


_add("Student Information", [
    ("student_legal_first_name", "Student Legal First Name", "text"),
    ("student_legal_middle_name", "Student Legal Middle Name", "text"),
    ("student_legal_last_name", "Student Legal Last Name", "text"),
    ("student_suffix", "Suffix", "choice", ["", "Jr.", "Sr.", "II", "III"]),
    ("student_preferred_first_name", "Preferred First Name", "text"),
    ("student_preferred_last_name", "Preferred Last Name", "text"),
    ("birth_date", "Birth Date", "date"),
    ("birth_city", "City of Birth", "text"),
    ("birth_country", "Country of Birth", "text"),
    ("gender", "Gender", "choice", GENDERS),
    ("grade_applying", "Grade Applying For", "choice", GRADES),
    ("state_student_id", "State Student ID (if known)", "text"),
    ("student_email", "Student Email", "email"),
    ("student_cell_phone", "Student Cell Phone", "phone"),
])
_add("Language and Demographics", [
    ("home_language", "Primary Language Spoken at Home", "choice", LANGUAGES),
    ("first_language", "Student's First Language", "choice", LANGUAGES),
    ("ethnicity", "Ethnicity", "choice", ETHNICITY),
    ("race", "Race", "choice", RACES),
    ("needs_interpreter", "Family Needs an Interpreter", "yesno", YES_NO),
])
_add("Address", [
    ("home_street", "Home Street Address", "text"),
    ("home_apartment", "Apartment / Unit", "text"),
    ("home_city", "Home City", "text"),
    ("home_state", "Home State", "choice", STATES),
    ("home_zip", "Home ZIP Code", "text"),
    ("mailing_same_as_home", "Mailing Address Same as Home", "yesno", YES_NO),
    ("mailing_street", "Mailing Street Address", "text"),
    ("mailing_city", "Mailing City", "text"),
    ("mailing_state", "Mailing State", "choice", STATES),
    ("mailing_zip", "Mailing ZIP Code", "text"),
    ("home_phone", "Home Phone", "phone"),
])
for n in (1, 2):
    _add(f"Parent/Guardian {n}", [
        (f"guardian{n}_first_name", f"Guardian {n} First Name", "text"),
        (f"guardian{n}_last_name", f"Guardian {n} Last Name", "text"),
        (f"guardian{n}_relationship", f"Guardian {n} Relationship", "choice", RELATIONSHIPS),
        (f"guardian{n}_phone", f"Guardian {n} Phone", "phone"),
        (f"guardian{n}_phone_type", f"Guardian {n} Phone Type", "choice", PHONE_TYPES),
        (f"guardian{n}_email", f"Guardian {n} Email", "email"),
        (f"guardian{n}_lives_with_student", f"Guardian {n} Lives with Student", "yesno", YES_NO),
        (f"guardian{n}_employer", f"Guardian {n} Employer", "text"),
    ])
for n in (1, 2):
    _add(f"Emergency Contact {n}", [
        (f"emergency{n}_name", f"Emergency Contact {n} Name", "text"),
        (f"emergency{n}_relationship", f"Emergency Contact {n} Relationship", "choice", RELATIONSHIPS),
        (f"emergency{n}_phone", f"Emergency Contact {n} Phone", "phone"),
    ])
_add("Previous School", [
    ("previous_school_name", "Previous School Name", "text"),
    ("previous_school_city", "Previous School City", "text"),
    ("previous_school_state", "Previous School State", "choice", STATES),
    ("previous_school_last_grade", "Last Grade Completed", "choice", GRADES),
    ("previous_school_last_date", "Last Date Attended", "date"),
])
_add("Health and Services", [
    ("physician_name", "Physician Name", "text"),
    ("physician_phone", "Physician Phone", "phone"),
    ("allergies", "Allergies", "textarea"),
    ("medications", "Medications Taken at School", "textarea"),
    ("medical_conditions", "Medical Conditions", "textarea"),
    ("has_iep", "Student Has an IEP", "yesno", YES_NO),
    ("has_504", "Student Has a 504 Plan", "yesno", YES_NO),
    ("gifted_program", "Participated in a Gifted Program", "yesno", YES_NO),
    ("english_learner_services", "Received English Learner Services", "yesno", YES_NO),
    ("military_family", "Military-Connected Family", "yesno", YES_NO),
    ("homeless_status", "Housing Situation Is Temporary", "yesno", YES_NO),
])
_add("Transportation", [
    ("transportation_mode", "How Will the Student Get to School", "choice", TRANSPORT),
    ("bus_stop", "Requested Bus Stop", "text"),
    ("after_school_care", "After-School Care Needed", "yesno", YES_NO),
])
_add("Enrollment", [
    ("requested_start_date", "Requested Start Date", "date"),
    ("photo_release", "Photo Release", "yesno", YES_NO),
])

CATALOG = tuple(_F)

#: registration values a mapping can read beside the answers (key, label)
SYSTEM_FIELDS = (
    ("registration.form_id", "Registration Form ID"),
    ("registration.grade", "Registration Grade"),
    ("registration.school_year", "Registration School Year"),
    ("registration.status", "Registration Status"),
    ("registration.approved_at", "Registration Approved Date"),
    ("school.name", "School Name"),
    ("school.school_number", "School Number"),
    ("student.schoolmint_id", "SchoolMint ID"),
    ("student.sis_id", "SIS ID"),
)
SYSTEM_SECTION = "Registration"


def install_catalog(organization) -> int:
    """Create the form fields for ``organization`` (existing keys are kept)."""
    existing = {f.key for f in FormField.select(FormField.key).where(FormField.organization == organization)}
    rows = [dict(organization=organization, key=k, label=l, section=s, type=t, options=list(o), position=i)
            for i, (k, l, s, t, o) in enumerate(CATALOG) if k not in existing]
    if rows:
        FormField.insert_many(rows).execute()
    return len(rows)


def source_field_keys(organization_id: int) -> frozenset[str]:
    """Every key a mapping row may read in this organization: its form fields + system values."""
    keys = {f.key for f in FormField.select(FormField.key).where(FormField.organization == organization_id)}
    keys.update(k for k, _ in SYSTEM_FIELDS)
    return frozenset(keys)


def source_values(reg, school=None, student=None, sis_id: str | None = None) -> dict:
    """The flat dict a mapping reads: answers plus the system values. ``sis_id`` is the
    student's id in the SIS the mapping writes to (their link on that connection)."""
    school = school or reg.school
    student = student or reg.student
    values = dict(reg.answers or {})
    values.update({
        "registration.form_id": str(reg.form_id),
        "registration.grade": reg.grade,
        "registration.school_year": reg.school_year,
        "registration.status": reg.status,
        "registration.approved_at": reg.approved_at.strftime("%Y-%m-%d") if reg.approved_at else "",
        "school.name": school.name,
        "school.school_number": school.school_number,
        "student.schoolmint_id": student.schoolmint_id,
        "student.sis_id": sis_id or "",
    })
    return values


# --------------------------------------------------------------------------- the From Enroll Field list

@dataclass
class Catalog:
    """The organization's form fields plus the system values, grouped by form section."""

    groups: list[tuple[str, list[tuple[str, str]]]]
    labels: dict[str, str]
    options: dict[str, list]
    entries: list[dict]

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self.labels)

    def label(self, key: str | None) -> str:
        if not key:
            return ""
        return self.labels.get(key, key)


def load_catalog(org_id: int) -> Catalog:
    groups: dict[str, list[tuple[str, str]]] = {}
    labels, options, entries = {}, {}, []
    for f in FormField.select().where(FormField.organization == org_id).order_by(FormField.position, FormField.id):
        groups.setdefault(f.section, []).append((f.key, f.label))
        labels[f.key] = f.label
        options[f.key] = list(f.options or ())
        entries.append({"key": f.key, "label": f.label, "type": f.type, "options": list(f.options or ())})
    system = []
    for key, label in SYSTEM_FIELDS:
        system.append((key, label))
        labels[key] = label
        entries.append({"key": key, "label": label, "type": "text", "options": []})
    out = list(groups.items()) + [(SYSTEM_SECTION, system)]
    return Catalog(groups=out, labels=labels, options=options, entries=entries)
