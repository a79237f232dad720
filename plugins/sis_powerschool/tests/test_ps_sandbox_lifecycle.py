"""The SIS's life outside the API, for import tests: emptied, restored from a backup under
new ids, and students changed by hand (``/sandbox/empty``, ``/sandbox/renumber``,
``/sandbox/students/<id>/change`` and the SandboxStore methods behind them)."""
from __future__ import annotations

import httpx

from ps_helpers import post_students, student_body

EXPANSIONS = "demographics,addresses,phones,school_enrollment,contact,contact_info"


def without_ids(contact: dict) -> dict:
    """A rendered contact with every internal id taken out."""
    ids = {"contactId", "contactEmailId", "contactsPhoneId", "contactsAddressId",
           "studentContactId", "studentContactDetailId", "dcid"}

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ids}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return strip(contact)


def test_empty_deletes_every_student_and_contact(sandbox, api, token):
    sandbox.seed_students(30, seed=1, contacts=True)
    top = max(s["id"] for s in sandbox.dump())
    contacts = len(sandbox.contacts()["contacts"])
    assert contacts > 0
    sandbox.set_faults(latency_ms=1)
    r = httpx.post(sandbox.url + "/sandbox/empty")
    assert r.status_code == 200
    body = r.json()
    assert body["message"] == "SIS emptied" and body["students_deleted"] == 30
    assert body["contacts_deleted"] == contacts
    assert sandbox.dump() == [] and sandbox.contacts() == {"contacts": [], "links": []}
    assert api.get("/ws/v1/district/student/count").json() == {"resource": {"count": 0}}, \
        "tokens survive"
    assert sandbox.faults["latency_ms"] == 1, "faults survive"
    again = post_students(api, student_body()).json()["results"]["result"]
    assert again["success_message"]["id"] > top, "ids are not reused"


def test_renumber_keeps_everything_but_the_ids(sandbox, api):
    ids = sandbox.seed_students(25, seed=6, contacts=True)
    before = sandbox.dump()
    contacts_before = sandbox.contacts()
    listing_before = api.get("/ws/v1/district/student", params={"expansions": EXPANSIONS}).json()
    r = httpx.post(sandbox.url + "/sandbox/renumber")
    assert r.status_code == 200
    maps = r.json()
    after = sandbox.dump()
    assert len(after) == 25
    assert {int(k): v for k, v in maps["students"].items()} == {
        b["id"]: a["id"] for b, a in zip(before, after)}
    assert not {s["id"] for s in after} & set(ids), "every student id changed"
    assert [{k: v for k, v in s.items() if k != "id"} for s in after] == \
        [{k: v for k, v in s.items() if k != "id"} for s in before], "all else is equal"
    listing_after = api.get("/ws/v1/district/student", params={"expansions": EXPANSIONS}).json()
    rows_before, rows_after = listing_before["students"]["student"], listing_after["students"]["student"]
    assert [{**x, "id": 0} for x in rows_before] == [{**x, "id": 0} for x in rows_after]
    assert api.get(f"/ws/v1/student/{before[0]['id']}").status_code == 404
    assert api.get(f"/ws/v1/student/{after[0]['id']}").json()["student"]["local_id"] == \
        before[0]["local_id"]

    contacts_after = sandbox.contacts()
    old_cids = {c["contactId"] for c in contacts_before["contacts"]}
    new_cids = {c["contactId"] for c in contacts_after["contacts"]}
    assert len(new_cids) == len(old_cids) and not old_cids & new_cids
    assert {int(k): v for k, v in maps["contacts"].items()} == dict(zip(
        [c["contactId"] for c in contacts_before["contacts"]],
        [c["contactId"] for c in contacts_after["contacts"]]))
    assert [without_ids(c) for c in contacts_after["contacts"]] == \
        [without_ids(c) for c in contacts_before["contacts"]]
    new_students = {s["id"] for s in after}
    assert {l["studentDcid"] for l in contacts_after["links"]} <= new_students
    assert {l["studentNumber"] for l in contacts_after["links"]} == \
        {l["studentNumber"] for l in contacts_before["links"]}
    old_subs = {e["contactEmailId"] for c in contacts_before["contacts"] for e in c["emails"]}
    new_subs = {e["contactEmailId"] for c in contacts_after["contacts"] for e in c["emails"]}
    assert not old_subs & new_subs, "email ids changed too"
    first = after[0]["id"]
    assert api.get(f"/ws/contacts/student/{first}").status_code == 200
    old_cid = contacts_before["contacts"][0]["contactId"]
    assert api.get(f"/ws/contacts/contact/{old_cid}").status_code == 404
    again = httpx.post(sandbox.url + "/sandbox/renumber").json()
    assert set(again["students"]) == {str(s["id"]) for s in after}, "renumber twice works"


def test_change_ten_students_and_null_five_fields(sandbox, api):
    ids = sandbox.seed_students(20, seed=4)
    changed = ids[:10]
    for i, dcid in enumerate(changed):
        r = httpx.post(f"{sandbox.url}/sandbox/students/{dcid}/change",
                       json={"name.first_name": f"Changed{i}",
                             "addresses": {"physical": {"street": f"{i} New St"}}})
        assert r.status_code == 200, r.text
        assert r.json()["student"]["name"]["first_name"] == f"Changed{i}"
    nulled = {"demographics.birth_date": None, "phones.main.number": None,
              "contact.guardian_email": None, "name.middle_name": None,
              "school_enrollment.entry_code": None}
    target = ids[10]
    assert httpx.post(f"{sandbox.url}/sandbox/students/{target}/change", json=nulled).status_code == 200
    rows = {s["id"]: s for s in api.get("/ws/v1/district/student", params={
        "expansions": EXPANSIONS, "pagesize": 20}).json()["students"]["student"]}
    for i, dcid in enumerate(changed):
        assert rows[dcid]["name"]["first_name"] == f"Changed{i}"
        assert rows[dcid]["addresses"]["physical"]["street"] == f"{i} New St"
        assert rows[dcid]["addresses"]["physical"]["city"], "the rest of the address stays"
    t = rows[target]
    assert "birth_date" not in t["demographics"] and "gender" in t["demographics"]
    assert t["phones"]["main"] == {} and "guardian_email" not in t["contact"]
    assert "middle_name" not in t["name"] and "entry_code" not in t["school_enrollment"]
    untouched = [s for s in sandbox.dump() if s["id"] in ids[11:]]
    assert all(not s["name"]["first_name"].startswith("Changed") for s in untouched)
    search = api.get("/ws/v1/district/student/count", params={"q": "name.first_name==Changed*"})
    assert search.json()["resource"]["count"] == 10, "the search columns follow the change"


def test_change_refusals(sandbox):
    a, b = sandbox.seed_students(2, seed=1)
    url = sandbox.url + "/sandbox/students/{}/change"
    assert httpx.post(url.format(a + 1000), json={"name.first_name": "X"}).status_code == 404
    assert httpx.post(url.format(a), json=[]).status_code == 400
    local_b = next(s["local_id"] for s in sandbox.dump() if s["id"] == b)
    taken = httpx.post(url.format(a), json={"local_id": local_b})
    assert taken.status_code == 400 and str(local_b) in taken.json()["message"]
    assert httpx.post(url.format(a), json={"id": 5}).status_code == 400
    moved = httpx.post(url.format(a), json={"local_id": "777777",
                                            "school_enrollment.grade_level": 3})
    assert moved.status_code == 200
    assert sandbox.store.dcid_for_local_id("777777") == a


def test_the_handle_offers_the_same_operations(sandbox):
    [dcid] = sandbox.seed_students(1, seed=1)
    stored = sandbox.change_student(dcid, {"name": {"last_name": "Renamed"}})
    assert stored["name"]["last_name"] == "Renamed"
    assert sandbox.change_student(dcid + 99, {"name.last_name": "X"}) is None
    maps = sandbox.renumber()
    new = maps["students"][dcid]
    assert sandbox.dump()[0]["id"] == new != dcid
    assert sandbox.empty() == {"students_deleted": 1, "contacts_deleted": 0}
    assert sandbox.count() == 0
