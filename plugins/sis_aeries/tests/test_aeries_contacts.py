"""Guardians and emergency contacts: the registration's contact slots
(``contacts.{i}.{WriteName}``) are written to the student's Aeries contacts (CON),
matched against the ones the student has, checked like the student, and a contact
that fails makes the sync PARTIAL, never the student FAILED."""
from __future__ import annotations

from aeries_helpers import posts, record
from enroll_sync import ExportRecord, Outcome
from sis_aeries.adapter import CONTACT_FIELDS, CONTACT_SLOTS
from sis_aeries.sandbox import CONTACT_FIELDS as SIS_CONTACT_FIELDS

MOTHER = {"contacts.0.FirstName": "Maria", "contacts.0.LastName": "Rivera",
          "contacts.0.RelationshipToStudentCode": "11", "contacts.0.CellPhone": "(555) 201-3344",
          "contacts.0.EmailAddress": "maria@example.org", "contacts.0.Address": "12 Oak St",
          "contacts.0.AddressCity": "Eagle Rock", "contacts.0.AddressState": "CA",
          "contacts.0.AddressZip": "99999", "contacts.0.ContactOrder": "1",
          "contacts.0.PrimaryContact": "Y", "contacts.0.LivesWithStudentIndicator": "Y"}
GRANDPA = {"contacts.1.FirstName": "Jose", "contacts.1.LastName": "Rivera",
           "contacts.1.RelationshipToStudentCode": "14", "contacts.1.HomePhone": "555-777-1212",
           "contacts.1.MiscCode": "E", "contacts.1.ContactOrder": 2}


def contacts_of(sandbox, sis_id):
    return [c for c in sandbox.contacts() if str(c["StudentID"]) == str(sis_id)]


def test_contact_slots_are_target_fields(adapter):
    fields = {f.key: f for s in adapter.target_fields() for f in s.fields}
    for i in range(CONTACT_SLOTS):
        assert f"contacts.{i}.FirstName" in fields and f"contacts.{i}.AddressZip" in fields
    assert "contacts.0.AddressZipCode" not in fields, "the write name, not the read name"
    rel = {c.value for c in fields["contacts.0.RelationshipToStudentCode"].codes}
    assert {"10", "11"} <= rel and "41" not in rel, "inactive relationship codes are left out"
    assert fields["contacts.2.EmailAddress"].max_length == 50


def test_the_contact_table_agrees_with_the_sis():
    sis = {f.write: f for f in SIS_CONTACT_FIELDS}
    for f in CONTACT_FIELDS:
        assert f.key in sis, f.key
        assert f.read == sis[f.key].read, f.key
        if sis[f.key].kind == "str":
            assert f.max_length == sis[f.key].limit, f.key


def test_preview_shows_the_contact_requests(adapter):
    preview = adapter.preview(record(**MOTHER))
    [c] = preview["contacts"]
    assert c["request"] == "POST /api/v5/InsertContact/{StudentID}?DatabaseYear=2025"
    assert c["body"]["AddressZip"] == "99999" and c["body"]["ContactOrder"] == 1
    assert "contacts.0.FirstName" not in preview["body"] and "FirstName" in preview["body"]


def test_a_new_student_with_two_contacts(adapter, sandbox):
    [r] = adapter.export([record(**MOTHER, **GRANDPA)])
    assert r.outcome == Outcome.SUCCEEDED, r.message
    assert "Contacts: 2 inserted." in r.message
    stored = contacts_of(sandbox, r.sis_id)
    assert [(c["SequenceNumber"], c["FirstName"]) for c in stored] == [(1, "Maria"), (2, "Jose")]
    assert stored[0]["AddressZipCode"] == "99999" and stored[0]["CellPhone"] == "5552013344"
    assert [c["request"] for c in r.sent["contacts"]] == [f"POST /api/v5/InsertContact/{r.sis_id}?DatabaseYear=2025"] * 2
    assert r.response["student"]["StudentID"] == int(r.sis_id)


def test_a_second_sync_updates_the_contacts_instead_of_adding_copies(adapter, sandbox):
    rec = record(**MOTHER, **GRANDPA)
    [first] = adapter.export([rec])
    changed = dict(rec.payload, **{"contacts.0.EmailAddress": "maria.r@example.org",
                                   "contacts.1.FirstName": "José"})
    [again] = adapter.export([ExportRecord(rec.record_id, changed, sis_id=first.sis_id)])
    assert again.outcome == Outcome.SUCCEEDED and "Contacts: 2 updated." in again.message
    stored = contacts_of(sandbox, first.sis_id)
    assert len(stored) == 2 and stored[0]["EmailAddress"] == "maria.r@example.org"
    assert stored[1]["FirstName"] == "José", "matched by name without accents"
    assert "UpdateContact" in again.sent["contacts"][0]["request"]


def test_a_contact_is_matched_by_last_name_and_phone(adapter, sandbox, api):
    [first] = adapter.export([rec := record(**MOTHER)])
    nickname = dict(rec.payload, **{"contacts.0.FirstName": "Mari"})
    [again] = adapter.export([ExportRecord(rec.record_id, nickname, sis_id=first.sis_id)])
    assert again.outcome == Outcome.SUCCEEDED and len(contacts_of(sandbox, first.sis_id)) == 1


def test_contacts_the_student_already_had_are_left_alone(adapter, sandbox, api):
    sandbox.seed(10, seed=8)
    student = next(s for s in sandbox.students() if contacts_of(sandbox, s["StudentID"]))
    before = contacts_of(sandbox, student["StudentID"])
    rec = record(LastName=student["LastName"], FirstName=student["FirstName"],
                 BirthDate=student["Birthdate"][:10], SchoolCode=str(student["SchoolCode"]),
                 Grade=str(student["Grade"]), **{"contacts.0.FirstName": "New", "contacts.0.LastName": "Person"})
    [r] = adapter.export([rec])
    after = contacts_of(sandbox, student["StudentID"])
    assert r.sis_id == str(student["StudentID"]) and after[:len(before)] == before
    assert after[-1]["FirstName"] == "New" and len(after) == len(before) + 1


def test_an_ignored_contact_field_makes_a_partial_sync(adapter, sandbox):
    sandbox.set_faults(no_insert_permission=["contact.EmailAddress"])
    [r] = adapter.export([record(**MOTHER)])
    assert r.outcome == Outcome.PARTIAL and r.sis_id
    assert [e.field for e in r.errors] == ["contacts.0.EmailAddress"]
    assert "Insert permission" in r.errors[0].message and "Contacts not written: contacts.0.EmailAddress" in r.message


def test_a_contact_aeries_refuses_leaves_the_student_saved(adapter, sandbox):
    sandbox.set_faults(denied_areas=["Contacts:Insert"])
    [r] = adapter.export([record(**MOTHER, **GRANDPA)])
    assert r.outcome == Outcome.PARTIAL and r.action == "insert" and sandbox.count() == 1
    assert [e.field for e in r.errors] == ["contacts.0", "contacts.1"]
    assert "Contacts security area" in r.errors[0].message


def test_contact_problems_found_before_sending(adapter, sandbox):
    [r] = adapter.export([record(**{"contacts.0.FirstName": "Solo", "contacts.1.EmailAddress": "x" * 51 + "@e.org",
                                    "contacts.1.FirstName": "Ana", "contacts.1.LastName": "Long",
                                    "contacts.2.Nickname": "x", "contacts.3.PrimaryContact": "maybe"})])
    assert r.outcome == Outcome.PARTIAL and r.sis_id
    fields = {e.field: e for e in r.errors}
    assert set(fields) == {"contacts.0", "contacts.1.EmailAddress", "contacts.2.Nickname",
                           "contacts.3.PrimaryContact"}
    assert "needs a first and a last name" in fields["contacts.0"].message
    assert not posts(sandbox, "InsertContact")


def test_a_400_for_a_contact_names_its_field(adapter, sandbox):
    sandbox.set_faults(reject_last_names=["Refused"])
    [r] = adapter.export([record(**MOTHER, **{"contacts.1.FirstName": "Ana", "contacts.1.LastName": "Refused"})])
    assert r.outcome == Outcome.PARTIAL and "Contacts: 1 inserted." in r.message
    [e] = r.errors
    assert e.field == "contacts.1.LastName" and e.code == "REFUSED" and "rejected" in e.message


def test_a_lost_contact_answer_does_not_add_a_copy(adapter, sandbox):
    sandbox.set_faults(lost_answers=1, fault_path="/api/v5/InsertContact")
    [r] = adapter.export([record(**MOTHER)])
    assert [p["status"] for p in posts(sandbox, "InsertContact")] == [500]
    assert r.outcome == Outcome.SUCCEEDED, r.message
    assert len(contacts_of(sandbox, r.sis_id)) == 1


def test_two_matching_contacts_are_not_guessed(adapter, sandbox, api):
    [first] = adapter.export([rec := record()])
    for _ in range(2):
        api.post(f"/api/v5/InsertContact/{first.sis_id}", json={"FirstName": "Maria", "LastName": "Rivera"})
    [r] = adapter.export([ExportRecord(rec.record_id, dict(rec.payload, **MOTHER), sis_id=first.sis_id)])
    assert r.outcome == Outcome.PARTIAL and r.errors[0].code == "AMBIGUOUS_MATCH"
    assert len(contacts_of(sandbox, first.sis_id)) == 2
