"""`enroll-sync import registrations FILE.csv`: good file, bad rows, bad file leaves no trace."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest

from enroll_sync.db import database
from enroll_sync.models import Registration, Student
from enroll_sync.testing import db
from tests.test_sync_support import BACKENDS, backend_app

HEADER = ["form_id", "schoolmint_id", "school_number", "grade", "school_year", "status",
          "student_legal_first_name", "student_legal_last_name", "birth_date", "gender", "guardian1_phone"]


def _csv(rows, header=HEADER):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def run_import(tmp_path, text, name="regs.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    env = dict(os.environ, ENROLL_SYNC_INSTANCE_PATH=str(tmp_path / "instance"),
               ENROLL_SYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'instance' / 'app.db'}")
    return subprocess.run([sys.executable, "-m", "enroll_sync.cli", "import", "registrations", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)


def counts(app):
    with app.app_context(), database.connection_context():
        return Registration.select().count(), Student.select().count()


def test_good_file_is_imported(app, tmp_path):
    before = counts(app)
    text = _csv([
        ["300001", "SM-NEW-1", "101", "K", "2026-2027", "Approved", "Zoë", "Ibáñez", "09/01/2020", "Female", "(951) 555-0100"],
        ["300002", "SM-NEW-2", "301", "9", "2026-2027", "Submitted", "Liam", "O'Brien", "2011-03-04", "", ""],
    ])
    result = run_import(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert "Imported 2 registration(s)" in result.stdout
    assert counts(app) == (before[0] + 2, before[1] + 2)
    with app.app_context(), database.connection_context():
        reg = Registration.get(Registration.form_id == 300001)
        assert reg.answers["student_legal_first_name"] == "Zoë"
        assert reg.answers["birth_date"] == "09/01/2020"
        assert reg.status == "Approved" and reg.approved_at is not None
        assert reg.school.school_number == "101"


def test_bad_rows_are_reported_by_line_and_nothing_is_written(app, tmp_path):
    before = counts(app)
    text = _csv([
        ["300001", "SM-NEW-1", "101", "K", "2026-2027", "Approved", "Ana", "Ruiz", "09/01/2020", "Female", ""],
        ["abc", "SM-NEW-2", "999", "13", "2026", "Done", "Ben", "Lee", "31/31/2020", "Robot", "555"],
        ["300001", "SM-NEW-1", "101", "K", "2026-2027", "Approved", "Ana", "Ruiz", "", "", ""],
        ["100001", "SM-NEW-4", "101", "K", "2026-2027", "Approved", "Dup", "Licate", "", "", ""],
    ])
    result = run_import(tmp_path, text)
    assert result.returncode != 0
    err = result.stderr
    assert "Nothing was imported" in err
    assert ":3: " in err and "form_id “abc”" in err and "no school has school_number “999”" in err
    assert "grade “13”" in err and "school_year “2026”" in err and "status “Done”" in err
    assert "birth_date “31/31/2020” is not a date" in err and "gender “Robot”" in err
    assert "guardian1_phone “555”" in err
    assert ":4: " in err and "already appears on line 2" in err
    assert ":5: " in err and "form_id 100001 already exists" in err
    assert ":2: " not in err  # the good row is not blamed
    assert counts(app) == before


@pytest.mark.parametrize("text, message", [
    ("", "The file is empty"),
    ("form_id,schoolmint_id,school_number,grade,school_year,status,favourite_colour\n", "Unknown column(s): favourite_colour"),
    ("form_id,schoolmint_id\n1,2\n", "Missing required column(s): school_number"),
    (",".join(HEADER) + "\n300009,SM9,101,K,2026-2027,Approved,A\n", "Expected 11 values, found 7"),
])
def test_bad_file_gives_a_clear_message(app, tmp_path, text, message):
    before = counts(app)
    result = run_import(tmp_path, text)
    assert result.returncode != 0
    assert message in result.stderr
    assert counts(app) == before


def test_non_utf8_file_is_refused(app, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(_csv([["300001", "SM1", "101", "K", "2026-2027", "Approved", "José", "Núñez", "", "", ""]]).encode("latin-1"))
    env = dict(os.environ, ENROLL_SYNC_INSTANCE_PATH=str(tmp_path / "instance"),
               ENROLL_SYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'instance' / 'app.db'}")
    result = subprocess.run([sys.executable, "-m", "enroll_sync.cli", "import", "registrations", str(path)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0 and "not UTF-8" in result.stderr


# --------------------------------------------------------------------------- strict CSV and the input rules

def test_an_unclosed_quote_is_an_error_at_its_line(app, tmp_path):
    """A first row ending in an unclosed quote used to swallow rows 2-3 into a first name
    and report "Imported 1 registration(s)"."""
    before = counts(app)
    header = "form_id,schoolmint_id,school_number,grade,school_year,status,student_legal_last_name," \
             "student_legal_first_name"
    text = (f"{header}\n"
            "300001,SM-Q-1,101,K,2026-2027,Approved,Ruiz,\"Ana\n"
            "300002,SM-Q-2,101,K,2026-2027,Approved,Lee,Ben\n"
            "300003,SM-Q-3,101,K,2026-2027,Approved,Ng,Cy\n")
    result = run_import(tmp_path, text)
    assert result.returncode != 0, result.stdout
    assert ":2: A quoted value starts on this line and its closing quote never comes" in result.stderr
    assert "Imported" not in result.stdout
    assert counts(app) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_nul_long_values_and_huge_form_ids_are_errors_not_tracebacks(backend, tmp_path):
    from enroll_sync.importer import import_registrations
    from enroll_sync.models import Organization
    gen = backend_app(backend, tmp_path)
    app = next(gen)
    try:
        before = counts(app)
        text = _csv([
            ["300001", "SM-NEW-1", "101", "K", "2026-2027", "Approved", "Ana\x00", "Ruiz", "", "", ""],
            ["300002", "S" * 300, "101", "K", "2026-2027", "Approved", "Ben", "Lee", "", "", ""],
            ["300003", "SM-NEW-3", "101", "K", "2026-2027", "Approved", "C" * 200, "D" * 200, "", "", ""],
            ["2147483648", "SM-NEW-4", "101", "K", "2026-2027", "Approved", "Dee", "Fox", "", "", ""],
            ["300005", "SM-NEW-5", "101", "K", "2026-2027", "Approved", "Eve", "Gil", "x" * 5000, "", ""],
            ["300006", "SM-NEW-6", "101", "K", "2026-2027", "Approved", "Zoë 🎓", "Ibáñez", "", "", ""],
        ])
        with db(app):
            report = import_registrations(Organization.select().first(), text)
        errors = dict(report.errors)
        assert "NUL" in errors[2]
        assert "schoolmint_id is 300 characters long; at most 255 fit" in errors[3]
        assert "together are too long" in errors[4]
        assert "form_id “2147483648” is not a whole number from 1 to 2,147,483,647" in errors[5]
        assert "birth_date is 5,000 characters long" in errors[6]
        assert 7 not in errors  # unicode within the limits is fine
        assert report.imported == 0 and counts(app) == before
    finally:
        next(gen, None)
