"""An Ed-Fi-style sandbox SIS for the generic REST adapter, served over a real socket.

The Ed-Fi API (``/data/v3/ed-fi/...``; what ``shared/reference/other-sis-apis.md``,
``contacts.md`` and ``import-direction.md`` say about Ed-Fi ODS/API 7.x and Data
Standard v5):

- ``students``, ``contacts`` and ``studentContactAssociations``: ``POST`` upserts on the
  natural key (``studentUniqueId``; ``contactUniqueId``; ``contactReference`` +
  ``studentReference``): 201 + ``Location`` when new, 200 + ``Location`` when it updated;
  ``GET /{resource}/{id}``, ``PUT`` (204; the natural key cannot change), ``DELETE`` (204;
  409 ``dependent-item-exists`` while an association refers to it); ``GET /{resource}``
  pages with ``limit`` (default 25, at most 500), ``offset`` and ``totalCount=true``
  (``Total-Count`` header), in creation order, filters on any scalar property or
  reference key (``?lastSurname=Diaz``, ``?studentUniqueId=…``; case-insensitive, unknown
  parameters ignored) and ``minChangeVersion``/``maxChangeVersion`` (inclusive);
- ``GET /{resource}/deletes`` (``[{"id", "changeVersion", "keyValues"}]``) and
  ``/{resource}/keyChanges`` (always ``[]``: natural keys cannot change here);
- descriptors, read-only: ``GET /sexDescriptors``, ``/stateAbbreviationDescriptors``,
  ``/addressTypeDescriptors``, ``/countryDescriptors``, ``/relationDescriptors``,
  ``/telephoneNumberTypeDescriptors``, ``/electronicMailTypeDescriptors`` (and ``/{id}``):
  ``{"id", "xDescriptorId", "codeValue", "namespace", "shortDescription", "description"}``;
  a descriptor value is the URI ``namespace#codeValue``, e.g.
  ``uri://ed-fi.org/RelationDescriptor#Mother``; an unknown one is a 400;
- a reference to a student or contact that does not exist is a 409
  (``urn:ed-fi:api:data-conflict:unresolved-reference``);
- validation errors are RFC 9457 problem details: 400 ``data-validation-failed`` with
  ``validationErrors`` keyed by JSON path (``$.addresses[0].postalCode``);
- ``GET /changeQueries/v1/availableChangeVersions`` -> ``{"oldestChangeVersion": 0,
  "newestChangeVersion": n}``: every write (API or sandbox-side) bumps one global change
  version, stored on the row it wrote (or on the tombstone of what it deleted).

Documents: ``GET /metadata/data/v3/swagger.json`` (OpenAPI 3, every path above, with
``x-Ed-Fi-isIdentity`` on natural keys; ``?version=2`` gives Swagger 2.0),
``/metadata/data/v3/resources/swagger.json`` and ``/metadata/data/v3/descriptors/swagger.json``
(Ed-Fi's per-section documents), ``/metadata/data/v3/split/swagger.json`` (schemas in a second
document), ``/schemas/person.schema.json`` and ``/metadata/broken/*``.

A second, non-Ed-Fi API lives under ``/api/v1/people`` (JSON Schema only; POST answers
409 on a repeated ``externalId``; batch and bulk endpoints) and ``POST /oauth/token``
issues client-credentials tokens. Data endpoints (``/data``, ``/api``, ``/changeQueries``)
accept an OAuth2 token, the static bearer token, the API key in ``X-API-Key`` or HTTP
Basic, unless ``require_auth`` is off.

Only the sandbox has ``/sandbox/*`` (never logged, never faulted):
``GET|POST /sandbox/faults``, ``GET /sandbox/dump``, ``GET /sandbox/requests``,
``POST /sandbox/reset``, ``POST /sandbox/seed``, ``POST /sandbox/empty``,
``POST /sandbox/renumber``, ``PATCH|DELETE /sandbox/students/{id or studentUniqueId}``
and ``POST /sandbox/drift``. ``DEFAULT_FAULTS`` lists the named faults; ``set_faults``
also takes canned answers ("rules").

Start it with ``enroll-sync sandbox edfi`` (``cli.py``) or, in tests, ``serve_in_thread()``.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import random
import re
import secrets as _secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import jsonschema
import referencing.jsonschema
from flask import Flask, Response, g, request
from referencing import Registry, Resource
from werkzeug.serving import WSGIRequestHandler, make_server

DEFAULT_PORT = 5002  # `enroll-sync sandbox edfi` listens here unless told otherwise

__all__ = ["DEFAULT_PORT", "DEFAULT_CREDENTIALS", "DEFAULT_FAULTS", "DESCRIPTORS", "RESOURCES",
           "Credentials", "ServerHandle", "State", "edfi_settings", "make_app", "openapi_document",
           "person_json_schema", "seed_students", "serve_in_thread", "swagger2_document"]

DATA = "/data/v3/ed-fi"

# --------------------------------------------------------------------------- descriptors


def _uris(kind: str, codes: Iterable[str]) -> list[str]:
    return [f"uri://ed-fi.org/{kind}#{code}" for code in codes]


SEX = _uris("SexDescriptor", ("Female", "Male", "Not Selected"))
STATES = _uris("StateAbbreviationDescriptor", ("CA", "NY", "TX", "WA"))
ADDRESS_TYPES = _uris("AddressTypeDescriptor", ("Home", "Mailing", "Temporary"))
COUNTRIES = _uris("CountryDescriptor", ("US", "MX", "CA"))
RELATIONS = _uris("RelationDescriptor", (
    "Mother", "Father", "Guardian", "Court appointed guardian", "Stepmother", "Stepfather",
    "Foster parent", "Grandmother", "Grandfather", "Aunt", "Uncle", "Sister", "Brother",
    "Neighbor", "Other"))
TELEPHONE_TYPES = _uris("TelephoneNumberTypeDescriptor", (
    "Home", "Mobile", "Work", "Emergency 1", "Emergency 2", "Fax", "Other"))
EMAIL_TYPES = _uris("ElectronicMailTypeDescriptor", ("Home/Personal", "Work", "Organization", "Other"))

#: descriptor resource (``/data/v3/ed-fi/{name}``) -> the values it holds (URIs)
DESCRIPTORS: dict[str, list[str]] = {
    "sexDescriptors": SEX,
    "stateAbbreviationDescriptors": STATES,
    "addressTypeDescriptors": ADDRESS_TYPES,
    "countryDescriptors": COUNTRIES,
    "relationDescriptors": RELATIONS,
    "telephoneNumberTypeDescriptors": TELEPHONE_TYPES,
    "electronicMailTypeDescriptors": EMAIL_TYPES,
}
#: descriptor properties not named after their family (``xDescriptor`` -> ``xDescriptors``)
DESCRIPTOR_FIELDS = {"birthStateAbbreviationDescriptor": "stateAbbreviationDescriptors",
                     "birthCountryDescriptor": "countryDescriptors"}


def _descriptor_rows() -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    number = 0
    for family, uris in DESCRIPTORS.items():
        id_field = family[:-1] + "Id"  # relationDescriptors -> relationDescriptorId
        rows[family] = []
        for uri in uris:
            number += 1
            namespace, _, code = uri.partition("#")
            rows[family].append({"id": uuid.uuid5(uuid.NAMESPACE_URL, uri).hex, id_field: number,
                                 "codeValue": code, "namespace": namespace,
                                 "shortDescription": code, "description": code})
    return rows


DESCRIPTOR_ROWS = _descriptor_rows()


def descriptor_family(prop: str) -> str | None:
    """The descriptor resource a ``...Descriptor`` property takes its values from."""
    family = DESCRIPTOR_FIELDS.get(prop, prop + "s")
    return family if family in DESCRIPTORS else None


# --------------------------------------------------------------------------- the documents

def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _descriptor(family: str, text: str) -> dict:
    return {"type": "string", "maxLength": 306,
            "description": f"{text} A descriptor URI (namespace#codeValue); the values are at "
                           f"/ed-fi/{family}."}


def _link() -> dict:
    return {"readOnly": True, "$ref": "#/components/schemas/link"}


def _schemas() -> dict:
    """components/schemas of the Ed-Fi-style document (refs point at #/components/schemas)."""
    ref = _ref
    return {
        "edFi_student": {
            "type": "object",
            "description": "This entity represents an individual for whom instruction, services, "
                           "and/or care are provided in an early childhood, elementary, or "
                           "secondary educational program.",
            "required": ["studentUniqueId", "firstName", "lastSurname", "birthDate"],
            "properties": {
                "id": {"type": "string", "readOnly": True,
                       "description": "The resource identifier; assigned by the SIS."},
                "studentUniqueId": {"type": "string", "maxLength": 32, "x-Ed-Fi-isIdentity": True,
                                    "description": "A unique alphanumeric code assigned to a student."},
                "firstName": {"type": "string", "maxLength": 75,
                              "description": "A name given to an individual at birth."},
                "middleName": {"type": "string", "maxLength": 75, "nullable": True,
                               "description": "A secondary name given to an individual at birth."},
                "lastSurname": {"type": "string", "maxLength": 75,
                                "description": "The name borne in common by members of a family."},
                "birthDate": {"type": "string", "format": "date",
                              "description": "The month, day, and year on which an individual was born."},
                "sexDescriptor": {**ref("edFi_sexDescriptor")},
                "hispanicLatinoEthnicity": {"type": "boolean",
                                            "description": "Whether the student is of Hispanic or Latino origin."},
                "gradeLevel": {"type": "integer", "minimum": -1, "maximum": 12,
                               "description": "The grade level (0 = kindergarten, -1 = pre-K)."},
                "birthData": ref("edFi_studentBirthData"),
                "personReference": ref("edFi_personReference"),
                "addresses": {"type": "array", "items": ref("edFi_studentAddress"),
                              "description": "The set of elements that describes an address."},
                "_etag": {"type": "string", "readOnly": True},
                "_lastModifiedDate": {"type": "string", "format": "date-time", "readOnly": True},
            },
        },
        "edFi_sexDescriptor": {"type": "string", "maxLength": 306, "enum": SEX,
                               "description": "A person's birth sex."},
        "edFi_studentBirthData": {
            "type": "object",
            "properties": {
                "birthCity": {"type": "string", "maxLength": 30,
                              "description": "The city the student was born in."},
                "birthCountryDescriptor": {"type": "string", "maxLength": 306, "enum": COUNTRIES,
                                           "description": "The country in which an individual is born."},
                "birthStateAbbreviationDescriptor": {"type": "string", "maxLength": 306, "enum": STATES},
            },
        },
        "edFi_personReference": {
            "type": "object",
            "required": ["personId"],
            "properties": {
                "personId": {"type": "string", "maxLength": 32,
                             "description": "A unique alphanumeric code assigned to a person."},
                "sourceSystemDescriptor": {"type": "string", "maxLength": 306,
                                           "enum": ["uri://ed-fi.org/SourceSystemDescriptor#SIS",
                                                    "uri://ed-fi.org/SourceSystemDescriptor#Enroll"]},
                "link": {"readOnly": True, "$ref": "#/components/schemas/link"},
            },
        },
        "link": {"type": "object", "readOnly": True,
                 "properties": {"rel": {"type": "string"}, "href": {"type": "string"}}},
        "edFi_studentAddress": {
            "type": "object",
            "required": ["addressTypeDescriptor", "streetNumberName", "city",
                         "stateAbbreviationDescriptor", "postalCode"],
            "properties": {
                "addressTypeDescriptor": {"type": "string", "maxLength": 306, "enum": ADDRESS_TYPES,
                                          "description": "The type of address listed for an individual."},
                "streetNumberName": {"type": "string", "maxLength": 150,
                                     "description": "The street number and street name."},
                "apartmentRoomSuiteNumber": {"type": "string", "maxLength": 50},
                "city": {"type": "string", "maxLength": 30, "description": "The name of the city."},
                "stateAbbreviationDescriptor": {"type": "string", "maxLength": 306, "enum": STATES},
                "postalCode": {"type": "string", "maxLength": 17,
                               "description": "The five or nine digit zip code."},
                "periods": {"type": "array", "items": ref("edFi_studentAddressPeriod")},
            },
        },
        "edFi_studentAddressPeriod": {
            "type": "object",
            "required": ["beginDate"],
            "properties": {
                "beginDate": {"type": "string", "format": "date"},
                "endDate": {"type": "string", "format": "date"},
            },
        },
        # -- Data Standard v5 contacts (descriptors as plain strings, as Ed-Fi publishes them)
        "edFi_contact": {
            "type": "object",
            "description": "This entity represents a parent, guardian or other person the school "
                           "contacts about a student (Data Standard v5; 'Parent' before).",
            "required": ["contactUniqueId", "firstName", "lastSurname"],
            "properties": {
                "id": {"type": "string", "readOnly": True,
                       "description": "The resource identifier; assigned by the SIS."},
                "contactUniqueId": {"type": "string", "maxLength": 32, "x-Ed-Fi-isIdentity": True,
                                    "description": "A unique alphanumeric code assigned to a contact."},
                "personalTitlePrefix": {"type": "string", "maxLength": 30,
                                        "description": "A prefix used to denote the title, degree, "
                                                       "position, or seniority of the individual."},
                "firstName": {"type": "string", "maxLength": 75,
                              "description": "A name given to an individual at birth."},
                "middleName": {"type": "string", "maxLength": 75},
                "lastSurname": {"type": "string", "maxLength": 75,
                                "description": "The name borne in common by members of a family."},
                "generationCodeSuffix": {"type": "string", "maxLength": 10},
                "maidenName": {"type": "string", "maxLength": 75},
                "preferredFirstName": {"type": "string", "maxLength": 75},
                "preferredLastSurname": {"type": "string", "maxLength": 75},
                "sexDescriptor": _descriptor("sexDescriptors", "A person's birth sex."),
                "loginId": {"type": "string", "maxLength": 60},
                "addresses": {"type": "array", "items": ref("edFi_contactAddress")},
                "telephones": {"type": "array", "items": ref("edFi_contactTelephone")},
                "electronicMails": {"type": "array", "items": ref("edFi_contactElectronicMail")},
                "_etag": {"type": "string", "readOnly": True},
                "_lastModifiedDate": {"type": "string", "format": "date-time", "readOnly": True},
            },
        },
        "edFi_contactAddress": {
            "type": "object",
            "required": ["addressTypeDescriptor", "streetNumberName", "city",
                         "stateAbbreviationDescriptor", "postalCode"],
            "properties": {
                "addressTypeDescriptor": _descriptor("addressTypeDescriptors",
                                                     "The type of address listed for an individual."),
                "streetNumberName": {"type": "string", "maxLength": 150},
                "apartmentRoomSuiteNumber": {"type": "string", "maxLength": 50},
                "city": {"type": "string", "maxLength": 30},
                "stateAbbreviationDescriptor": _descriptor("stateAbbreviationDescriptors",
                                                           "The abbreviation for the state."),
                "postalCode": {"type": "string", "maxLength": 17},
                "nameOfCounty": {"type": "string", "maxLength": 30},
                "periods": {"type": "array", "items": ref("edFi_contactAddressPeriod")},
            },
        },
        "edFi_contactAddressPeriod": {
            "type": "object",
            "required": ["beginDate"],
            "properties": {
                "beginDate": {"type": "string", "format": "date"},
                "endDate": {"type": "string", "format": "date"},
            },
        },
        "edFi_contactTelephone": {
            "type": "object",
            "required": ["telephoneNumber", "telephoneNumberTypeDescriptor"],
            "properties": {
                "telephoneNumber": {"type": "string", "maxLength": 24,
                                    "description": "The telephone number including the area code, "
                                                   "and extension, if applicable."},
                "telephoneNumberTypeDescriptor": _descriptor("telephoneNumberTypeDescriptors",
                                                             "The type of communication number listed."),
                "orderOfPriority": {"type": "integer", "minimum": 1,
                                    "description": "The order of priority assigned to telephone "
                                                   "numbers to define which number to attempt first."},
                "textMessageCapabilityIndicator": {"type": "boolean"},
                "doNotPublishIndicator": {"type": "boolean"},
            },
        },
        "edFi_contactElectronicMail": {
            "type": "object",
            "required": ["electronicMailAddress", "electronicMailTypeDescriptor"],
            "properties": {
                "electronicMailAddress": {"type": "string", "maxLength": 128, "format": "email"},
                "electronicMailTypeDescriptor": _descriptor("electronicMailTypeDescriptors",
                                                            "The type of email listed."),
                "primaryEmailAddressIndicator": {"type": "boolean"},
                "doNotPublishIndicator": {"type": "boolean"},
            },
        },
        "edFi_studentContactAssociation": {
            "type": "object",
            "description": "This association relates students to their contacts: one per student "
                           "and contact, carrying every per-student flag.",
            "required": ["contactReference", "studentReference"],
            "properties": {
                "id": {"type": "string", "readOnly": True,
                       "description": "The resource identifier; assigned by the SIS."},
                "contactReference": {**ref("edFi_contactReference"), "x-Ed-Fi-isIdentity": True},
                "studentReference": {**ref("edFi_studentReference"), "x-Ed-Fi-isIdentity": True},
                "relationDescriptor": _descriptor("relationDescriptors",
                                                  "The nature of an individual's relationship to a student."),
                "primaryContactStatus": {"type": "boolean",
                                         "description": "Whether this is the student's primary contact."},
                "livesWith": {"type": "boolean",
                              "description": "Whether the student lives with this contact."},
                "emergencyContactStatus": {"type": "boolean",
                                           "description": "Whether this contact is an emergency contact."},
                "legalGuardian": {"type": "boolean",
                                  "description": "Whether this contact is the student's legal guardian."},
                "contactPriority": {"type": "integer", "minimum": 1,
                                    "description": "The order in which to contact this person."},
                "contactRestrictions": {"type": "string", "maxLength": 250,
                                        "description": "Restrictions on contacting the student "
                                                       "(e.g. may not pick up)."},
                "_etag": {"type": "string", "readOnly": True},
                "_lastModifiedDate": {"type": "string", "format": "date-time", "readOnly": True},
            },
        },
        "edFi_contactReference": {
            "type": "object",
            "required": ["contactUniqueId"],
            "properties": {
                "contactUniqueId": {"type": "string", "maxLength": 32,
                                    "description": "A unique alphanumeric code assigned to a contact."},
                "link": _link(),
            },
        },
        "edFi_studentReference": {
            "type": "object",
            "required": ["studentUniqueId"],
            "properties": {
                "studentUniqueId": {"type": "string", "maxLength": 32,
                                    "description": "A unique alphanumeric code assigned to a student."},
                "link": _link(),
            },
        },
        "edFi_descriptor": {
            "type": "object",
            "required": ["codeValue", "namespace", "shortDescription"],
            "properties": {
                "id": {"type": "string", "readOnly": True},
                "codeValue": {"type": "string", "maxLength": 50},
                "namespace": {"type": "string", "maxLength": 255},
                "shortDescription": {"type": "string", "maxLength": 75},
                "description": {"type": "string", "maxLength": 1024},
                "effectiveBeginDate": {"type": "string", "format": "date"},
                "effectiveEndDate": {"type": "string", "format": "date"},
            },
        },
        "trackedChanges_delete": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "changeVersion": {"type": "integer"},
                "keyValues": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "problemDetails": {
            "type": "object",
            "properties": {
                "detail": {"type": "string"}, "type": {"type": "string"},
                "title": {"type": "string"}, "status": {"type": "integer"},
                "correlationId": {"type": "string"},
                "validationErrors": {"type": "object",
                                     "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                "errors": {"type": "array", "items": {"type": "string"}},
            },
        },
    }


# --------------------------------------------------------------------------- resources

@dataclass(frozen=True)
class ResourceSpec:
    """A writable Ed-Fi resource of the sandbox."""

    name: str                 # path segment under /data/v3/ed-fi
    entity: str               # "Student": messages and links
    schema: str               # components/schemas name
    key: tuple[str, ...]      # natural key, dotted paths
    references: tuple[tuple[str, str, str], ...] = ()  # (property, target resource, target key)


STUDENTS = ResourceSpec("students", "Student", "edFi_student", ("studentUniqueId",))
CONTACTS = ResourceSpec("contacts", "Contact", "edFi_contact", ("contactUniqueId",))
ASSOCIATIONS = ResourceSpec(
    "studentContactAssociations", "StudentContactAssociation", "edFi_studentContactAssociation",
    ("contactReference.contactUniqueId", "studentReference.studentUniqueId"),
    (("contactReference", "contacts", "contactUniqueId"),
     ("studentReference", "students", "studentUniqueId")))
#: writable resources, in dependency order (what refers to others comes last)
RESOURCES: dict[str, ResourceSpec] = {r.name: r for r in (STUDENTS, CONTACTS, ASSOCIATIONS)}


def _get_path(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(doc, list) and part.isdigit():
            doc = doc[int(part)] if int(part) < len(doc) else None
        elif isinstance(doc, dict):
            doc = doc.get(part)
        else:
            return None
    return doc


def _set_path(doc: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.0.c`` in ``doc``; None removes it (Ed-Fi leaves nulls out)."""
    parts = dotted.split(".")
    cur: Any = doc
    for i, part in enumerate(parts[:-1]):
        nxt_is_index = parts[i + 1].isdigit()
        if isinstance(cur, list):
            idx = int(part)
            while len(cur) <= idx:
                cur.append({})
            cur = cur[idx]
            continue
        if part not in cur or not isinstance(cur[part], (dict, list)):
            if value is None:
                return
            cur[part] = [] if nxt_is_index else {}
        cur = cur[part]
    last = parts[-1]
    if isinstance(cur, list):
        idx = int(last)
        if value is None:
            if idx < len(cur):
                cur.pop(idx)
            return
        while len(cur) <= idx:
            cur.append(None)
        cur[idx] = value
    elif value is None:
        cur.pop(last, None)
    else:
        cur[last] = value


def key_of(spec: ResourceSpec, body: dict) -> tuple:
    return tuple(_get_path(body, k) for k in spec.key)


def key_values(spec: ResourceSpec, body: dict) -> dict:
    """{"studentUniqueId": ...} or {"contactUniqueId": ..., "studentUniqueId": ...}."""
    return {k.rsplit(".", 1)[-1]: _get_path(body, k) for k in spec.key}


def _list_params(schemas: dict, resource: str) -> list[dict]:
    """Ed-Fi's GET-list query parameters: paging, change versions and one per scalar."""
    params = [
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 500,
                                                     "default": 25}},
        {"name": "totalCount", "in": "query", "schema": {"type": "boolean", "default": False},
         "description": "Send the total number of matching items in the Total-Count header."},
        {"name": "minChangeVersion", "in": "query", "schema": {"type": "integer"}},
        {"name": "maxChangeVersion", "in": "query", "schema": {"type": "integer"}},
    ]
    for name in _filters(resource, schemas):
        params.append({"name": name, "in": "query", "schema": {"type": "string"}})
    return params


def _filters(resource: str, schemas: dict) -> dict[str, str]:
    """Query parameter -> dotted path of the property it filters on."""
    if resource in DESCRIPTORS:
        return {"codeValue": "codeValue", "namespace": "namespace", "shortDescription": "shortDescription"}
    spec = RESOURCES[resource]
    out: dict[str, str] = {}
    for name, prop in schemas[spec.schema]["properties"].items():
        if name == "id" or name.startswith("_") or prop.get("readOnly"):
            continue
        target = prop.get("$ref", "").rsplit("/", 1)[-1]
        if name.endswith("Reference") and target in schemas:
            for inner in schemas[target]["properties"]:
                if inner != "link":
                    out[inner] = f"{name}.{inner}"
        elif prop.get("type") in ("string", "integer", "number", "boolean") or target.endswith("Descriptor"):
            out[name] = name
    return out


def _paths(schema_prefix: str, *, sections: tuple[str, ...] = ("resources", "descriptors")) -> dict:
    schemas = _schemas()
    problem = {"$ref": f"{schema_prefix}problemDetails"}
    errors = {str(code): {"description": text, "content": {"application/problem+json": {"schema": problem}}}
              for code, text in ((400, "Bad Request"), (401, "Unauthorized"), (409, "Conflict"),
                                 (412, "Precondition Failed"), (500, "Internal Server Error"))}
    id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {}
    if "resources" in sections:
        for spec in RESOURCES.values():
            item = {"$ref": f"{schema_prefix}{spec.schema}"}
            tag = spec.name
            entity = spec.entity
            if spec is STUDENTS and schema_prefix.startswith("#"):
                body = {"$ref": "#/components/requestBodies/Student"}
            else:
                body = {"required": True, "content": {"application/json": {"schema": item}}}
            paths[f"/ed-fi/{spec.name}"] = {
                "get": {"operationId": f"get{entity}s", "tags": [tag],
                        "summary": "Retrieves resources (paged) with the given query parameters.",
                        "parameters": _list_params(schemas, spec.name),
                        "responses": {"200": {"description": "OK", "content": {"application/json": {
                            "schema": {"type": "array", "items": item}}}}}},
                "post": {"operationId": f"post{entity}", "tags": [tag],
                         "summary": "Creates or updates resources based on the natural key values "
                                    "of the supplied resource.",
                         "requestBody": body,
                         "responses": {"200": {"description": "Updated"}, "201": {"description": "Created"},
                                       **errors}},
            }
            paths[f"/ed-fi/{spec.name}/{{id}}"] = {
                "parameters": [id_param],
                "get": {"operationId": f"get{entity}sById", "tags": [tag], "responses": {
                    "200": {"description": "OK", "content": {"application/json": {"schema": item}}},
                    "404": errors["400"] | {"description": "Not Found"}}},
                "put": {"operationId": f"put{entity}", "tags": [tag],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": item}}},
                        "responses": {"204": {"description": "Updated"}, **errors}},
                "delete": {"operationId": f"delete{entity}ById", "tags": [tag],
                           "responses": {"204": {"description": "Deleted"}, **errors}},
            }
            tracked = {"type": "array", "items": {"$ref": f"{schema_prefix}trackedChanges_delete"}}
            paths[f"/ed-fi/{spec.name}/deletes"] = {
                "get": {"operationId": f"deletes{entity}s", "tags": [tag],
                        "summary": "Resources deleted between minChangeVersion and maxChangeVersion.",
                        "parameters": _list_params(schemas, spec.name)[:5],
                        "responses": {"200": {"description": "OK", "content": {"application/json": {
                            "schema": tracked}}}}}}
    if "descriptors" in sections:
        item = {"$ref": f"{schema_prefix}edFi_descriptor"}
        for family in DESCRIPTORS:
            paths[f"/ed-fi/{family}"] = {"get": {
                "operationId": f"get{family[0].upper()}{family[1:]}", "tags": [family],
                "parameters": _list_params(schemas, family)[:3]
                + [{"name": n, "in": "query", "schema": {"type": "string"}} for n in _filters(family, schemas)],
                "responses": {"200": {"description": "OK", "content": {"application/json": {
                    "schema": {"type": "array", "items": item}}}}}}}
            paths[f"/ed-fi/{family}/{{id}}"] = {"parameters": [id_param], "get": {
                "operationId": f"get{family[0].upper()}{family[1:]}ById", "tags": [family],
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": item}}}}}}
    return paths


def openapi_document(base_url: str = "", *, sections: tuple[str, ...] = ("resources", "descriptors")) -> dict:
    """The Ed-Fi-style OpenAPI 3.0 document (server URL ``{base}/data/v3``, paths ``/ed-fi/...``)."""
    return {
        "openapi": "3.0.1",
        "info": {"title": "Ed-Fi Operational Data Store API (test server)", "version": "3"},
        "servers": [{"url": f"{base_url}/data/v3"}],
        "paths": _paths("#/components/schemas/", sections=sections),
        "components": {
            "schemas": _schemas(),
            "requestBodies": {"Student": {"required": True, "description": "The JSON representation of the Student resource.",
                                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/edFi_student"}}}}},
            "securitySchemes": {"oauth2_client_credentials": {"type": "oauth2", "flows": {
                "clientCredentials": {"tokenUrl": f"{base_url}/oauth/token", "scopes": {}}}}},
        },
        "security": [{"oauth2_client_credentials": []}],
    }


def split_openapi_document(base_url: str = "") -> dict:
    """The same API with every schema in ``schemas.json`` beside it (external $refs)."""
    doc = openapi_document(base_url)
    doc["paths"] = _paths("schemas.json#/components/schemas/")
    del doc["components"]["schemas"]
    del doc["components"]["requestBodies"]
    return doc


def split_schemas_document() -> dict:
    return {"components": {"schemas": _schemas()}}


def swagger2_document(base_url: str = "") -> dict:
    """The same writes as Swagger 2.0 (``basePath: /data/v3``, ``definitions``, body parameters)."""
    text = json.dumps(_schemas()).replace("#/components/schemas/", "#/definitions/")
    definitions = json.loads(text)
    for d in definitions.values():  # Swagger 2 has no nullable
        for p in (d.get("properties") or {}).values():
            if p.pop("nullable", None):
                p["x-nullable"] = True
    host = re.sub(r"^https?://", "", base_url) or "localhost"
    paths: dict[str, Any] = {}
    for spec in RESOURCES.values():
        body = {"name": spec.entity, "in": "body", "required": True,
                "schema": {"$ref": f"#/definitions/{spec.schema}"}}
        paths[f"/ed-fi/{spec.name}"] = {"post": {"parameters": [body],
                                                 "responses": {"200": {"description": "Updated"},
                                                               "201": {"description": "Created"}}}}
        paths[f"/ed-fi/{spec.name}/{{id}}"] = {"put": {"parameters": [
            {"name": "id", "in": "path", "required": True, "type": "string"}, body],
            "responses": {"204": {"description": "Updated"}}}}
    return {
        "swagger": "2.0",
        "info": {"title": "Ed-Fi Operational Data Store API (test server)", "version": "3"},
        "host": host, "basePath": "/data/v3", "schemes": ["http"],
        "consumes": ["application/json"], "produces": ["application/json"],
        "paths": paths,
        "definitions": definitions,
    }


GRADES = ["PK", "K", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]


def person_json_schema(base_url: str = "") -> dict:
    """A JSON Schema (2020-12) for the second test API, /api/v1/people."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{base_url}/schemas/person.schema.json",
        "title": "Person",
        "type": "object",
        "required": ["externalId", "givenName", "familyName"],
        "properties": {
            "id": {"type": "integer", "readOnly": True},
            "externalId": {"type": "string", "maxLength": 20, "description": "Your system's id for the person."},
            "givenName": {"type": "string", "maxLength": 50},
            "familyName": {"type": "string", "maxLength": 50},
            "birthDate": {"type": "string", "format": "date"},
            "grade": {"type": "string", "enum": GRADES, "description": "Grade level."},
            "siblings": {"type": "integer", "minimum": 0},
            "contact": {"$ref": "#/$defs/contact"},
            "guardians": {"type": "array", "items": {"$ref": "#/$defs/guardian"}},
        },
        "$defs": {
            "contact": {"type": "object", "properties": {
                "email": {"type": "string", "format": "email", "maxLength": 120},
                "phone": {"type": "string", "pattern": "^[0-9 +()-]{7,20}$"}}},
            "guardian": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "relationship": {"oneOf": [{"const": "MOTHER", "title": "Mother"},
                                           {"const": "FATHER", "title": "Father"},
                                           {"const": "OTHER", "title": "Other"}]},
                "contact": {"$ref": "#/$defs/contact"}}},
        },
    }



# --------------------------------------------------------------------------- state

@dataclass
class Credentials:
    client_id: str = "enroll-sync-test"
    client_secret: str = "edfi-client-s3cret-7781"
    api_key: str = "edfi-api-key-55AA11"
    bearer_token: str = "edfi-static-bearer-9c9c"
    username: str = "enroll"
    password: str = "edfi-basic-pw-4242"


DEFAULT_CREDENTIALS = Credentials()

#: named faults (``POST /sandbox/faults``, ``set_faults(**faults)``, one CLI flag each)
DEFAULT_FAULTS: dict[str, Any] = {
    "latency_ms": 0,               # added to every request under fault_path
    "error_rate": 0.0,             # share of requests under fault_path answered 500 (random, seeded)
    "drip_bytes_per_s": 0,         # send answer bodies under fault_path this slowly (0: at once)
    "revoke_new_tokens_every": 0,  # every N-th request with an issued token revokes that token
    "page_error_at": 0,            # the N-th list page (GET of a collection) answers 500, once
    "writes_503": 0,               # the next N writes each answer 503 + Retry-After once
    "retry_after": 1,              # Retry-After of writes_503, seconds (or an HTTP date)
    "gone_students": 0,            # the next N requests for /students/{id} find it deleted: 404
    "fault_path": "/",             # latency, error_rate, drip and writes_503 hit only these paths
}
_INT_FAULTS = ("latency_ms", "drip_bytes_per_s", "revoke_new_tokens_every", "page_error_at",
               "writes_503", "gone_students")
FAULT_ACTIONS = ("revoke_tokens",)  # POST /sandbox/faults {"revoke_tokens": true}


def check_faults(changes: dict) -> dict:
    """Validated copies of named fault values; KeyError for an unknown name, ValueError for a bad value."""
    out = {}
    for name, value in changes.items():
        if name not in DEFAULT_FAULTS:
            raise KeyError(name)
        if name in _INT_FAULTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0")
        elif name == "error_rate":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError("error_rate must be a number from 0 to 1")
            value = float(value)
        elif name == "retry_after":
            if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
                raise ValueError("retry_after must be seconds or an HTTP date")
        elif name == "fault_path":
            if not isinstance(value, str) or not value.startswith("/"):
                raise ValueError("fault_path must be a path starting with /")
        out[name] = value
    return out


@dataclass
class Row:
    """One stored resource item: the body as the client sent it (no id, no links)."""

    id: str
    body: dict
    change_version: int
    etag: str
    modified: str


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class State:
    """Everything the sandbox holds. Lock ``lock`` around reads and writes."""

    def __init__(self, credentials: Credentials | None = None, *, token_lifetime: int = 1800,
                 require_auth: bool = True, seed: int | None = None, faults: dict | None = None):
        self.credentials = credentials or Credentials()
        self.token_lifetime = token_lifetime
        self._initial_require_auth = require_auth
        self._seed = seed
        self.base_faults = {**DEFAULT_FAULTS, **check_faults(faults or {})}
        self.lock = threading.RLock()
        self.generation = 0
        self._clear()

    def _clear(self) -> None:
        self.require_auth = self._initial_require_auth
        self.rows: dict[str, dict[str, Row]] = {name: {} for name in RESOURCES}  # creation order
        self.index: dict[str, dict[tuple, str]] = {name: {} for name in RESOURCES}  # natural key -> id
        self.deletes: dict[str, list[dict]] = {name: [] for name in RESOURCES}
        self.change_version = 0
        self.people: dict[int, dict] = {}
        self.next_person = 1
        self.tokens: dict[str, float] = {}      # issued token -> expiry (monotonic)
        self.faults: dict[str, Any] = copy.deepcopy(self.base_faults)
        self.rules: list[dict] = []              # canned answers (set_faults(*rules))
        self.log: list[dict] = []                # {"method", "path", "query", "status"}
        self.extra_properties: dict[str, dict] = {}
        self.token_uses = 0                      # requests with an issued token
        self.pages_seen = 0                      # list pages since page_error_at was set
        self.refused_writes: set[str] = set()    # fingerprints writes_503 already refused
        self.rng = random.Random(self._seed)
        self.seeded = 0                          # seed_students numbering continues from here

    def reset(self) -> None:
        with self.lock:
            self._clear()
            self.generation += 1

    # -- faults
    def fault(self, name: str) -> Any:
        return self.faults.get(name, DEFAULT_FAULTS[name])

    def set_faults(self, **changes: Any) -> dict:
        revoke = bool(changes.pop("revoke_tokens", False))
        checked = check_faults(changes)
        with self.lock:
            if revoke:
                self.tokens.clear()
            for name, value in checked.items():
                self.faults[name] = value
                if name == "page_error_at":
                    self.pages_seen = 0
                elif name == "revoke_new_tokens_every":
                    self.token_uses = 0
                elif name == "writes_503":
                    self.refused_writes.clear()
            return {**DEFAULT_FAULTS, **self.faults}

    def random(self) -> float:
        with self.lock:
            return self.rng.random()

    # -- rows
    def _bump(self) -> int:
        self.change_version += 1
        return self.change_version

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def find(self, spec: ResourceSpec, key: tuple) -> Row | None:
        rid = self.index[spec.name].get(key)
        return self.rows[spec.name].get(rid) if rid else None

    def store(self, spec: ResourceSpec, rid: str, body: dict, *, modified: str | None = None) -> Row:
        """Write one item (insert or replace), bumping the change version."""
        old = self.rows[spec.name].get(rid)
        if old is not None:
            self.index[spec.name].pop(key_of(spec, old.body), None)
        row = Row(rid, body, self._bump(), str(time.time_ns()), modified or _now_iso())
        self.rows[spec.name][rid] = row
        self.index[spec.name][key_of(spec, body)] = rid
        return row

    def drop(self, spec: ResourceSpec, rid: str) -> Row:
        """Delete one item, leaving a tombstone for ``/deletes``."""
        row = self.rows[spec.name].pop(rid)
        self.index[spec.name].pop(key_of(spec, row.body), None)
        self.deletes[spec.name].append({"id": rid, "changeVersion": self._bump(),
                                        "keyValues": key_values(spec, row.body)})
        return row

    def dependents(self, spec: ResourceSpec, row: Row) -> dict[str, list[Row]]:
        """Items of other resources whose references point at ``row``."""
        out: dict[str, list[Row]] = {}
        mine = key_of(spec, row.body)
        for other in RESOURCES.values():
            for prop, target, key in other.references:
                if target != spec.name:
                    continue
                hits = [r for r in self.rows[other.name].values()
                        if ((r.body.get(prop) or {}).get(key),) == mine]
                if hits:
                    out.setdefault(other.name, []).extend(hits)
        return out

    def unresolved(self, spec: ResourceSpec, body: dict) -> list[str]:
        """Entities that references in ``body`` name but that do not exist."""
        missing = []
        for prop, target, key in spec.references:
            value = (body.get(prop) or {}).get(key) if isinstance(body.get(prop), dict) else None
            if (value,) not in self.index[target]:
                missing.append(RESOURCES[target].entity)
        return sorted(missing)

    def render(self, spec: ResourceSpec, row: Row) -> dict:
        """The item as GET answers it: id, body, Ed-Fi links in references, _etag, _lastModifiedDate."""
        out = {"id": row.id, **copy.deepcopy(row.body)}
        for prop, target, key in spec.references:
            ref = out.get(prop)
            if isinstance(ref, dict):
                rid = self.index[target].get((ref.get(key),))
                if rid:
                    ref["link"] = {"rel": RESOURCES[target].entity, "href": f"/ed-fi/{target}/{rid}"}
        out["_etag"] = row.etag
        out["_lastModifiedDate"] = row.modified
        return out

    def dump(self) -> dict:
        with self.lock:
            out: dict[str, Any] = {name: [self.render(spec, r) for r in self.rows[name].values()]
                                   for name, spec in RESOURCES.items()}
            out["people"] = copy.deepcopy(list(self.people.values()))
            out["changeVersion"] = self.change_version
            return out

    # -- SIS-side lifecycle (what a district's staff or a restore does, not the API)
    def student_row(self, key: str) -> Row | None:
        """A student by resource id or studentUniqueId."""
        rows = self.rows["students"]
        return rows.get(key) or self.find(STUDENTS, (key,))

    def delete_student(self, key: str) -> dict[str, int]:
        """Delete a student in the SIS, with its contact associations (tombstones for each)."""
        with self.lock:
            row = self.student_row(key)
            if row is None:
                raise KeyError(key)
            counts = {"students": 0, "studentContactAssociations": 0}
            for name, rows in self.dependents(STUDENTS, row).items():
                for dep in rows:
                    self.drop(RESOURCES[name], dep.id)
                    counts[name] = counts.get(name, 0) + 1
            self.drop(STUDENTS, row.id)
            counts["students"] = 1
            return counts

    def empty(self) -> dict[str, int]:
        """Delete every student, contact and association (each leaves a tombstone)."""
        with self.lock:
            counts = {}
            for name in reversed(list(RESOURCES)):
                spec = RESOURCES[name]
                ids = list(self.rows[name])
                for rid in ids:
                    self.drop(spec, rid)
                counts[name] = len(ids)
            return counts

    def renumber(self, seed: int | None = None) -> dict[str, dict[str, str]]:
        """Restore from a backup into a fresh ODS: same items, in the same order, with new
        resource ids; each gets a new change version (it was inserted again) and the old ids
        leave no tombstone (the new ODS never had them). Returns {resource: {old id: new id}}."""
        rng = random.Random(seed) if seed is not None else None
        with self.lock:
            mapping: dict[str, dict[str, str]] = {}
            for name, spec in RESOURCES.items():
                old_rows = list(self.rows[name].values())
                self.rows[name] = {}
                self.index[name] = {}
                mapping[name] = {}
                for row in old_rows:
                    new = uuid.UUID(int=rng.getrandbits(128), version=4).hex if rng else self.new_id()
                    mapping[name][row.id] = new
                    self.store(spec, new, row.body, modified=row.modified)
            return mapping

    def edit_student(self, key: str, changes: dict | None = None, **fields: Any) -> dict:
        """Change a stored student's fields directly, as a clerk would in the SIS. Keys may
        be dotted (``birthData.birthCity``, ``addresses.0.city``); None clears a field. No
        validation. Bumps the change version; returns the student as GET shows it."""
        changes = {**(changes or {}), **fields}
        with self.lock:
            row = self.student_row(key)
            if row is None:
                raise KeyError(key)
            body = copy.deepcopy(row.body)
            for path, value in changes.items():
                _set_path(body, path, copy.deepcopy(value))
            if key_of(STUDENTS, body) != key_of(STUDENTS, row.body):
                raise ValueError("studentUniqueId cannot be changed")
            return self.render(STUDENTS, self.store(STUDENTS, row.id, body))

    def drift(self, change: int = 10, null: int = 5, seed: int = 0) -> list[dict]:
        """Change ``change`` fields and clear ``null`` optional fields, one per student, on
        ``change + null`` different students chosen by ``seed``. Returns what changed:
        ``[{"id", "studentUniqueId", "field", "old", "new"}]`` (``new`` None = cleared)."""
        rng = random.Random(seed)
        with self.lock:
            rows = list(self.rows["students"].values())
            nullable = [r for r in rows if any(_get_path(r.body, f) is not None for f in NULLABLE)]
            if change + null > len(rows) or null > len(nullable):
                raise ValueError(f"drift needs {change + null} students ({null} with an optional "
                                 f"field set); the SIS has {len(rows)}")
            to_null = rng.sample(nullable, null)
            chosen = {r.id for r in to_null}
            to_change = rng.sample([r for r in rows if r.id not in chosen], change)
            out = []
            for row in to_change:
                fields = [f for f in CHANGEABLE if _get_path(row.body, f) is not None]
                path = rng.choice(fields)
                old = _get_path(row.body, path)
                new = _changed_value(path, old, rng)
                self.edit_student(row.id, {path: new})
                out.append({"id": row.id, "studentUniqueId": row.body["studentUniqueId"],
                            "field": path, "old": old, "new": new})
            for row in to_null:
                path = rng.choice([f for f in NULLABLE if _get_path(row.body, f) is not None])
                old = _get_path(row.body, path)
                self.edit_student(row.id, {path: None})
                out.append({"id": row.id, "studentUniqueId": row.body["studentUniqueId"],
                            "field": path, "old": old, "new": None})
            return out


#: fields ``drift`` changes (each stays valid) and clears (each optional)
CHANGEABLE = ("firstName", "lastSurname", "middleName", "birthDate", "gradeLevel",
              "addresses.0.streetNumberName", "addresses.0.city")
NULLABLE = ("middleName", "sexDescriptor", "hispanicLatinoEthnicity", "gradeLevel",
            "birthData.birthCity")

FIRST_NAMES = ("Ana", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana", "Ivan", "Jada",
               "Kofi", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tala")
MIDDLE_NAMES = ("Rose", "Lee", "Marie", "James", "Ann", "Jo", "Luis", "Mae")
LAST_NAMES = ("Alvarez", "Brown", "Chen", "Duarte", "Evans", "Fischer", "Garcia", "Huang",
              "Ito", "Jones", "Kim", "Lopez", "Moreno", "Nguyen", "Okafor", "Patel")
ADULT_NAMES = ("Maria", "Laura", "Grace", "Sofia", "Aisha", "John", "David", "Carlos", "Wei", "Samuel")
CITIES = (("Oakland", "94607"), ("Fresno", "93721"), ("Sacramento", "95814"), ("San Jose", "95113"))
STREETS = ("Main St", "Oak Ave", "Pine St", "Elm St", "Cedar Rd", "Maple Dr", "Lake Blvd")


def _changed_value(path: str, old: Any, rng: random.Random) -> Any:
    pools = {"firstName": FIRST_NAMES, "lastSurname": LAST_NAMES, "middleName": MIDDLE_NAMES,
             "addresses.0.city": tuple(c for c, _ in CITIES)}
    if path in pools:
        return rng.choice([v for v in pools[path] if v != old])
    if path == "birthDate":
        return (dt.date.fromisoformat(old) - dt.timedelta(days=1 + rng.randrange(30))).isoformat()
    if path == "gradeLevel":
        return old + 1 if old < 12 else old - 1
    if path == "addresses.0.streetNumberName":
        return f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}"
    raise ValueError(path)


def seed_students(target: "State | ServerHandle", n: int, *, seed: int = 0, contacts: bool = False,
                  start: int | None = None) -> list[str]:
    """Store ``n`` valid example students at once, bypassing the API (thousands per second).

    ``studentUniqueId`` runs ``S000001``, ``S000002``, ... (continuing after earlier seeding
    unless ``start`` says where); names, dates, addresses and resource ids follow from
    ``seed`` and ``start``, so the same call gives the same data. Two consecutive students
    share a family (last name, home address). With ``contacts`` each family gets a mother
    (``C{first student number}-1``) and every second family a father (``-2``), linked to
    each child by a ``studentContactAssociation``. Returns the new students' resource ids.
    """
    state = target.state if isinstance(target, ServerHandle) else target
    with state.lock:
        first = start if start is not None else state.seeded + 1
        rng = random.Random(f"{seed}:{first}")
        new_id = lambda: uuid.UUID(int=rng.getrandbits(128), version=4).hex  # noqa: E731
        modified = _now_iso()
        ids: list[str] = []
        family: dict = {}
        home = "uri://ed-fi.org/AddressTypeDescriptor#Home"
        ca = "uri://ed-fi.org/StateAbbreviationDescriptor#CA"
        links: list[tuple[dict, str, int]] = []
        for i in range(n):
            number = first + i
            if i % 2 == 0:
                city, postal = rng.choice(CITIES)
                family = {"last": rng.choice(LAST_NAMES), "number": number,
                          "address": {"addressTypeDescriptor": home,
                                      "streetNumberName": f"{rng.randrange(1, 9999)} {rng.choice(STREETS)}",
                                      "city": city, "stateAbbreviationDescriptor": ca,
                                      "postalCode": postal},
                          "father": rng.random() < 0.5}
            year = 2008 + rng.randrange(13)
            body: dict[str, Any] = {
                "studentUniqueId": f"S{number:06d}",
                "firstName": rng.choice(FIRST_NAMES),
                "lastSurname": family["last"],
                "birthDate": dt.date(year, 1 + rng.randrange(12), 1 + rng.randrange(28)).isoformat(),
                "sexDescriptor": SEX[rng.randrange(2)],
                "hispanicLatinoEthnicity": rng.random() < 0.4,
                "gradeLevel": max(-1, min(12, 2025 - year - 6)),
                "birthData": {"birthCity": rng.choice(CITIES)[0]},
                "addresses": [dict(family["address"])],
            }
            if rng.random() < 0.8:
                body["middleName"] = rng.choice(MIDDLE_NAMES)
            if (body["studentUniqueId"],) in state.index["students"]:
                continue  # already there: seeding never overwrites
            rid = new_id()
            state.store(STUDENTS, rid, body, modified=modified)
            ids.append(rid)
            if contacts:
                links.append((family, body["studentUniqueId"], i % 2))
        state.seeded = max(state.seeded, first + n - 1)
        if contacts:
            made: set[str] = set()
            for fam, student_uid, _ in links:
                parents = [("1", "Mother", 1)] + ([("2", "Father", 2)] if fam["father"] else [])
                for suffix, relation, priority in parents:
                    cuid = f"C{fam['number']:06d}-{suffix}"
                    if cuid not in made and (cuid,) not in state.index["contacts"]:
                        made.add(cuid)
                        phone = f"(555) {rng.randrange(200, 999)}-{rng.randrange(1000, 9999)}"
                        first_name = rng.choice(ADULT_NAMES[:5] if relation == "Mother" else ADULT_NAMES[5:])
                        state.store(CONTACTS, new_id(), {
                            "contactUniqueId": cuid, "firstName": first_name, "lastSurname": fam["last"],
                            "addresses": [dict(fam["address"])],
                            "telephones": [{"telephoneNumber": phone, "orderOfPriority": 1,
                                            "telephoneNumberTypeDescriptor": TELEPHONE_TYPES[1],
                                            "textMessageCapabilityIndicator": True}],
                            "electronicMails": [{"electronicMailAddress":
                                                 f"{first_name.lower()}.{fam['last'].lower()}{fam['number']}@example.org",
                                                 "electronicMailTypeDescriptor": EMAIL_TYPES[0],
                                                 "primaryEmailAddressIndicator": True}],
                        }, modified=modified)
                    state.store(ASSOCIATIONS, new_id(), {
                        "contactReference": {"contactUniqueId": cuid},
                        "studentReference": {"studentUniqueId": student_uid},
                        "relationDescriptor": _uris("RelationDescriptor", [relation])[0],
                        "primaryContactStatus": priority == 1, "livesWith": True,
                        "emergencyContactStatus": True, "legalGuardian": True,
                        "contactPriority": priority}, modified=modified)
        return ids


def _problem(status: int, kind: str, title: str, detail: str, **extra) -> Response:
    body = {"detail": detail, "type": f"urn:ed-fi:api:{kind}", "title": title, "status": status,
            "correlationId": uuid.uuid4().hex[:12], **extra}
    return Response(json.dumps(body), status=status, content_type="application/problem+json")


def _json(body: Any, status: int = 200, **headers) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


def _json_path(path) -> str:
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _validator(doc: dict, ref: str, spec, cls):
    prepared = json.loads(json.dumps(doc))
    prepared.pop("$id", None)
    registry = Registry().with_resource("http://sandbox.invalid/doc.json", Resource(contents=prepared, specification=spec))
    return cls({"$ref": f"http://sandbox.invalid/doc.json{ref}"}, registry=registry,
               format_checker=jsonschema.FormatChecker())


def _not_found() -> Response:
    return _problem(404, "not-found", "Not Found", "The specified resource could not be found.")


def _bad_request(*errors: str) -> Response:
    return _problem(400, "bad-request", "Bad Request",
                    "The request could not be processed. See 'errors' for details.",
                    validationErrors={}, errors=list(errors))


LIST_PATH = re.compile(r"^(/data/v3/ed-fi/[A-Za-z]+(/deletes|/keyChanges)?|/api/v1/people)$")
ONE_STUDENT = re.compile(r"^/data/v3/ed-fi/students/([^/]+)$")
WRITES = ("POST", "PUT", "PATCH", "DELETE")
GATED = ("/data/", "/api/", "/changeQueries/")


def make_app(state: State) -> Flask:
    app = Flask("sis_generic.sandbox")
    app.config["SANDBOX_STATE"] = state
    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    validators = {name: _validator(doc, f"#/components/schemas/{spec.schema}",
                                   referencing.jsonschema.DRAFT4, jsonschema.Draft4Validator)
                  for name, spec in RESOURCES.items()}
    filters = {name: _filters(name, schemas) for name in (*RESOURCES, *DESCRIPTORS)}
    person_validator = _validator(person_json_schema(), "#", referencing.jsonschema.DRAFT202012,
                                  jsonschema.Draft202012Validator)

    def base() -> str:
        return request.host_url.rstrip("/")

    # ------------------------------------------------------------------ plumbing
    @app.after_request
    def record(response):
        if not request.path.startswith("/sandbox/") and g.get("generation") == state.generation:
            with state.lock:
                state.log.append({"method": request.method, "path": request.path,
                                  "query": request.query_string.decode("latin-1"),
                                  "status": response.status_code})
        return response

    @app.after_request
    def drip(response):
        rate = state.fault("drip_bytes_per_s")
        if not rate or request.path.startswith("/sandbox/") \
                or not request.path.startswith(state.fault("fault_path") or "/"):
            return response
        data = response.get_data()
        if not data:
            return response
        chunk = max(1, int(rate) // 10)

        def slowly():
            for i in range(0, len(data), chunk):
                time.sleep(chunk / rate)
                yield data[i: i + chunk]

        slow = Response(slowly(), status=response.status_code, headers=response.headers)
        slow.headers["Content-Length"] = str(len(data))
        return slow

    def authorized() -> bool:
        if not state.require_auth:
            return True
        creds = state.credentials
        header = request.headers.get("Authorization", "")
        if request.headers.get("X-API-Key") == creds.api_key:
            return True
        if header.startswith("Bearer "):
            token = header[7:].strip()
            if token == creds.bearer_token:
                return True
            with state.lock:
                expiry = state.tokens.get(token)
                if expiry is None or time.monotonic() >= expiry:
                    return False
                every = state.fault("revoke_new_tokens_every")
                if every:
                    state.token_uses += 1
                    if state.token_uses % every == 0:
                        del state.tokens[token]  # this request goes through; the next one is 401
            return True
        if header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except Exception:
                return False
            return user == creds.username and pw == creds.password
        return False

    def take_rule():
        with state.lock:
            for fault in state.rules:
                if fault.get("method") and fault["method"].upper() != request.method:
                    continue
                if fault.get("path") and not request.path.startswith(fault["path"]):
                    continue
                times = fault.get("times", 1)
                if times is not None:
                    if times <= 0:
                        continue
                    fault["times"] = times - 1
                return dict(fault)
        return None

    def fault_response(fault: dict) -> Response:
        status = int(fault.get("status", 500))
        headers = dict(fault.get("headers") or {})
        if fault.get("retry_after") is not None:
            headers["Retry-After"] = str(fault["retry_after"])
        if "body" in fault:
            body = fault["body"]
            ctype = fault.get("content_type") or ("application/json" if not isinstance(body, str) else "text/plain")
            text = body if isinstance(body, str) else json.dumps(body)
            return Response(text, status=status, content_type=ctype, headers=headers)
        if status == 409:
            resp = _problem(409, "conflict:unresolved-reference", "Resource Not Unique or Unresolved Reference",
                            "The referenced 'School' resource does not exist.")
        elif status == 412:
            resp = _problem(412, "optimistic-lock-failed", "Optimistic Lock Failed",
                            "The resource item has been modified by another user.",
                            errors=["The resource item's etag value does not match what was specified in "
                                    "the 'If-Match' request header."])
        elif status == 429:
            resp = _problem(429, "too-many-requests", "Too Many Requests", "Rate limit exceeded.")
        elif status >= 500:
            resp = _problem(status, "system-error", "Internal Server Error",
                            "An unexpected problem has occurred.")
        else:
            resp = _problem(status, "error", "Error", f"Injected HTTP {status}.")
        for k, v in headers.items():
            resp.headers[k] = v
        return resp

    def system_error(detail: str = "An unexpected problem has occurred.") -> Response:
        return _problem(500, "system-error", "Internal Server Error", detail)

    def refuse_write() -> Response | None:
        """writes_503: each of the next N writes is refused once; its retry goes through."""
        with state.lock:
            if not state.fault("writes_503"):
                return None
            fingerprint = hashlib.sha256(b"%s %s?%s\n%s" % (
                request.method.encode(), request.path.encode(), request.query_string,
                request.get_data())).hexdigest()
            if fingerprint in state.refused_writes:
                state.refused_writes.discard(fingerprint)
                return None
            state.refused_writes.add(fingerprint)
            state.faults["writes_503"] = state.fault("writes_503") - 1
            retry_after = str(state.fault("retry_after"))
        resp = _problem(503, "service-unavailable", "Service Unavailable",
                        "The service is temporarily unavailable. Try again later.")
        resp.headers["Retry-After"] = retry_after
        return resp

    @app.before_request
    def gate():
        g.generation = state.generation
        p = request.path
        if p.startswith("/sandbox/"):
            return None
        faulty = p.startswith(state.fault("fault_path") or "/")
        if faulty:
            latency = state.fault("latency_ms")
            if latency:
                time.sleep(latency / 1000.0)
            rate = state.fault("error_rate")
            if rate and state.random() < rate:
                request.get_data()
                return system_error()
        if not p.startswith(GATED):
            return None
        rule = take_rule()
        if rule is not None:
            return fault_response(rule)
        if faulty and request.method in WRITES:
            refused = refuse_write()
            if refused is not None:
                return refused
        if not authorized():
            return _problem(401, "security:authentication", "Authentication Failed",
                            "Authorization denied. The access token is invalid or missing.")
        if request.method == "GET" and LIST_PATH.match(p):
            with state.lock:
                at = state.fault("page_error_at")
                if at:
                    state.pages_seen += 1
                    if state.pages_seen == at:
                        state.faults["page_error_at"] = 0
                        state.pages_seen = 0
                        return system_error()
        m = ONE_STUDENT.match(p)
        if m and m.group(1) not in ("deletes", "keyChanges"):
            with state.lock:
                if state.fault("gone_students") and m.group(1) in state.rows["students"]:
                    state.faults["gone_students"] = state.fault("gone_students") - 1
                    state.delete_student(m.group(1))
        return None

    @app.errorhandler(404)
    def not_found(e):
        if request.path.startswith("/data/"):
            return _not_found()
        return e

    @app.errorhandler(405)
    def not_allowed(e):
        if request.path.startswith("/data/"):
            return _problem(405, "method-not-allowed", "Method Not Allowed",
                            f"{request.method} is not supported on {request.path}.")
        return e

    # ------------------------------------------------------------------ metadata
    def extra(resource: str) -> dict:
        with state.lock:
            return copy.deepcopy(state.extra_properties.get(resource, {}))

    @app.get("/metadata/data/v3/swagger.json")
    def metadata():
        if request.args.get("version") == "2":
            doc = swagger2_document(base())
            doc["definitions"]["edFi_student"]["properties"].update(extra("student"))
            return _json(doc)
        doc = openapi_document(base())
        doc["components"]["schemas"]["edFi_student"]["properties"].update(extra("student"))
        return _json(doc)

    @app.get("/metadata/data/v3/<section>/swagger.json")
    def section_metadata(section):
        if section == "split":
            return _json(split_openapi_document(base()))
        if section not in ("resources", "descriptors"):
            return Response("Not Found", status=404)
        doc = openapi_document(base(), sections=(section,))
        doc["components"]["schemas"]["edFi_student"]["properties"].update(extra("student"))
        return _json(doc)

    @app.get("/metadata/data/v3/split/schemas.json")
    def split_schemas():
        return _json(split_schemas_document())

    @app.get("/schemas/person.schema.json")
    def person_schema():
        doc = person_json_schema(base())
        doc["properties"].update(extra("person"))
        return _json(doc)

    @app.get("/metadata/broken/invalid.json")
    def broken_invalid():
        text = json.dumps(openapi_document(base()))
        return Response(text[: len(text) // 2], content_type="application/json")

    @app.get("/metadata/broken/page.html")
    def broken_html():
        return Response("<!doctype html><html><body><h1>API documentation</h1></body></html>",
                        content_type="text/html")

    @app.get("/metadata/broken/dangling-ref.json")
    def broken_ref():
        doc = openapi_document(base())
        doc["components"]["schemas"]["edFi_student"]["properties"]["birthData"] = {
            "$ref": "#/components/schemas/edFi_missingBirthData"}
        return _json(doc)

    @app.get("/metadata/broken/not-openapi.json")
    def broken_not_openapi():
        return _json({"hello": "world"})

    # ------------------------------------------------------------------ OAuth2
    @app.post("/oauth/token")
    def token():
        creds = state.credentials
        cid = csecret = None
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                cid, _, csecret = base64.b64decode(header[6:]).decode().partition(":")
            except Exception:
                pass
        cid = cid or request.form.get("client_id")
        csecret = csecret or request.form.get("client_secret")
        if request.form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        if cid != creds.client_id or csecret != creds.client_secret:
            return _json({"error": "invalid_client"}, 401)
        tok = _secrets.token_hex(16)
        with state.lock:
            state.tokens[tok] = time.monotonic() + state.token_lifetime
        return _json({"access_token": tok, "expires_in": state.token_lifetime, "token_type": "bearer"})

    # ------------------------------------------------------------------ Ed-Fi resources
    def problems_for(spec: ResourceSpec, body: Any, creating: bool) -> dict:
        problems: dict[str, list[str]] = {}
        for err in validators[spec.name].iter_errors(body):
            path = list(err.absolute_path)
            if err.validator == "required":
                m = re.match(r"^'([^']*)'", err.message)
                if m:
                    path.append(m.group(1))
            problems.setdefault(_json_path(path), []).append(err.message)
        if not isinstance(body, dict):
            return problems
        if "id" in body and creating:
            problems.setdefault("$.id", []).append(
                "Resource identifiers cannot be assigned by the client.")
        bd = body.get("birthDate")
        if spec is STUDENTS and isinstance(bd, str):
            try:
                if dt.date.fromisoformat(bd) > dt.date.today():
                    problems.setdefault("$.birthDate", []).append("Birth date cannot be in the future.")
            except ValueError:
                pass
        for i, addr in enumerate(body.get("addresses") or []):
            if isinstance(addr, dict) and isinstance(addr.get("postalCode"), str) \
                    and not re.fullmatch(r"\d{5}(-\d{4})?", addr["postalCode"]):
                problems.setdefault(f"$.addresses[{i}].postalCode", []).append(
                    "Postal code must be a 5-digit ZIP code (or ZIP+4).")
        if not problems:
            problems = descriptor_problems(body)
        return problems

    def descriptor_problems(doc: Any, path: tuple = ()) -> dict:
        """Every ``...Descriptor`` value must be one the descriptor resource holds."""
        out: dict[str, list[str]] = {}
        if isinstance(doc, dict):
            for k, v in doc.items():
                if k.endswith("Descriptor") and isinstance(v, str):
                    family = descriptor_family(k)
                    if family and v not in DESCRIPTORS[family]:
                        kind = family[0].upper() + family[1:-1]
                        out.setdefault(_json_path([*path, k]), []).append(
                            f"{kind} value '{v}' does not exist.")
                elif isinstance(v, (dict, list)):
                    out.update(descriptor_problems(v, (*path, k)))
        elif isinstance(doc, list):
            for i, v in enumerate(doc):
                out.update(descriptor_problems(v, (*path, i)))
        return out

    def validation_failed(problems: dict) -> Response:
        return _problem(400, "bad-request:data-validation-failed", "Data Validation Failed",
                        "Data validation failed. See 'validationErrors' for details.",
                        validationErrors=problems)

    def unresolved_reference(missing: list[str]) -> Response:
        return _problem(409, "data-conflict:unresolved-reference", "Unresolved Reference",
                        f"The referenced {', '.join(missing)} item(s) do not exist.",
                        validationErrors={}, errors=[])

    def read_json():
        try:
            return json.loads(request.get_data(as_text=True) or "null"), None
        except ValueError:
            return None, _problem(400, "bad-request", "Bad Request", "The request body is not valid JSON.")

    def clean(body: dict) -> dict:
        """What is stored: the body without server-assigned fields and reference links."""
        stored = {k: copy.deepcopy(v) for k, v in body.items()
                  if k not in ("id", "_etag", "_lastModifiedDate", "link")}
        for v in stored.values():
            if isinstance(v, dict):
                v.pop("link", None)
        return stored

    def precondition_failed(row: Row) -> Response | None:
        wanted = request.headers.get("If-Match")
        if wanted and wanted.strip().strip('"') != row.etag:
            return fault_response({"status": 412})
        return None

    def int_arg(name: str, default: int | None, *, upper: int | None = None) -> int | None:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        if not re.fullmatch(r"\d+", raw.strip()):
            raise ValueError(f"{name[0].upper()}{name[1:]} must be a numeric value greater than "
                             f"or equal to 0.")
        value = int(raw)
        if upper is not None and value > upper:
            raise ValueError(f"{name[0].upper()}{name[1:]} must be omitted or set to a numeric "
                             f"value between 0 and {upper}.")
        return value

    def paging() -> tuple[int, int, int | None, int | None]:
        return (int_arg("limit", 25, upper=500), int_arg("offset", 0),
                int_arg("minChangeVersion", None), int_arg("maxChangeVersion", None))

    def paged(items: list, total: int, limit: int, offset: int) -> Response:
        headers = {}
        if request.args.get("totalCount", "").lower() == "true":
            headers["Total-Count"] = str(total)
        return _json(items[offset: offset + limit], **headers)

    def matches(doc: dict, wanted: dict[str, str], paths: dict[str, str]) -> bool:
        for param, value in wanted.items():
            got = _get_path(doc, paths[param])
            if got is None:
                return False
            text = str(got).lower() if isinstance(got, bool) else str(got)
            if text.casefold() != value.casefold():
                return False
        return True

    @app.get("/changeQueries/v1/availableChangeVersions")
    def available_change_versions():
        with state.lock:
            return _json({"oldestChangeVersion": 0, "newestChangeVersion": state.change_version})

    @app.get(f"{DATA}/<resource>")
    def list_items(resource):
        spec = RESOURCES.get(resource)
        if spec is None and resource not in DESCRIPTORS:
            return _not_found()
        try:
            limit, offset, lo, hi = paging()
        except ValueError as exc:
            return _bad_request(str(exc))
        paths = filters[resource]
        wanted = {k: v for k, v in request.args.items() if k in paths}
        if spec is None:
            items = [d for d in DESCRIPTOR_ROWS[resource] if matches(d, wanted, paths)]
            return paged(copy.deepcopy(items), len(items), limit, offset)
        with state.lock:
            rows = [r for r in state.rows[resource].values()
                    if (lo is None or r.change_version >= lo) and (hi is None or r.change_version <= hi)
                    and matches(r.body, wanted, paths)]
            page = [state.render(spec, r) for r in rows[offset: offset + limit]]
        return paged(page, len(rows), len(page), 0)

    @app.get(f"{DATA}/<resource>/deletes")
    def list_deletes(resource):
        if resource not in RESOURCES:
            return _not_found()
        try:
            limit, offset, lo, hi = paging()
        except ValueError as exc:
            return _bad_request(str(exc))
        with state.lock:
            items = [copy.deepcopy(d) for d in state.deletes[resource]
                     if (lo is None or d["changeVersion"] >= lo) and (hi is None or d["changeVersion"] <= hi)]
        return paged(items, len(items), limit, offset)

    @app.get(f"{DATA}/<resource>/keyChanges")
    def list_key_changes(resource):
        if resource not in RESOURCES:
            return _not_found()
        try:
            paging()
        except ValueError as exc:
            return _bad_request(str(exc))
        return paged([], 0, 0, 0)

    @app.post(f"{DATA}/<resource>")
    def post_item(resource):
        spec = RESOURCES.get(resource)
        if spec is None:
            return not_allowed(None) if resource in DESCRIPTORS else _not_found()
        body, err = read_json()
        if err is not None:
            return err
        problems = problems_for(spec, body, creating=True)
        if problems:
            return validation_failed(problems)
        stored = clean(body)
        with state.lock:
            missing = state.unresolved(spec, stored)
            if missing:
                return unresolved_reference(missing)
            existing = state.find(spec, key_of(spec, stored))
            rid = existing.id if existing else state.new_id()
            row = state.store(spec, rid, stored)
        return Response(status=200 if existing else 201,
                        headers={"Location": f"{base()}{DATA}/{resource}/{rid}", "ETag": f'"{row.etag}"'})

    @app.get(f"{DATA}/<resource>/<rid>")
    def get_item(resource, rid):
        spec = RESOURCES.get(resource)
        if spec is None:
            found = next((d for d in DESCRIPTOR_ROWS.get(resource, ()) if d["id"] == rid), None)
            return _json(found) if found else _not_found()
        with state.lock:
            row = state.rows[resource].get(rid)
            if row is None:
                return _not_found()
            return _json(state.render(spec, row), ETag=f'"{row.etag}"')

    @app.put(f"{DATA}/<resource>/<rid>")
    def put_item(resource, rid):
        spec = RESOURCES.get(resource)
        if spec is None:
            return not_allowed(None) if resource in DESCRIPTORS else _not_found()
        body, err = read_json()
        if err is not None:
            return err
        with state.lock:
            if rid not in state.rows[resource]:
                return _not_found()
        problems = problems_for(spec, body, creating=False)
        if not problems and body.get("id") not in (None, rid):
            problems["$.id"] = ["The identifier in the request body does not match the identifier in the URL."]
        if problems:
            return validation_failed(problems)
        stored = clean(body)
        with state.lock:
            row = state.rows[resource].get(rid)
            if row is None:
                return _not_found()
            failed = precondition_failed(row)
            if failed is not None:
                return failed
            if key_of(spec, stored) != key_of(spec, row.body):
                return _problem(400, "bad-request:key-change-not-supported", "Key Change Not Supported",
                                f"Identifying values for the {spec.entity} resource cannot be changed. "
                                "Delete and recreate the resource item instead.")
            missing = state.unresolved(spec, stored)
            if missing:
                return unresolved_reference(missing)
            row = state.store(spec, rid, stored)
        return Response(status=204, headers={"ETag": f'"{row.etag}"'})

    @app.delete(f"{DATA}/<resource>/<rid>")
    def delete_item(resource, rid):
        spec = RESOURCES.get(resource)
        if spec is None:
            return not_allowed(None) if resource in DESCRIPTORS else _not_found()
        with state.lock:
            row = state.rows[resource].get(rid)
            if row is None:
                return _not_found()
            failed = precondition_failed(row)
            if failed is not None:
                return failed
            deps = state.dependents(spec, row)
            if deps:
                names = ", ".join(sorted(RESOURCES[n].entity for n in deps))
                return _problem(409, "data-conflict:dependent-item-exists", "Dependent Item Exists",
                                "The requested action cannot be performed because this item is "
                                f"referenced by existing {names} item(s).")
            state.drop(spec, rid)
        return Response(status=204)


    # ------------------------------------------------------------------ /api/v1/people
    def person_problems(body: Any) -> dict:
        problems: dict[str, list[str]] = {}
        for err in person_validator.iter_errors(body):
            path = [str(p) for p in err.absolute_path]
            if err.validator == "required":
                m = re.match(r"^'([^']*)'", err.message)
                if m:
                    path.append(m.group(1))
            problems.setdefault(".".join(path) or "(body)", []).append(err.message)
        return problems

    def person_conflicts(body: dict, own_id: int | None = None) -> tuple[int, dict] | None:
        for pid, p in state.people.items():
            if pid == own_id:
                continue
            if p.get("externalId") == body.get("externalId"):
                return 409, {"error": "conflict",
                             "message": f"A person with externalId {body.get('externalId')!r} already exists (id {pid})."}
            email = (body.get("contact") or {}).get("email")
            if email and (p.get("contact") or {}).get("email") == email:
                return 422, {"message": "Validation failed",
                             "errors": {"contact.email": ["has already been taken"]}}
        return None

    def create_person(body: dict) -> tuple[int, dict]:
        problems = person_problems(body)
        if problems:
            return 422, {"message": "Validation failed", "errors": problems}
        with state.lock:
            conflict = person_conflicts(body)
            if conflict:
                return conflict
            pid = state.next_person
            state.next_person += 1
            stored = {**body, "id": pid}
            state.people[pid] = stored
        return 201, {"data": stored}

    @app.post("/api/v1/people")
    def post_person():
        body, err = read_json()
        if err is not None:
            return _json({"message": "The request body is not valid JSON."}, 400)
        status, out = create_person(body)
        headers = {"Location": f"{base()}/api/v1/people/{out['data']['id']}"} if status == 201 else {}
        return _json(out, status, **headers)

    @app.get("/api/v1/people")
    def list_people():
        limit = request.args.get("limit", default=100, type=int)
        with state.lock:
            people = copy.deepcopy(list(state.people.values()))
        for param, get in (("externalId", lambda p: p.get("externalId")),
                           ("familyName", lambda p: p.get("familyName")),
                           ("email", lambda p: (p.get("contact") or {}).get("email"))):
            wanted = request.args.get(param)
            if wanted is not None:
                people = [p for p in people if get(p) == wanted]
        return _json({"data": people[:limit], "total": len(people)})

    @app.put("/api/v1/people/<int:pid>")
    def put_person(pid):
        body, err = read_json()
        if err is not None:
            return _json({"message": "The request body is not valid JSON."}, 400)
        with state.lock:
            if pid not in state.people:
                return _json({"error": "not_found", "message": f"No person with id {pid}."}, 404)
        problems = person_problems(body)
        if problems:
            return _json({"message": "Validation failed", "errors": problems}, 422)
        with state.lock:
            conflict = person_conflicts(body, own_id=pid)
            if conflict:
                return _json(conflict[1], conflict[0])
            stored = {**body, "id": pid}
            state.people[pid] = stored
        return _json({"data": stored}, 200)

    @app.post("/api/v1/people/batch")
    def batch_people():
        body, err = read_json()
        if err is not None or not isinstance(body, list):
            return _json({"message": "The request body must be a JSON array of people."}, 400)
        results = []
        for item in body:
            status, out = create_person(item)
            results.append({"status": status, **out})
        return _json(results, 200)

    @app.post("/api/v1/people/bulk")
    def bulk_people():
        """Stores what it can and says only how many: no per-record answer."""
        body, err = read_json()
        if err is not None or not isinstance(body, list):
            return _json({"message": "The request body must be a JSON array of people."}, 400)
        accepted = sum(1 for item in body if create_person(item)[0] == 201)
        return _json({"accepted": accepted}, 202)

    # ------------------------------------------------------------------ /sandbox (test only)
    def sandbox_error(status: int, message: str, **extra) -> Response:
        return _json({"message": message, **extra}, status)

    def faults_view() -> dict:
        with state.lock:
            return {**DEFAULT_FAULTS, **copy.deepcopy(state.faults), "rules": copy.deepcopy(state.rules)}

    @app.get("/sandbox/faults")
    def get_faults():
        return _json(faults_view())

    @app.post("/sandbox/faults")
    def post_faults():
        body = request.get_json(silent=True)
        if isinstance(body, list):  # canned answers only
            body = {"rules": body}
        if not isinstance(body, dict):
            return sandbox_error(400, "Send a JSON object of faults (or a JSON list of rules).")
        rules = body.pop("rules", None)
        if rules is not None and not (isinstance(rules, list) and all(isinstance(r, dict) for r in rules)):
            return sandbox_error(400, "rules must be a list of objects.")
        try:
            state.set_faults(**body)
        except KeyError as exc:
            return sandbox_error(400, f"Unknown fault: {exc.args[0]}",
                                 known=sorted([*DEFAULT_FAULTS, *FAULT_ACTIONS, "rules"]))
        except ValueError as exc:
            return sandbox_error(400, str(exc))
        if rules is not None:
            with state.lock:
                state.rules[:] = copy.deepcopy(rules)
        return _json(faults_view())

    @app.get("/sandbox/dump")
    def dump():
        return _json(state.dump())

    @app.get("/sandbox/requests")
    def requests_log():
        with state.lock:
            return _json({"requests": copy.deepcopy(state.log)})

    @app.post("/sandbox/reset")
    def reset():
        state.reset()
        return _json({"ok": True})

    @app.post("/sandbox/seed")
    def seed():
        body = request.get_json(silent=True) or {}
        n = body.get("students", 0)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            return sandbox_error(400, "students must be a whole number >= 0.")
        ids = seed_students(state, n, seed=int(body.get("seed") or 0),
                            contacts=bool(body.get("contacts")), start=body.get("start"))
        with state.lock:
            return _json({"created": len(ids), "newestChangeVersion": state.change_version})

    @app.post("/sandbox/empty")
    def empty():
        return _json({"deleted": state.empty()})

    @app.post("/sandbox/renumber")
    def renumber():
        body = request.get_json(silent=True) or {}
        return _json({"ids": state.renumber(body.get("seed"))})

    @app.patch("/sandbox/students/<key>")
    def edit_student(key):
        changes = request.get_json(silent=True)
        if not isinstance(changes, dict):
            return sandbox_error(400, "Send a JSON object of fields (dotted paths; null clears).")
        try:
            return _json(state.edit_student(key, changes))
        except KeyError:
            return sandbox_error(404, f"No student has id or studentUniqueId {key!r}.")
        except ValueError as exc:
            return sandbox_error(400, str(exc))

    @app.delete("/sandbox/students/<key>")
    def delete_student(key):
        try:
            return _json({"deleted": state.delete_student(key)})
        except KeyError:
            return sandbox_error(404, f"No student has id or studentUniqueId {key!r}.")

    @app.post("/sandbox/drift")
    def drift():
        body = request.get_json(silent=True) or {}
        try:
            return _json({"changes": state.drift(int(body.get("change", 10)), int(body.get("null", 5)),
                                                 int(body.get("seed", 0)))})
        except (TypeError, ValueError) as exc:
            return sandbox_error(400, str(exc))

    return app


# --------------------------------------------------------------------------- the handle

class ServerHandle:
    """A sandbox running in a background thread (see ``serve_in_thread``)."""

    def __init__(self, state: State, server, thread: threading.Thread):
        self.state = state
        self._server = server
        self._thread = thread
        self.url = f"http://{server.host}:{server.port}"

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def credentials(self) -> Credentials:
        return self.state.credentials

    def dump(self) -> dict:
        """What the SIS holds, as GET shows it: {"students", "contacts",
        "studentContactAssociations", "people": [...], "changeVersion": n}."""
        return self.state.dump()

    def set_faults(self, *rules: dict, **faults: Any) -> dict:
        """Change faults now; returns them all.

        Keywords are named faults (``DEFAULT_FAULTS``; ``revoke_tokens=True`` forgets every
        issued token); the others keep their values. Positional dicts are canned answers
        ("rules") and replace the earlier ones; ``set_faults()`` with no argument at all clears
        them. A rule answers matching data requests (``/data``, ``/api``, ``/changeQueries``)
        instead of the API: ``status``; optional ``times`` (default 1, None = every time),
        ``method``, ``path`` (prefix), ``retry_after``, ``headers``, ``body`` (str or JSON) and
        ``content_type``. Without a body, an Ed-Fi problem-details body fitting the status is sent.
        """
        current = self.state.set_faults(**faults)
        if rules or not faults:
            with self.state.lock:
                self.state.rules[:] = [dict(f) for f in rules]
        return current

    @property
    def faults(self) -> dict:
        with self.state.lock:
            return {**DEFAULT_FAULTS, **copy.deepcopy(self.state.faults)}

    def requests(self, method: str | None = None, path: str | None = None) -> list[tuple]:
        """(method, path, status) of every request served (not /sandbox/*), oldest first."""
        with self.state.lock:
            return [(r["method"], r["path"], r["status"]) for r in self.state.log
                    if (method is None or r["method"] == method.upper())
                    and (path is None or r["path"].startswith(path))]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.requests(method, path))

    def reset(self) -> None:
        """Forget all data, tokens, rules and the request log; faults back to their start values."""
        self.state.reset()

    def add_properties(self, resource: str, **properties: dict) -> None:
        """Change the served schema: add properties to the Ed-Fi ``student`` (OpenAPI and
        Swagger 2 documents) or the ``person`` JSON Schema. Cleared by ``reset()``."""
        if resource not in ("student", "person"):
            raise ValueError("resource is 'student' or 'person'")
        with self.state.lock:
            self.state.extra_properties.setdefault(resource, {}).update(copy.deepcopy(properties))

    def revoke_tokens(self) -> None:
        """Forget every issued OAuth2 token (the next data request answers 401)."""
        self.state.set_faults(revoke_tokens=True)

    def set_require_auth(self, value: bool) -> None:
        with self.state.lock:
            self.state.require_auth = bool(value)

    # -- SIS-side data (see State)
    def seed_students(self, n: int, *, seed: int = 0, contacts: bool = False,
                      start: int | None = None) -> list[str]:
        """Store ``n`` example students at once (see module ``seed_students``)."""
        return seed_students(self.state, n, seed=seed, contacts=contacts, start=start)

    def empty(self) -> dict[str, int]:
        """Delete every student, contact and association, as a wiped SIS; {resource: count}."""
        return self.state.empty()

    def renumber(self, seed: int | None = None) -> dict[str, dict[str, str]]:
        """Restore from a backup: same items, new resource ids; {resource: {old: new}}."""
        return self.state.renumber(seed)

    def edit_student(self, key: str, changes: dict | None = None, **fields: Any) -> dict:
        """Change a student's fields in the SIS (dotted paths; None clears)."""
        return self.state.edit_student(key, changes, **fields)

    def delete_student(self, key: str) -> dict[str, int]:
        """Delete a student (and its contact associations) in the SIS."""
        return self.state.delete_student(key)

    def drift(self, change: int = 10, null: int = 5, seed: int = 0) -> list[dict]:
        """Change ``change`` and clear ``null`` student fields in the SIS; what changed."""
        return self.state.drift(change, null, seed)

    def change_versions(self, resource: str = "students") -> dict[str, int]:
        """{resource id: changeVersion} of every item of ``resource``."""
        with self.state.lock:
            return {rid: r.change_version for rid, r in self.state.rows[resource].items()}

    def available_change_versions(self) -> dict:
        with self.state.lock:
            return {"oldestChangeVersion": 0, "newestChangeVersion": self.state.change_version}

    def settings(self, auth: str = "oauth2", **overrides) -> dict:
        """Adapter settings (secrets included) for this server's Ed-Fi students API."""
        return edfi_settings(self.url, self.credentials, auth=auth, **overrides)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def edfi_settings(url: str, credentials: Credentials = DEFAULT_CREDENTIALS, *, auth: str = "oauth2",
                  **overrides) -> dict:
    """Generic adapter settings for the sandbox at ``url`` (students, upserting POST)."""
    settings: dict[str, Any] = {
        "base_url": url,
        "auth_mode": auth,
        "schema_source": "openapi_url",
        "schema_url": f"{url}/metadata/data/v3/swagger.json",
        "create_operation": "POST /data/v3/ed-fi/students",
        "update_operation": "",
        "request_mode": "single",
        "id_location": "Location header",
        "timeout": 10,
        "min_interval": 0,
    }
    if auth == "oauth2":
        settings.update(oauth_url=f"{url}/oauth/token", client_id=credentials.client_id,
                        client_secret=credentials.client_secret)
    elif auth == "api_key":
        settings.update(header_name="X-API-Key", api_key=credentials.api_key)
    elif auth == "bearer":
        settings.update(bearer_token=credentials.bearer_token)
    elif auth == "basic":
        settings.update(username=credentials.username, password=credentials.password)
    settings.update(overrides)
    return settings


class QuietRequestHandler(WSGIRequestHandler):
    """No access-log line per request (tests and seeded imports send thousands)."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def serve_in_thread(port: int = 0, host: str = "127.0.0.1", *,
                    credentials: Credentials | None = None, token_lifetime: int = 1800,
                    require_auth: bool = True, seed: int | None = None, quiet: bool = True,
                    **faults: Any) -> ServerHandle:
    """Start the sandbox on ``host:port`` (0 = any free port) in a daemon thread.

    ``faults`` are start values of ``DEFAULT_FAULTS`` (``reset()`` returns to them);
    ``seed`` makes ``error_rate`` repeatable.
    """
    state = State(credentials or Credentials(), token_lifetime=token_lifetime,
                  require_auth=require_auth, seed=seed, faults=faults)
    app = make_app(state)
    server = make_server(host, port, app, threaded=True,
                         request_handler=QuietRequestHandler if quiet else None)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="sis-generic-sandbox", daemon=True)  # stop() in 50 ms
    thread.start()
    return ServerHandle(state, server, thread)
