"""Target fields read from the request-body schema (OpenAPI 3, Swagger 2, split
documents with external $refs, JSON Schema, pasted documents)."""
from __future__ import annotations

import json
import time

import pytest

from enroll_sync import AdapterError
from enroll_sync.testing import target_field_problems
from sis_generic import GenericRestAdapter
from sis_generic.sandbox import openapi_document


def by_key(sections):
    return {f.key: f for s in sections for f in s.fields}


def test_openapi_fields_are_grouped_typed_and_described(edfi):
    sections = edfi.target_fields()
    assert not target_field_problems(sections)
    assert [(s.key, s.label) for s in sections] == [
        ("root", "Student"), ("birthData", "Birth Data"),
        ("personReference", "Person Reference"), ("addresses", "Addresses")]
    fields = by_key(sections)

    uid = fields["studentUniqueId"]
    assert uid.required and uid.max_length == 32 and uid.type == "string"
    assert "natural key" in uid.help and "unique alphanumeric code" in uid.help
    assert [f.key for f in sections[0].fields if f.required] == [
        "studentUniqueId", "firstName", "lastSurname", "birthDate"]

    birth = fields["birthDate"]
    assert (birth.type, birth.format, birth.required) == ("date", "date", True)
    assert fields["gradeLevel"].type == "integer"
    assert fields["hispanicLatinoEthnicity"].type == "boolean"

    sex = fields["sexDescriptor"]  # a $ref to an enum schema
    assert sex.type == "code"
    assert [(c.value, c.label) for c in sex.codes] == [
        ("uri://ed-fi.org/SexDescriptor#Female", "Female"),
        ("uri://ed-fi.org/SexDescriptor#Male", "Male"),
        ("uri://ed-fi.org/SexDescriptor#Not Selected", "Not Selected")]

    # nested objects are dotted keys; arrays of objects expose their first item
    assert fields["birthData.birthCountryDescriptor"].codes[0].label == "US"
    city = fields["addresses.0.city"]
    assert city.max_length == 30 and city.help == "The name of the city."
    assert not city.required, "addresses is optional, so its required fields are not required on insert"
    assert fields["addresses.0.periods.0.beginDate"].type == "date"
    assert fields["addresses.0.periods.0.beginDate"].label == "Periods › Begin Date"
    # what the SIS sets itself is not offered
    for read_only in ("id", "_etag", "_lastModifiedDate", "personReference.link.href"):
        assert read_only not in fields


def test_swagger2_and_split_documents_give_the_same_fields(make_adapter, server):
    reference = by_key(make_adapter().target_fields())
    swagger = make_adapter(schema_url="/metadata/data/v3/swagger.json?version=2")
    split = make_adapter(schema_url=f"{server.url}/metadata/data/v3/split/swagger.json")
    for adapter in (swagger, split):
        fields = by_key(adapter.target_fields())
        assert fields.keys() == reference.keys()
        assert [f.key for f in fields.values() if f.required] == [
            f.key for f in reference.values() if f.required]
        assert fields["sexDescriptor"].codes == reference["sexDescriptor"].codes
    # the split document's schemas live in a second file, fetched through $ref
    assert server.count("GET", "/metadata/data/v3/split/schemas.json") == 1


def test_json_schema_only_configuration(people_settings):
    with GenericRestAdapter(people_settings()) as adapter:
        sections = adapter.target_fields()
    assert not target_field_problems(sections)
    assert [(s.key, s.label) for s in sections] == [
        ("root", "Person"), ("contact", "Contact"), ("guardians", "Guardians")]
    fields = by_key(sections)
    assert [k for k, f in fields.items() if f.required] == ["externalId", "givenName", "familyName"]
    assert "id" not in fields  # readOnly
    assert fields["contact.email"].format == "email"
    assert fields["grade"].type == "code" and fields["grade"].codes[1].value == "K"
    rel = fields["guardians.0.relationship"]  # oneOf of consts with titles
    assert [(c.value, c.label) for c in rel.codes] == [("MOTHER", "Mother"), ("FATHER", "Father"),
                                                       ("OTHER", "Other")]
    assert fields["guardians.0.contact.phone"].help.startswith("Pattern:")


RECURSIVE = {
    "openapi": "3.0.3",
    "info": {"title": "t", "version": "1"},
    "paths": {"/people": {"post": {"requestBody": {"content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Person"}}}}}}},
    "components": {"schemas": {
        "Person": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "description": "Full name"},
            "parent": {"$ref": "#/components/schemas/Person"},
            "household": {"$ref": "#/components/schemas/Household"},
            "friends": {"type": "array", "items": {"$ref": "#/components/schemas/Person"}},
            "extra": {"allOf": [{"$ref": "#/components/schemas/Base"},
                                {"type": "object", "required": ["note"],
                                 "properties": {"note": {"type": "string", "maxLength": 10}}}]}}},
        "Household": {"type": "object", "properties": {
            "size": {"type": "integer"},
            "members": {"type": "array", "items": {"$ref": "#/components/schemas/Person"}}}},
        "Base": {"type": "object", "properties": {"since": {"type": "string", "format": "date"}}},
    }},
}


def test_recursive_schemas_terminate_and_allof_merges(make_adapter):
    adapter = make_adapter(schema_source="openapi_text", schema_text=json.dumps(RECURSIVE),
                           schema_url="", create_operation="POST /people")
    started = time.monotonic()
    fields = by_key(adapter.target_fields())
    assert time.monotonic() - started < 2
    assert "name" in fields and fields["name"].required
    assert "household.size" in fields
    assert "extra.since" in fields and fields["extra.note"].max_length == 10
    # a cycle back to Person is cut, wherever it appears
    assert not any(k.startswith(("parent", "friends", "household.members")) for k in fields)


def test_pasted_openapi_document_needs_no_schema_request(make_adapter, server):
    adapter = make_adapter(schema_source="openapi_text", schema_url="",
                           schema_text=json.dumps(openapi_document(server.url)))
    assert "addresses.0.city" in by_key(adapter.target_fields())
    assert server.count("GET", "/metadata") == 0


def test_pasted_document_cannot_reach_other_files(make_adapter):
    doc = {"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}}
    adapter = make_adapter(schema_source="json_schema_text", schema_text=json.dumps(doc))
    with pytest.raises(AdapterError, match="pasted document cannot refer to other files"):
        adapter.target_fields()


@pytest.mark.parametrize("resource, settings", [
    ("student", {}),
    ("person", {"schema_source": "json_schema_url", "schema_url": "/schemas/person.schema.json",
                "create_operation": "POST /api/v1/people", "update_operation": "PUT /api/v1/people/{id}",
                "id_location": "/data/id", "auth": "api_key"}),
])
def test_target_fields_reread_a_changed_schema(make_adapter, server, resource, settings):
    """Refresh fields: the core keeps the adapter instance and calls target_fields() again;
    the changed document must be fetched again, and exports must check against it."""
    settings = dict(settings)
    adapter = make_adapter(auth=settings.pop("auth", "oauth2"), **settings)
    schema_url = settings.get("schema_url", "/metadata/data/v3/swagger.json")
    assert "nickname" not in by_key(adapter.target_fields())
    fetched = server.count("GET", schema_url.split("?")[0])

    server.add_properties(resource, nickname={"type": "string", "maxLength": 5,
                                              "description": "What the student likes to be called."})
    fields = by_key(adapter.target_fields())
    assert server.count("GET", schema_url.split("?")[0]) == fetched + 1
    nickname = fields["nickname"]
    assert (nickname.max_length, nickname.help) == (5, "What the student likes to be called.")

    # the export validates against the schema just read
    from generic_helpers import person, student
    record = (student if resource == "student" else person)(nickname="Bartholomew")
    [result] = adapter.export([record])
    assert result.outcome.value == "failed" and result.sent is None
    assert [(e.field, e.message) for e in result.errors] == [("nickname", "'Bartholomew' is too long")]
    assert server.dump()["students" if resource == "student" else "people"] == []

