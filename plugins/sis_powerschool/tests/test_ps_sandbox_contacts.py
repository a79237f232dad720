"""The sandbox's contacts plugin API (``/ws/contacts/...``), its code sets and the people
search, over real sockets: shapes and errors as shared/reference/contacts.md describes."""
from __future__ import annotations

import httpx
import pytest

from ps_helpers import post_students, student_body

MOTHER = {
    "firstName": "Maria", "lastName": "Lopez", "gender": "F", "employer": "Valley Farms",
    "emails": [{"type": "Current", "address": "maria.lopez@example.com", "primary": True}],
    "phones": [{"phoneType": "Mobile", "phoneNumber": "(559) 555-0101", "sms": True},
               {"phoneType": "Home", "phoneNumber": "559-555-0199"}],
    "addresses": [{"addressType": "Home", "street": "12 Olive Ave", "city": "Fresno",
                   "state": "CA", "country": "US", "postalcode": "93701",
                   "startDate": "2024-07-01"}],
}
DETAILS = {"relationship": "Mother", "custodial": True, "livesWith": True, "emergency": True,
           "schoolPickup": True, "receivesMail": True, "startDate": "2025-08-20"}


def new_student(api, **overrides) -> tuple[int, str]:
    """Insert a student; return (dcid, student number)."""
    body = student_body(**overrides)
    result = post_students(api, body).json()["results"]["result"]
    assert result["status"] == "SUCCESS", result
    return result["success_message"]["id"], body["local_id"]


def create(api, body: dict) -> dict:
    r = api.post("/ws/contacts/contact", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "VALID" and answer["action"] == "INSERT"
    assert answer["_success_message"]["ref"] == "/ws/contacts/insertUpdateContact"
    assert "_error_message" not in answer
    return answer


def errors(r: httpx.Response) -> set[tuple[str, str]]:
    """(field, error_code) of a refused save: HTTP 400, errors under _error_message._warning."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == "INVALID" and "_success_message" not in body
    return {(e["field"], e["error_code"]) for e in body["_error_message"]["_warning"]}


# ----------------------------------------------------------------------------- create, get

def test_create_a_contact_with_emails_phones_and_addresses(api, sandbox):
    answer = create(api, MOTHER)
    cid = answer["_success_message"]["id"]
    saved = answer["savedObject"]
    assert saved["contactId"] == cid and saved["lastName"] == "Lopez"
    got = api.get(f"/ws/contacts/contact/{cid}").json()
    assert got == saved
    assert (got["firstName"], got["gender"], got["active"]) == ("Maria", "F", True)
    [email] = got["emails"]
    assert email["address"] == "maria.lopez@example.com" and email["primary"] is True
    assert isinstance(email["contactEmailId"], int)
    mobile, home = got["phones"]
    assert (mobile["phoneType"], mobile["sequence"], mobile["preferred"]) == ("Mobile", 1, True)
    assert (home["phoneType"], home["sequence"], home["preferred"]) == ("Home", 2, False)
    assert home["phoneNumber"] == "559-555-0199", "kept as typed"
    [address] = got["addresses"]
    assert (address["street"], address["state"], address["endDate"]) == ("12 Olive Ave", "CA", None)
    assert got["contactStudents"] == []
    ids = {cid, email["contactEmailId"], mobile["contactsPhoneId"], address["contactsAddressId"]}
    assert len(ids) == 4, "each kind of record has its own ids"
    dump = sandbox.contacts()
    assert [c["contactId"] for c in dump["contacts"]] == [cid] and dump["links"] == []
    assert api.get(f"/ws/contacts/contact/{cid + 999}").status_code == 404


@pytest.mark.parametrize("body,expected", [
    ({"firstName": "Maria"}, {("lastName", "REQUIRED_FIELD_MISSING")}),
    ({"lastName": "Lopez"}, {("firstName", "REQUIRED_FIELD_MISSING")}),
    ({"firstName": "M", "lastName": "x" * 51}, {("lastName", "INVALID_LENGTH")}),
    ({"firstName": "M", "lastName": "L", "gender": "Female"},
     {("gender", "INVALID_CODESET_VALUE")}),
    ({"firstName": "M", "lastName": "L", "phones": [{"phoneType": "Cell", "phoneNumber": "5595550101"}]},
     {("phones[0].phoneType", "INVALID_CODESET_VALUE")}),
    ({"firstName": "M", "lastName": "L", "phones": [{"phoneType": "Home"}]},
     {("phones[0].phoneNumber", "REQUIRED_FIELD_MISSING")}),
    ({"firstName": "M", "lastName": "L", "phones": [{"phoneType": "Home", "phoneNumber": "555"}]},
     {("phones[0].phoneNumber", "INVALID_VALUE")}),
    ({"firstName": "M", "lastName": "L", "emails": [{"type": "Current", "address": "nope"}]},
     {("emails[0].address", "INVALID_VALUE")}),
    ({"firstName": "M", "lastName": "L", "addresses": [{"addressType": "Home", "street": "1 Main",
                                                        "city": "Fresno", "state": "Calif"}]},
     {("addresses[0].state", "INVALID_CODESET_VALUE")}),
    ({"firstName": "M", "lastName": "L", "active": "maybe"}, {("active", "INVALID_VALUE")}),
])
def test_create_refusals_are_in_powerschools_shape(api, sandbox, body, expected):
    assert errors(api.post("/ws/contacts/contact", json=body)) == expected
    assert sandbox.contacts()["contacts"] == [], "nothing is stored"


def test_several_errors_come_together_and_a_non_object_is_refused(api):
    got = errors(api.post("/ws/contacts/contact", json={"middleName": "x" * 31}))
    assert got == {("firstName", "REQUIRED_FIELD_MISSING"), ("lastName", "REQUIRED_FIELD_MISSING"),
                   ("middleName", "INVALID_LENGTH")}
    assert errors(api.post("/ws/contacts/contact", json=[1])) == {("body", "INVALID_VALUE")}


def test_the_contacts_api_needs_a_token(sandbox):
    r = httpx.post(sandbox.url + "/ws/contacts/contact", json=MOTHER)
    assert r.status_code == 401
    assert sandbox.contacts()["contacts"] == []


# ----------------------------------------------------------------------------- code sets

def test_code_sets_are_read_from_the_codeset_table(api):
    r = api.get("/ws/schema/table/codeset", params={"q": "codetype==Relationship",
                                                    "projection": "code,displayvalue"})
    body = r.json()
    assert r.status_code == 200 and body["name"] == "codeset"
    rows = [rec["tables"]["codeset"] for rec in body["record"]]
    assert {"code": "Mother", "displayvalue": "Mother"} in rows
    assert set(rows[0]) == {"code", "displayvalue"}, "projection is honoured"
    phones = api.get("/ws/schema/table/codeset", params={"q": "codetype==Phone"}).json()["record"]
    phone_codes = {rec["tables"]["codeset"]["code"] for rec in phones}
    assert {"Home", "Mobile", "Work"} <= phone_codes
    assert all(rec["tables"]["codeset"]["codetype"] == "Phone" for rec in phones)
    count = api.get("/ws/schema/table/codeset/count", params={"q": "codetype==Relationship"})
    assert count.json() == {"count": len(rows)}
    # every code the contacts API accepts for a phone type is in the table, and no other
    for code in phone_codes:
        ok = api.post("/ws/contacts/contact", json={"firstName": "A", "lastName": "B", "phones": [
            {"phoneType": code, "phoneNumber": "5595550101"}]})
        assert ok.status_code == 200, code
    assert api.get("/ws/schema/table/codeset", params={"q": "nope==1"}).status_code == 400
    assert api.get("/ws/schema/table/nope").status_code == 404


# ----------------------------------------------------------------------------- sub-resources

def test_emails_phones_and_addresses_can_be_added_changed_and_removed(api):
    cid = create(api, {"firstName": "Ana", "lastName": "Diaz"})["_success_message"]["id"]
    r = api.post(f"/ws/contacts/{cid}/emails", json={"type": "Work", "address": "ana@work.example"})
    assert r.status_code == 200 and r.json()["action"] == "INSERT"
    first = r.json()["savedObject"]
    assert first["primary"] is True, "the only email is the primary one"
    second = api.post(f"/ws/contacts/{cid}/emails", json={
        "type": "Personal", "address": "ana@home.example", "primary": True}).json()["savedObject"]
    emails = {e["contactEmailId"]: e for e in api.get(f"/ws/contacts/{cid}/emails").json()}
    assert emails[second["contactEmailId"]]["primary"] is True
    assert emails[first["contactEmailId"]]["primary"] is False, "one primary email"
    eid = first["contactEmailId"]
    assert api.delete(f"/ws/contacts/{cid}/emails/{eid}").json()["action"] == "DELETE"
    assert api.get(f"/ws/contacts/{cid}/emails/{eid}").status_code == 404

    phone = api.post(f"/ws/contacts/{cid}/phones", json={
        "phoneType": "Mobile", "phoneNumber": "559 555 0111"}).json()["savedObject"]
    pid = phone["contactsPhoneId"]
    put = api.put(f"/ws/contacts/{cid}/phones/{pid}", json={"phoneNumber": "559-555-0112",
                                                              "extension": "12"})
    assert put.status_code == 200 and put.json()["action"] == "UPDATE"
    got = api.get(f"/ws/contacts/{cid}/phones/{pid}").json()
    assert (got["phoneNumber"], got["extension"], got["phoneType"]) == ("559-555-0112", "12", "Mobile")
    assert errors(api.put(f"/ws/contacts/{cid}/phones/{pid}", json={"phoneType": "Pager"})) == {
        ("phoneType", "INVALID_CODESET_VALUE")}

    address = api.post(f"/ws/contacts/{cid}/addresses", json={
        "addressType": "Mailing", "street": "PO Box 5", "city": "Clovis", "state": "CA",
        "postalcode": "93612"}).json()["savedObject"]
    assert api.get(f"/ws/contacts/{cid}/addresses").json() == [address]
    assert errors(api.post(f"/ws/contacts/{cid}/addresses", json={"addressType": "Home"})) == {
        ("street", "REQUIRED_FIELD_MISSING"), ("city", "REQUIRED_FIELD_MISSING")}
    whole = api.get(f"/ws/contacts/contact/{cid}").json()
    assert len(whole["emails"]) == 1 and len(whole["phones"]) == 1 and len(whole["addresses"]) == 1
    assert api.post("/ws/contacts/999999/emails", json={"address": "a@b.c"}).status_code == 404


def test_demographics_update_the_person_but_not_its_children(api):
    cid = create(api, MOTHER)["_success_message"]["id"]
    r = api.put(f"/ws/contacts/{cid}/demographics", json={
        "lastName": "Lopez-Garcia", "employer": None, "emails": []})
    assert r.status_code == 200 and r.json()["action"] == "UPDATE"
    assert r.json()["_success_message"]["id"] == cid
    got = api.get(f"/ws/contacts/contact/{cid}").json()
    assert (got["firstName"], got["lastName"], got["employer"]) == ("Maria", "Lopez-Garcia", None)
    assert len(got["emails"]) == 1, "children are not changed through demographics"
    assert errors(api.put(f"/ws/contacts/{cid}/demographics", json={"lastName": ""})) == {
        ("lastName", "REQUIRED_FIELD_MISSING")}
    demo = api.get(f"/ws/contacts/{cid}/demographics").json()
    assert demo["lastName"] == "Lopez-Garcia" and "emails" not in demo


# ----------------------------------------------------------------------------- links

def test_link_a_contact_to_students_with_details_and_read_a_students_contacts(api, sandbox):
    dcid, number = new_student(api)
    sibling, sibling_number = new_student(api)
    cid = create(api, MOTHER)["_success_message"]["id"]
    r = api.post(f"/ws/contacts/{cid}/students", json={
        "studentNumber": number, "sequence": 1, "studentDetails": [DETAILS]})
    assert r.status_code == 200, r.text
    link = r.json()["savedObject"]
    assert (link["dcid"], link["studentNumber"], link["sequence"]) == (dcid, number, 1)
    [detail] = link["studentDetails"]
    assert {k: detail[k] for k in DETAILS} == DETAILS
    assert detail["studentContactId"] == link["studentContactId"]
    assert detail["endDate"] is None and detail["active"] is True
    # the same contact for the sibling, without details: PowerSchool adds one with defaults
    r2 = api.post(f"/ws/contacts/{cid}/students", json={"studentNumber": sibling_number})
    default = r2.json()["savedObject"]
    assert default["sequence"] == 1, "first contact of that student"
    assert default["studentDetails"][0]["relationship"] is None
    assert default["studentDetails"][0]["custodial"] is False

    father = create(api, {"firstName": "Jorge", "lastName": "Lopez", "contactStudents": [
        {"studentNumber": number, "studentDetails": [{**DETAILS, "relationship": "Father"}]}]})
    fid = father["_success_message"]["id"]
    assert father["savedObject"]["contactStudents"][0]["sequence"] == 2, "next in line"

    contacts = api.get(f"/ws/contacts/student/{dcid}").json()
    assert [c["contactId"] for c in contacts] == [cid, fid], "in the student's priority order"
    mine = next(s for s in contacts[0]["contactStudents"] if s["dcid"] == dcid)
    assert mine["studentDetails"][0]["relationship"] == "Mother"
    assert len(contacts[0]["contactStudents"]) == 2, "the contact serves both siblings"
    assert [c["contactId"] for c in api.get(f"/ws/contacts/student/{sibling}").json()] == [cid]

    links = sandbox.contacts()["links"]
    assert sorted((l["contactId"], l["studentDcid"]) for l in links) == sorted(
        [(cid, dcid), (cid, sibling), (fid, dcid)])
    assert {l["studentNumber"] for l in links} == {number, sibling_number}


def test_a_student_without_contacts_is_204_and_an_unknown_one_404(api):
    dcid, _ = new_student(api)
    r = api.get(f"/ws/contacts/student/{dcid}")
    assert r.status_code == 204 and r.content == b""
    assert api.get(f"/ws/contacts/student/{dcid + 1000}").status_code == 404


def test_link_refusals(api, sandbox):
    dcid, number = new_student(api)
    cid = create(api, MOTHER)["_success_message"]["id"]
    assert errors(api.post(f"/ws/contacts/{cid}/students", json={"sequence": 1})) == {
        ("studentNumber", "REQUIRED_FIELD_MISSING")}
    assert errors(api.post(f"/ws/contacts/{cid}/students", json={"studentNumber": "424242"})) == {
        ("studentNumber", "INVALID_STUDENT_NUMBER")}
    assert errors(api.post(f"/ws/contacts/{cid}/students", json={
        "studentNumber": number, "studentDetails": [{**DETAILS, "relationship": "Mom"}]})) == {
        ("studentDetails[0].relationship", "INVALID_CODESET_VALUE")}
    assert errors(api.post(f"/ws/contacts/{cid}/students", json={
        "studentNumber": number, "studentDetails": [
            {**DETAILS, "startDate": "2025-01-01", "endDate": "2025-12-31"},
            {**DETAILS, "startDate": "2025-06-01"}]})) == {("studentDetails", "OVERLAPPING_DATES")}
    assert sandbox.contacts()["links"] == []
    assert api.post(f"/ws/contacts/{cid}/students", json={"studentNumber": number}).status_code == 200
    assert errors(api.post(f"/ws/contacts/{cid}/students", json={"studentNumber": number})) == {
        ("studentNumber", "DUPLICATE_ASSOCIATION")}
    refused = api.post("/ws/contacts/contact", json={**MOTHER, "contactStudents": [
        {"studentNumber": number, "studentDetails": [{"relationship": "Auntie"}]}]})
    assert errors(refused) == {("contactStudents[0].studentDetails[0].relationship",
                                "INVALID_CODESET_VALUE")}
    assert len(sandbox.contacts()["contacts"]) == 1, "a refused create stores nothing"


def test_links_and_their_details_can_be_changed_and_removed(api, sandbox):
    dcid, number = new_student(api)
    cid = create(api, MOTHER)["_success_message"]["id"]
    link = api.post(f"/ws/contacts/{cid}/students", json={
        "studentNumber": number, "studentDetails": [
            {**DETAILS, "startDate": "2024-08-20", "endDate": "2025-06-10"}]}).json()["savedObject"]
    scid = link["studentContactId"]
    put = api.put(f"/ws/contacts/{cid}/students/{scid}", json={
        "sequence": 3, "studentDetails": [{"relationship": "Other"}]})
    assert put.status_code == 200
    got = api.get(f"/ws/contacts/{cid}/students/{scid}").json()
    assert got["sequence"] == 3
    assert [d["relationship"] for d in got["studentDetails"]] == ["Mother"], "details ignored"
    base = f"/ws/contacts/{cid}/students/{scid}/studentdetails"
    overlap = api.post(base, json={**DETAILS, "relationship": "Guardian", "startDate": "2025-01-01"})
    assert errors(overlap) == {("studentDetails", "OVERLAPPING_DATES")}
    new = api.post(base, json={**DETAILS, "relationship": "Guardian", "startDate": "2025-08-20"})
    assert new.status_code == 200
    did = new.json()["savedObject"]["studentContactDetailId"]
    assert [d["relationship"] for d in api.get(base).json()] == ["Mother", "Guardian"]
    assert api.put(f"{base}/{did}", json={"emergency": False}).status_code == 200
    assert api.get(f"{base}/{did}").json()["emergency"] is False
    assert errors(api.put(f"{base}/{did}", json={"relationship": "Cousin"})) == {
        ("relationship", "INVALID_CODESET_VALUE")}
    assert api.delete(f"{base}/{did}").status_code == 200
    assert len(api.get(base).json()) == 1
    assert api.delete(f"/ws/contacts/{cid}/students/{scid}").status_code == 200
    assert api.get(f"/ws/contacts/student/{dcid}").status_code == 204
    assert api.get(f"/ws/contacts/{cid}/students/{scid}").status_code == 404


def test_deleting_a_contact_removes_its_links(api, sandbox):
    dcid, number = new_student(api)
    cid = create(api, {**MOTHER, "contactStudents": [{"studentNumber": number}]})["_success_message"]["id"]
    r = api.delete(f"/ws/contacts/{cid}")
    assert r.status_code == 200 and r.json()["_success_message"]["Id"] == cid
    assert sandbox.contacts() == {"contacts": [], "links": []}
    assert api.delete(f"/ws/contacts/{cid}").status_code == 404


def test_original_contact_types_in_use(api):
    dcid, number = new_student(api)
    cid = create(api, MOTHER)["_success_message"]["id"]
    assert api.get(f"/ws/contacts/student/original_contact_types/in_use/{dcid}").json() == []
    api.post(f"/ws/contacts/{cid}/students", json={"studentNumber": number,
                                                   "originalContactType": "mother"})
    assert api.get(f"/ws/contacts/student/original_contact_types/in_use/{dcid}").json() == ["mother"]
    other = create(api, {"firstName": "Tia", "lastName": "Lopez"})["_success_message"]["id"]
    assert errors(api.post(f"/ws/contacts/{other}/students", json={
        "studentNumber": number, "originalContactType": "aunt"})) == {
        ("originalContactType", "INVALID_VALUE")}


# ----------------------------------------------------------------------------- matching

def find_match(api, first: str, last: str, phones=(), emails=()) -> int | None:
    """What an adapter does before creating: people with that name, then any shared phone
    (digits) or email (case-insensitive)."""
    q = f"firstname=={first};lastname=={last}"
    people = api.get("/ws/schema/table/person", params={"q": q, "projection": "id"}).json()["record"]
    if not people:
        return None
    ids = ",".join(str(p["id"]) for p in people)
    digits = {"".join(ch for ch in p if ch.isdigit()) for p in phones}
    mails = {e.lower() for e in emails}
    for contact in api.get("/ws/contacts/contacts", params={"contactids": ids}).json():
        theirs = {"".join(ch for ch in p["phoneNumber"] if ch.isdigit()) for p in contact["phones"]}
        if digits & theirs or mails & {e["address"].lower() for e in contact["emails"]}:
            return contact["contactId"]
    return None


def test_people_search_finds_contacts_by_name(api):
    a = create(api, MOTHER)["_success_message"]["id"]
    b = create(api, {"firstName": "maria", "lastName": "LOPEZ", "phones": [
        {"phoneType": "Work", "phoneNumber": "209-555-0177"}]})["_success_message"]["id"]
    create(api, {"firstName": "Maria", "lastName": "Lopezz"})
    found = api.get("/ws/schema/table/person", params={"q": "firstname==Maria;lastname==Lopez"}).json()
    assert sorted(r["id"] for r in found["record"]) == [a, b], "names compare without case"
    row = found["record"][0]["tables"]["person"]
    assert row["firstname"] == "Maria" and row["id"] == str(a), "values come back as text"
    wild = api.get("/ws/schema/table/person/count", params={"q": "lastname==lopez*"}).json()
    assert wild == {"count": 3}
    several = api.get("/ws/contacts/contacts", params={"contactids": f"{a},{b},99999"}).json()
    assert [c["contactId"] for c in several] == [a, b]
    assert api.get("/ws/contacts/contacts").status_code == 400
    assert find_match(api, "Maria", "Lopez", phones=["5595550101"]) == a
    assert find_match(api, "Maria", "Lopez", phones=["(209) 555-0177"]) == b
    assert find_match(api, "Maria", "Lopez", emails=["MARIA.LOPEZ@example.com"]) == a
    assert find_match(api, "Maria", "Lopez", phones=["5595550000"]) is None
    assert find_match(api, "Mario", "Lopez", phones=["5595550101"]) is None


def test_siblings_share_their_parents_exactly_two_contacts(api, sandbox):
    """Two registrations of siblings name the same mother and father: matching before
    creating leaves exactly two contacts, each linked to both children."""
    children = [new_student(api) for _ in range(2)]
    parents = [dict(MOTHER), {"firstName": "Jorge", "lastName": "Lopez", "phones": [
        {"phoneType": "Mobile", "phoneNumber": "559-555-0102"}]}]
    for dcid, number in children:
        for parent, relationship in zip(parents, ("Mother", "Father")):
            phones = [p["phoneNumber"] for p in parent.get("phones", [])]
            cid = find_match(api, parent["firstName"], parent["lastName"], phones=phones)
            if cid is None:
                cid = create(api, parent)["_success_message"]["id"]
            r = api.post(f"/ws/contacts/{cid}/students", json={
                "studentNumber": number, "studentDetails": [{**DETAILS, "relationship": relationship}]})
            assert r.status_code == 200, r.text
    dump = sandbox.contacts()
    assert len(dump["contacts"]) == 2, [c["firstName"] for c in dump["contacts"]]
    assert len(dump["links"]) == 4
    assert {(l["contactId"], l["studentDcid"]) for l in dump["links"]} == {
        (c["contactId"], dcid) for c in dump["contacts"] for dcid, _ in children}


def test_creating_a_duplicate_is_allowed_but_warned(api, sandbox):
    create(api, MOTHER)
    r = api.post("/ws/contacts/contact", json={"firstName": "MARIA", "lastName": "lopez", "emails": [
        {"type": "Current", "address": "Maria.Lopez@example.com"}]})
    assert r.status_code == 200
    [warning] = r.json()["_warning_message"]["_warning"]
    assert warning["warning_code"] == "POSSIBLE_DUPLICATE_CONTACT"
    assert len(sandbox.contacts()["contacts"]) == 2, "the SIS does not stop it"
