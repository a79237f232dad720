"""The Ed-Fi-style sandbox itself, over real sockets: contacts and their associations,
descriptors, paged reading with change versions, the named faults, SIS-side lifecycle
operations and the command line."""
from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from enroll_sync import ExportRecord
from sis_generic.cli import FAULT_FLAGS, edfi_command
from sis_generic.sandbox import (
    DEFAULT_CREDENTIALS, DEFAULT_FAULTS, RELATIONS, TELEPHONE_TYPES, openapi_document,
    serve_in_thread, swagger2_document,
)

DATA = "/data/v3/ed-fi"
MOTHER = "uri://ed-fi.org/RelationDescriptor#Mother"
MOBILE = "uri://ed-fi.org/TelephoneNumberTypeDescriptor#Mobile"
HOME_EMAIL = "uri://ed-fi.org/ElectronicMailTypeDescriptor#Home/Personal"
HOME = "uri://ed-fi.org/AddressTypeDescriptor#Home"
CA = "uri://ed-fi.org/StateAbbreviationDescriptor#CA"


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": DEFAULT_CREDENTIALS.api_key}, timeout=10)


@pytest.fixture
def api(server):
    with client(server.url) as c:
        yield c


def a_student(uid: str = "S1", **fields) -> dict:
    return {"studentUniqueId": uid, "firstName": "Ana", "lastSurname": "Diaz", "birthDate": "2015-04-01",
            **fields}


def a_contact(uid: str = "C-1", **fields) -> dict:
    return {"contactUniqueId": uid, "firstName": "Maria", "lastSurname": "Diaz",
            "telephones": [{"telephoneNumber": "(555) 201-3344", "telephoneNumberTypeDescriptor": MOBILE,
                            "orderOfPriority": 1, "textMessageCapabilityIndicator": True}],
            "electronicMails": [{"electronicMailAddress": "maria@example.org",
                                 "electronicMailTypeDescriptor": HOME_EMAIL,
                                 "primaryEmailAddressIndicator": True}],
            "addresses": [{"addressTypeDescriptor": HOME, "streetNumberName": "1 Main St", "city": "Oakland",
                           "stateAbbreviationDescriptor": CA, "postalCode": "94607"}],
            **fields}


def a_link(contact: str = "C-1", student: str = "S1", **fields) -> dict:
    return {"contactReference": {"contactUniqueId": contact}, "studentReference": {"studentUniqueId": student},
            "relationDescriptor": MOTHER, "primaryContactStatus": True, "emergencyContactStatus": True,
            "livesWith": True, "legalGuardian": True, "contactPriority": 1, **fields}


def created_id(resp: httpx.Response) -> str:
    assert resp.status_code == 201, resp.text
    return resp.headers["Location"].rsplit("/", 1)[1]


def newest(api) -> int:
    return api.get("/changeQueries/v1/availableChangeVersions").json()["newestChangeVersion"]


# --------------------------------------------------------------------------- contacts


def test_contacts_upsert_on_contact_unique_id_and_read_filter_put_delete(api):
    cid = created_id(api.post(f"{DATA}/contacts", json=a_contact()))
    again = api.post(f"{DATA}/contacts", json=a_contact(firstName="María"))
    assert again.status_code == 200 and again.headers["Location"].endswith(f"/contacts/{cid}")
    created_id(api.post(f"{DATA}/contacts", json=a_contact("C-2", firstName="Luis", lastSurname="Kim")))

    got = api.get(f"{DATA}/contacts/{cid}")
    assert got.status_code == 200 and got.headers["ETag"].strip('"') == got.json()["_etag"]
    body = got.json()
    assert body["firstName"] == "María" and body["telephones"][0]["telephoneNumberTypeDescriptor"] == MOBILE
    assert body["electronicMails"][0]["electronicMailAddress"] == "maria@example.org"

    assert [c["contactUniqueId"] for c in api.get(f"{DATA}/contacts", params={"lastSurname": "diaz"}).json()] == ["C-1"]
    assert [c["contactUniqueId"] for c in api.get(f"{DATA}/contacts", params={"firstName": "Luis"}).json()] == ["C-2"]
    assert api.get(f"{DATA}/contacts", params={"firstName": "Nobody"}).json() == []

    changed = {**body, "telephones": [{"telephoneNumber": "555-0000", "telephoneNumberTypeDescriptor": MOBILE}]}
    put = api.put(f"{DATA}/contacts/{cid}", json=changed)
    assert put.status_code == 204
    assert api.get(f"{DATA}/contacts/{cid}").json()["telephones"] == changed["telephones"]
    rekey = api.put(f"{DATA}/contacts/{cid}", json={**changed, "contactUniqueId": "C-9"})
    assert rekey.status_code == 400 and "cannot be changed" in rekey.json()["detail"]
    stale = api.put(f"{DATA}/contacts/{cid}", json=changed, headers={"If-Match": '"not-the-etag"'})
    assert stale.status_code == 412

    assert api.delete(f"{DATA}/contacts/{cid}").status_code == 204
    assert api.get(f"{DATA}/contacts/{cid}").status_code == 404
    assert api.put(f"{DATA}/contacts/{cid}", json=changed).status_code == 404


def test_contact_validation_errors_are_problem_details(api):
    bad = a_contact(telephones=[{"telephoneNumber": "1" * 30, "telephoneNumberTypeDescriptor": MOBILE}])
    del bad["lastSurname"]
    resp = api.post(f"{DATA}/contacts", json=bad)
    assert resp.status_code == 400 and resp.headers["Content-Type"] == "application/problem+json"
    problem = resp.json()
    assert problem["type"] == "urn:ed-fi:api:bad-request:data-validation-failed" and problem["status"] == 400
    assert set(problem["validationErrors"]) == {"$.lastSurname", "$.telephones[0].telephoneNumber"}

    unknown = api.post(f"{DATA}/contacts", json=a_contact(telephones=[{
        "telephoneNumber": "555", "telephoneNumberTypeDescriptor": "uri://ed-fi.org/TelephoneNumberTypeDescriptor#Pager"}]))
    assert unknown.status_code == 400
    assert unknown.json()["validationErrors"] == {"$.telephones[0].telephoneNumberTypeDescriptor": [
        "TelephoneNumberTypeDescriptor value 'uri://ed-fi.org/TelephoneNumberTypeDescriptor#Pager' does not exist."]}
    with_id = api.post(f"{DATA}/contacts", json={**a_contact(), "id": "abc"})
    assert with_id.status_code == 400 and "$.id" in with_id.json()["validationErrors"]
    assert api.get(f"{DATA}/contacts").json() == []


def test_associations_check_their_references_and_protect_what_they_refer_to(api, server):
    missing = api.post(f"{DATA}/studentContactAssociations", json=a_link())
    assert missing.status_code == 409
    assert missing.json()["type"] == "urn:ed-fi:api:data-conflict:unresolved-reference"
    assert missing.json()["detail"] == "The referenced Contact, Student item(s) do not exist."
    sid = created_id(api.post(f"{DATA}/students", json=a_student()))
    only_contact = api.post(f"{DATA}/studentContactAssociations", json=a_link())
    assert only_contact.status_code == 409 and "referenced Contact item(s)" in only_contact.json()["detail"]
    cid = created_id(api.post(f"{DATA}/contacts", json=a_contact()))

    aid = created_id(api.post(f"{DATA}/studentContactAssociations", json=a_link()))
    same = api.post(f"{DATA}/studentContactAssociations", json=a_link(livesWith=False, contactPriority=2))
    assert same.status_code == 200 and same.headers["Location"].endswith(aid)  # upsert on both references
    [link] = api.get(f"{DATA}/studentContactAssociations", params={"studentUniqueId": "S1"}).json()
    assert link["id"] == aid and link["livesWith"] is False and link["contactPriority"] == 2
    assert link["studentReference"]["link"] == {"rel": "Student", "href": f"/ed-fi/students/{sid}"}
    assert link["contactReference"]["link"] == {"rel": "Contact", "href": f"/ed-fi/contacts/{cid}"}
    assert api.get(f"{DATA}/studentContactAssociations", params={"contactUniqueId": "C-2"}).json() == []
    assert len(api.get(f"{DATA}/studentContactAssociations", params={"legalGuardian": "true"}).json()) == 1

    busy = api.delete(f"{DATA}/students/{sid}")
    assert busy.status_code == 409 and busy.json()["type"] == "urn:ed-fi:api:data-conflict:dependent-item-exists"
    assert "StudentContactAssociation" in busy.json()["detail"]
    assert api.delete(f"{DATA}/contacts/{cid}").status_code == 409
    bad_relation = api.post(f"{DATA}/studentContactAssociations", json=a_link(relationDescriptor="Mother"))
    assert bad_relation.status_code == 400 and "$.relationDescriptor" in bad_relation.json()["validationErrors"]

    assert api.delete(f"{DATA}/studentContactAssociations/{aid}").status_code == 204
    assert api.delete(f"{DATA}/students/{sid}").status_code == 204
    assert server.dump()["students"] == [] and len(server.dump()["contacts"]) == 1


def test_descriptors_list_their_values_as_uris(api):
    resp = api.get(f"{DATA}/relationDescriptors", params={"limit": 100, "totalCount": "true"})
    rows = resp.json()
    assert resp.headers["Total-Count"] == str(len(RELATIONS)) == str(len(rows))
    assert [f"{d['namespace']}#{d['codeValue']}" for d in rows] == RELATIONS
    mother = next(d for d in rows if d["codeValue"] == "Mother")
    assert set(mother) >= {"id", "relationDescriptorId", "codeValue", "namespace", "shortDescription", "description"}
    assert api.get(f"{DATA}/relationDescriptors/{mother['id']}").json() == mother
    types = api.get(f"{DATA}/telephoneNumberTypeDescriptors", params={"codeValue": "mobile"}).json()
    assert [f"{d['namespace']}#{d['codeValue']}" for d in types] == [MOBILE] and MOBILE in TELEPHONE_TYPES
    assert api.post(f"{DATA}/relationDescriptors", json={"codeValue": "x"}).status_code == 405
    assert api.get(f"{DATA}/noSuchThings").status_code == 404


def test_the_openapi_document_describes_contacts_and_the_adapter_can_write_them(server, make_adapter):
    doc = httpx.get(f"{server.url}/metadata/data/v3/swagger.json").json()
    for path in ("/ed-fi/contacts", "/ed-fi/contacts/{id}", "/ed-fi/studentContactAssociations",
                 "/ed-fi/studentContactAssociations/{id}", "/ed-fi/relationDescriptors",
                 "/ed-fi/telephoneNumberTypeDescriptors", "/ed-fi/students/deletes"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    assert schemas["edFi_contact"]["properties"]["contactUniqueId"]["x-Ed-Fi-isIdentity"] is True
    assoc = schemas["edFi_studentContactAssociation"]
    assert assoc["required"] == ["contactReference", "studentReference"]
    assert "enum" not in assoc["properties"]["relationDescriptor"]  # values come from /relationDescriptors
    params = {p["name"] for p in doc["paths"]["/ed-fi/contacts"]["get"]["parameters"]}
    assert {"limit", "offset", "totalCount", "minChangeVersion", "firstName", "lastSurname"} <= params
    descriptors_only = httpx.get(f"{server.url}/metadata/data/v3/descriptors/swagger.json").json()
    assert all(p.startswith("/ed-fi/") and "Descriptors" in p for p in descriptors_only["paths"])
    assert "/ed-fi/contacts" in swagger2_document()["paths"] and openapi_document()["paths"] == doc["paths"]

    adapter = make_adapter(create_operation="POST /data/v3/ed-fi/contacts")
    keys = {f.key for section in adapter.target_fields() for f in section.fields}
    assert {"contactUniqueId", "telephones.0.telephoneNumberTypeDescriptor",
            "electronicMails.0.electronicMailAddress"} <= keys
    [result] = adapter.export([ExportRecord("c-1", {
        "contactUniqueId": "C-77", "firstName": "Maria", "lastSurname": "Diaz",
        "telephones.0.telephoneNumber": "555-1234", "telephones.0.telephoneNumberTypeDescriptor": MOBILE})])
    assert result.ok and result.action == "insert", result.message
    assert server.dump()["contacts"][0]["contactUniqueId"] == "C-77"


# --------------------------------------------------------------------------- paging and change versions


def test_paging_is_stable_and_counts_only_when_asked(api, server):
    server.seed_students(60, seed=3)
    assert "Total-Count" not in api.get(f"{DATA}/students").headers
    assert len(api.get(f"{DATA}/students").json()) == 25  # Ed-Fi's default limit
    seen = []
    for offset in range(0, 75, 25):
        page = api.get(f"{DATA}/students", params={"limit": 25, "offset": offset, "totalCount": "true"})
        assert page.headers["Total-Count"] == "60"
        seen += [s["studentUniqueId"] for s in page.json()]
    assert seen == [f"S{n:06d}" for n in range(1, 61)]
    assert [s["id"] for s in server.dump()["students"]] == [
        s["id"] for s in api.get(f"{DATA}/students", params={"limit": 500}).json()]
    family = server.dump()["students"][0]["lastSurname"]
    filtered = api.get(f"{DATA}/students", params={"lastSurname": family, "totalCount": "true", "limit": 1})
    assert int(filtered.headers["Total-Count"]) >= 2 and len(filtered.json()) == 1  # siblings share it
    for params, error in (({"limit": 501}, "between 0 and 500"), ({"offset": -1}, "Offset must be"),
                          ({"limit": "ten"}, "Limit must be"), ({"minChangeVersion": "x"}, "MinChangeVersion")):
        resp = api.get(f"{DATA}/students", params=params)
        assert resp.status_code == 400 and error in resp.json()["errors"][0], (params, resp.text)


def test_every_write_bumps_the_change_version_and_deletes_are_tracked(api, server):
    assert api.get("/changeQueries/v1/availableChangeVersions").json() == {
        "oldestChangeVersion": 0, "newestChangeVersion": 0}
    server.seed_students(5)
    assert newest(api) == 5
    [first, second, *_] = server.dump()["students"]
    watermark = newest(api)
    api.post(f"{DATA}/students", json={k: v for k, v in second.items() if not k.startswith("_") and k != "id"}
             | {"firstName": "Changed"}).raise_for_status()
    assert newest(api) == watermark + 1 == server.change_versions()[second["id"]]
    changed = api.get(f"{DATA}/students", params={"minChangeVersion": watermark + 1}).json()
    assert [s["firstName"] for s in changed] == ["Changed"]
    window = api.get(f"{DATA}/students", params={"minChangeVersion": 2, "maxChangeVersion": 3}).json()
    assert [s["studentUniqueId"] for s in window] == ["S000003"]  # S000002 moved to version 6

    assert api.delete(f"{DATA}/students/{first['id']}").status_code == 204
    deletes = api.get(f"{DATA}/students/deletes", params={"minChangeVersion": watermark + 1}).json()
    assert deletes == [{"id": first["id"], "changeVersion": watermark + 2,
                        "keyValues": {"studentUniqueId": "S000001"}}]
    assert api.get(f"{DATA}/students/deletes", params={"maxChangeVersion": watermark + 1}).json() == []
    assert api.get(f"{DATA}/students/keyChanges").json() == []
    assert httpx.get(f"{server.url}/changeQueries/v1/availableChangeVersions").status_code == 401


def test_seeding_is_fast_deterministic_and_valid(api, server):
    started = time.perf_counter()
    ids = server.seed_students(5000, seed=11, contacts=True)
    elapsed = time.perf_counter() - started
    assert len(ids) == 5000 and elapsed < 2.0, elapsed
    first = server.dump()
    assert len(first["contacts"]) > 2500 and len(first["studentContactAssociations"]) > 5000

    def content(dump):
        return {k: [{f: v for f, v in item.items() if f not in ("_etag", "_lastModifiedDate")} for item in dump[k]]
                for k in ("students", "contacts", "studentContactAssociations")}

    server.reset()
    server.seed_students(5000, seed=11, contacts=True)
    assert content(server.dump()) == content(first)
    server.reset()
    server.seed_students(3, seed=12)
    assert content(server.dump())["students"] != content(first)["students"][:3]

    # what seeding stores passes the API's own validation, and more seeding continues the numbers
    server.reset()
    server.seed_students(2, seed=11, contacts=True)
    for resource in ("students", "contacts", "studentContactAssociations"):
        item = server.dump()[resource][0]
        put = api.put(f"{DATA}/{resource}/{item['id']}", json=item)
        assert put.status_code == 204, (resource, put.text)
    assert len(server.seed_students(2, seed=11)) == 2
    assert [s["studentUniqueId"] for s in server.dump()["students"]] == [f"S00000{n}" for n in range(1, 5)]


# --------------------------------------------------------------------------- faults


def test_latency_error_rate_and_fault_path(server, api):
    # a wide gap between the delayed and the undelayed answer, so a loaded machine cannot blur it
    server.set_faults(latency_ms=800, fault_path="/data/")
    started = time.perf_counter()
    api.get(f"{DATA}/students").raise_for_status()
    assert time.perf_counter() - started >= 0.8
    started = time.perf_counter()
    httpx.get(f"{server.url}/metadata/data/v3/swagger.json").raise_for_status()
    assert time.perf_counter() - started < 0.6

    server.set_faults(latency_ms=0, error_rate=1.0)
    failed = api.get(f"{DATA}/students")
    assert failed.status_code == 500 and failed.json()["type"] == "urn:ed-fi:api:system-error"
    assert httpx.get(f"{server.url}/metadata/data/v3/swagger.json").status_code == 200
    assert httpx.get(f"{server.url}/sandbox/dump").status_code == 200

    def statuses(seed):
        with serve_in_thread(seed=seed, error_rate=0.5) as other, client(other.url) as c:
            return [c.get(f"{DATA}/students").status_code for _ in range(20)]

    first, again = statuses(5), statuses(5)
    assert first == again and set(first) == {200, 500}  # seeded: the same errors each run


def test_drip_sends_the_same_body_slowly(server, api):
    server.seed_students(1)
    [stored] = server.dump()["students"]
    quick = api.get(f"{DATA}/students/{stored['id']}").content
    server.set_faults(drip_bytes_per_s=len(quick) * 2)  # about half a second
    started = time.perf_counter()
    with api.stream("GET", f"{DATA}/students/{stored['id']}") as resp:
        headers_after = time.perf_counter() - started
        assert resp.headers["Content-Length"] == str(len(quick))
        chunks = [chunk for chunk in resp.iter_raw()]
    total = time.perf_counter() - started
    assert b"".join(chunks) == quick
    assert total >= 0.45 and headers_after < total - 0.2 and len(chunks) > 3


def test_revoke_new_tokens_every_counts_across_tokens(server):
    creds = DEFAULT_CREDENTIALS

    def token() -> str:
        resp = httpx.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(creds.client_id, creds.client_secret))
        return resp.json()["access_token"]

    def get(tok: str) -> int:
        return httpx.get(f"{server.url}{DATA}/students", headers={"Authorization": f"Bearer {tok}"}).status_code

    server.set_faults(revoke_new_tokens_every=3)
    old = token()
    assert [get(old), get(old)] == [200, 200]
    fresh = token()
    assert get(fresh) == 200  # the 3rd request: served, then its token is revoked
    assert get(fresh) == 401  # revoked after one use
    assert get(old) == 200    # others keep working
    with httpx.Client(headers={"X-API-Key": creds.api_key}) as keyed:  # static credentials are never revoked
        assert {keyed.get(f"{server.url}{DATA}/students").status_code for _ in range(6)} == {200}


def test_page_error_at_fails_one_list_page_once(server, api):
    server.seed_students(30)
    server.set_faults(page_error_at=2)
    first = api.get(f"{DATA}/students", params={"limit": 10})
    one = api.get(f"{DATA}/students/{first.json()[0]['id']}")  # not a list page
    second = api.get(f"{DATA}/students", params={"limit": 10, "offset": 10})
    retried = api.get(f"{DATA}/students", params={"limit": 10, "offset": 10})
    third = api.get(f"{DATA}/students", params={"limit": 10, "offset": 20})
    assert [r.status_code for r in (first, one, second, retried, third)] == [200, 200, 500, 200, 200]
    assert server.faults["page_error_at"] == 0


def test_writes_503_refuses_each_of_the_next_n_writes_once(server, api):
    server.set_faults(writes_503=2, retry_after=0)
    assert api.get(f"{DATA}/students").status_code == 200  # reads are not writes
    refused = api.post(f"{DATA}/students", json=a_student("S1"))
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "0"
    assert api.post(f"{DATA}/students", json=a_student("S1")).status_code == 201  # the retry
    assert api.post(f"{DATA}/students", json=a_student("S2")).status_code == 503
    assert api.post(f"{DATA}/students", json=a_student("S2")).status_code == 201
    assert api.post(f"{DATA}/students", json=a_student("S3")).status_code == 201  # N used up
    assert [s["studentUniqueId"] for s in server.dump()["students"]] == ["S1", "S2", "S3"]


def test_gone_students_answer_404_as_deleted_in_the_sis(server, api):
    server.seed_students(2, contacts=True)
    [first, second] = server.dump()["students"]
    server.set_faults(gone_students=1)
    watermark = newest(api)
    gone = api.put(f"{DATA}/students/{first['id']}", json={k: v for k, v in first.items() if k != "_etag"})
    assert gone.status_code == 404
    assert [s["id"] for s in server.dump()["students"]] == [second["id"]]
    links = server.dump()["studentContactAssociations"]  # the student's links went with it
    assert links and {a["studentReference"]["studentUniqueId"] for a in links} == {second["studentUniqueId"]}
    tombstones = api.get(f"{DATA}/students/deletes", params={"minChangeVersion": watermark + 1}).json()
    assert [t["keyValues"] for t in tombstones] == [{"studentUniqueId": first["studentUniqueId"]}]
    assert api.get(f"{DATA}/students/{second['id']}").status_code == 200  # only one was gone


def test_faults_over_http_and_reset_to_start_values():
    with serve_in_thread(latency_ms=5, require_auth=False) as sandbox, httpx.Client(base_url=sandbox.url) as c:
        current = c.get("/sandbox/faults").json()
        assert current == {**DEFAULT_FAULTS, "latency_ms": 5, "rules": []}
        assert c.post("/sandbox/faults", json={"nope": 1}).status_code == 400
        assert c.post("/sandbox/faults", json={"error_rate": 2}).status_code == 400
        changed = c.post("/sandbox/faults", json={"page_error_at": 1, "rules": [
            {"status": 418, "path": "/api/", "times": None}]}).json()
        assert changed["page_error_at"] == 1 and changed["rules"][0]["status"] == 418
        assert c.get("/api/v1/people").status_code == 418
        assert c.get(f"{DATA}/students").status_code == 500  # the first list page
        c.post("/sandbox/faults", json=[]).raise_for_status()  # a list = the rules only
        assert c.get("/api/v1/people").status_code == 200
        assert sandbox.requests() == [("GET", "/api/v1/people", 418), ("GET", f"{DATA}/students", 500),
                                      ("GET", "/api/v1/people", 200)]
        assert c.post("/sandbox/reset").json() == {"ok": True}
        assert c.get("/sandbox/faults").json() == current and sandbox.requests() == []


# --------------------------------------------------------------------------- SIS lifecycle


def test_empty_deletes_everything_and_leaves_tombstones(server, api):
    server.seed_students(6, contacts=True)
    before = server.dump()
    watermark = newest(api)
    deleted = httpx.post(f"{server.url}/sandbox/empty").json()["deleted"]
    assert deleted == {"students": 6, "contacts": len(before["contacts"]),
                       "studentContactAssociations": len(before["studentContactAssociations"])}
    after = server.dump()
    assert after["students"] == after["contacts"] == after["studentContactAssociations"] == []
    for resource in ("students", "contacts", "studentContactAssociations"):
        tombstones = api.get(f"{DATA}/{resource}/deletes", params={"minChangeVersion": watermark + 1,
                                                                    "limit": 500}).json()
        assert sorted(t["id"] for t in tombstones) == sorted(i["id"] for i in before[resource])
    assert newest(api) == watermark + sum(deleted.values())


def test_renumber_keeps_the_students_under_new_ids(server, api):
    server.seed_students(4, contacts=True)
    before = server.dump()
    ids = httpx.post(f"{server.url}/sandbox/renumber").json()["ids"]
    after = server.dump()
    assert set(ids["students"]) == {s["id"] for s in before["students"]}
    assert not set(ids["students"].values()) & set(ids["students"])
    strip = lambda items: [{k: v for k, v in i.items() if k not in ("id", "_etag")} for i in items]  # noqa: E731
    assert strip(after["students"]) == strip(before["students"])  # same data, same order
    old = before["students"][0]["id"]
    assert api.get(f"{DATA}/students/{old}").status_code == 404
    assert api.get(f"{DATA}/students/{ids['students'][old]}").json()["studentUniqueId"] == "S000001"
    link = after["studentContactAssociations"][0]["studentReference"]["link"]["href"]
    assert link == f"/ed-fi/students/{ids['students'][old]}"
    upsert = api.post(f"{DATA}/students", json=a_student("S000001"))
    assert upsert.status_code == 200 and upsert.headers["Location"].endswith(ids["students"][old])
    assert api.get(f"{DATA}/students/deletes").json() == []  # a restored ODS never had the old ids


def test_edit_and_drift_change_students_in_the_sis(server, api):
    server.seed_students(40, seed=2)
    watermark = newest(api)
    edited = httpx.patch(f"{server.url}/sandbox/students/S000001",
                         json={"firstName": "Zed", "middleName": None, "addresses.0.city": "Fresno"}).json()
    got = api.get(f"{DATA}/students/{edited['id']}").json()
    assert got["firstName"] == "Zed" and "middleName" not in got and got["addresses"][0]["city"] == "Fresno"
    assert [s["id"] for s in api.get(f"{DATA}/students", params={"minChangeVersion": watermark + 1}).json()] == [
        edited["id"]]
    assert httpx.patch(f"{server.url}/sandbox/students/S999999", json={"firstName": "X"}).status_code == 404

    watermark = newest(api)
    changes = httpx.post(f"{server.url}/sandbox/drift", json={"change": 10, "null": 5, "seed": 4}).json()["changes"]
    assert len(changes) == 15 and len({c["id"] for c in changes}) == 15
    assert sum(c["new"] is None for c in changes) == 5
    for c in changes:
        current = api.get(f"{DATA}/students/{c['id']}").json()
        value = current
        for part in c["field"].split("."):
            value = value[int(part)] if part.isdigit() else (value or {}).get(part)
        assert value == c["new"] != c["old"], c
    changed = api.get(f"{DATA}/students", params={"minChangeVersion": watermark + 1, "limit": 100}).json()
    assert {s["id"] for s in changed} == {c["id"] for c in changes}
    assert httpx.post(f"{server.url}/sandbox/drift", json={"change": 100}).status_code == 400

    deleted = httpx.delete(f"{server.url}/sandbox/students/S000002").json()["deleted"]
    assert deleted["students"] == 1 and api.get(f"{DATA}/students", params={"studentUniqueId": "S000002"}).json() == []


# --------------------------------------------------------------------------- command line


def test_every_fault_has_a_flag():
    flags = {p.name for p in edfi_command.params}
    assert set(FAULT_FLAGS.values()) == set(DEFAULT_FAULTS) and set(FAULT_FLAGS) <= flags


def test_command_line_seeds_and_sets_faults():
    code = ("from sis_generic.cli import edfi_command; edfi_command(['--port', '0', '--quiet', "
            "'--seed-students', '30', '--seed-contacts', '--page-error-at', '1', '--no-auth'])")
    proc = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        url = first.rsplit(" ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=5) as c:
            assert c.get(f"{DATA}/students").status_code == 500
            page = c.get(f"{DATA}/students", params={"totalCount": "true"})
            assert page.status_code == 200 and page.headers["Total-Count"] == "30"
            assert len(c.get(f"{DATA}/studentContactAssociations", params={"limit": 500}).json()) >= 30
            assert c.get("/sandbox/faults").json()["page_error_at"] == 0
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_the_sandbox_routes_are_neither_logged_nor_faulted(server):
    server.set_faults(error_rate=1.0, latency_ms=2000)
    started = time.perf_counter()
    assert httpx.get(f"{server.url}/sandbox/dump").status_code == 200
    assert httpx.get(f"{server.url}/sandbox/requests").json() == {"requests": []}
    # two faulted answers would take 4 s; the margin survives a loaded machine
    assert time.perf_counter() - started < 2.0 and server.requests() == []
