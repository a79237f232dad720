"""A small Ed-Fi-style SIS to test the generic REST adapter against, over a real socket.

It serves:

- ``GET  /metadata/data/v3/swagger.json`` — an OpenAPI 3 document in Ed-Fi's style
  (``?version=2`` gives the same API as Swagger 2.0); the Student schema has nested
  objects, an ``addresses`` array, descriptor enums (``uri://ed-fi.org/SexDescriptor#Female``),
  the natural key ``studentUniqueId`` and ``$ref``s throughout;
- ``GET  /metadata/data/v3/split/swagger.json`` — the same operations whose schemas
  live in a second document (``split/schemas.json``), to exercise external ``$ref``s;
- ``GET  /schemas/person.schema.json`` — a JSON Schema (2020-12) for a second,
  non-Ed-Fi API under ``/api/v1/people`` (JSON-Schema-only configurations);
- ``GET  /metadata/broken/{invalid.json,page.html,dangling-ref.json,not-openapi.json}``;
- ``POST /oauth/token`` — client credentials (HTTP Basic or form fields), ``expires_in`` int;
- ``GET|POST /data/v3/ed-fi/students`` — POST upserts on ``studentUniqueId``: 201 + Location
  when new, 200 + Location when it updated; ``GET|PUT /data/v3/ed-fi/students/{id}``;
  errors are RFC 9457 problem details (400 ``data-validation-failed`` with
  ``validationErrors``);
- ``POST /api/v1/people`` (201, body ``{"data": {"id": ...}}``, 409 on a duplicate
  ``externalId``: this API does not upsert), ``PUT /api/v1/people/{id}``,
  ``GET /api/v1/people?externalId=…&familyName=…&email=…`` (``{"data": [matches], "total": n}``; unknown
  parameters are ignored, as many APIs do), ``POST /api/v1/people/batch`` (an array in, an
  array of per-item results out), ``POST /api/v1/people/bulk`` (an array in, stored, and
  only ``202 {"accepted": n}`` out); plain ``{"message", "errors"}`` error bodies;
- ``GET /sandbox/dump``, ``POST /sandbox/reset``, ``POST /sandbox/faults`` (JSON list), for tools
  that drive the server from another process.

Data endpoints (``/data/...``, ``/api/...``) accept any of: an OAuth2 token from
``/oauth/token``, the static bearer token, the API key in ``X-API-Key``, or HTTP Basic
with the user name and password — unless ``require_auth`` is off.

``serve_in_thread()`` returns a handle with ``.url``, ``.dump()``, ``.set_faults(...)``,
``.count(...)``, ``.reset()``, ``.stop()``, ``.add_properties(...)`` (change the served
schema documents) and ``.settings(...)`` (adapter settings for this server).
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import re
import secrets as _secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import referencing.jsonschema
from flask import Flask, Response, request
from referencing import Registry, Resource
from werkzeug.serving import make_server

DEFAULT_PORT = 5002  # `enroll-sync sandbox edfi` listens here unless told otherwise

__all__ = ["DEFAULT_PORT", "serve_in_thread", "ServerHandle", "make_app", "openapi_document", "swagger2_document",
           "person_json_schema", "Credentials", "DEFAULT_CREDENTIALS"]

# --------------------------------------------------------------------------- the documents

SEX = ["uri://ed-fi.org/SexDescriptor#Female", "uri://ed-fi.org/SexDescriptor#Male",
       "uri://ed-fi.org/SexDescriptor#Not Selected"]
STATES = ["uri://ed-fi.org/StateAbbreviationDescriptor#" + s for s in ("CA", "NY", "TX", "WA")]
ADDRESS_TYPES = ["uri://ed-fi.org/AddressTypeDescriptor#" + s for s in ("Home", "Mailing", "Temporary")]
COUNTRIES = ["uri://ed-fi.org/CountryDescriptor#" + s for s in ("US", "MX", "CA")]


def _schemas() -> dict:
    """components/schemas of the Ed-Fi-style document (refs point at #/components/schemas)."""
    ref = lambda name: {"$ref": f"#/components/schemas/{name}"}  # noqa: E731
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


def _paths(schema_prefix: str) -> dict:
    student = {"$ref": f"{schema_prefix}edFi_student"}
    problem = {"$ref": f"{schema_prefix}problemDetails"}
    errors = {str(code): {"description": text, "content": {"application/problem+json": {"schema": problem}}}
              for code, text in ((400, "Bad Request"), (401, "Unauthorized"), (409, "Conflict"),
                                 (412, "Precondition Failed"), (500, "Internal Server Error"))}
    return {
        "/ed-fi/students": {
            "get": {"operationId": "getStudents", "tags": ["students"],
                    "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}},
                                   {"name": "offset", "in": "query", "schema": {"type": "integer"}}],
                    "responses": {"200": {"description": "OK", "content": {"application/json": {
                        "schema": {"type": "array", "items": student}}}}}},
            "post": {"operationId": "postStudent", "tags": ["students"],
                     "summary": "Creates or updates resources based on the natural key values of the supplied resource.",
                     "requestBody": {"$ref": "#/components/requestBodies/Student"}
                     if schema_prefix.startswith("#") else
                     {"required": True, "content": {"application/json": {"schema": student}}},
                     "responses": {"200": {"description": "Updated"}, "201": {"description": "Created"},
                                   **errors}},
        },
        "/ed-fi/students/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": "getStudentsById", "responses": {"200": {"description": "OK", "content": {
                "application/json": {"schema": student}}}}},
            "put": {"operationId": "putStudent",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": student}}},
                    "responses": {"204": {"description": "Updated"}, **errors}},
        },
    }


def openapi_document(base_url: str = "") -> dict:
    """The Ed-Fi-style OpenAPI 3.0 document (server URL ``{base}/data/v3``, paths ``/ed-fi/...``)."""
    return {
        "openapi": "3.0.1",
        "info": {"title": "Ed-Fi Operational Data Store API (test server)", "version": "3"},
        "servers": [{"url": f"{base_url}/data/v3"}],
        "paths": _paths("#/components/schemas/"),
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
    """The same API as Swagger 2.0 (``basePath: /data/v3``, ``definitions``, body parameters)."""
    text = json.dumps(_schemas()).replace("#/components/schemas/", "#/definitions/")
    definitions = json.loads(text)
    for d in definitions.values():  # Swagger 2 has no nullable
        for p in (d.get("properties") or {}).values():
            if p.pop("nullable", None):
                p["x-nullable"] = True
    body = {"name": "Student", "in": "body", "required": True,
            "schema": {"$ref": "#/definitions/edFi_student"}}
    host = re.sub(r"^https?://", "", base_url) or "localhost"
    return {
        "swagger": "2.0",
        "info": {"title": "Ed-Fi Operational Data Store API (test server)", "version": "3"},
        "host": host, "basePath": "/data/v3", "schemes": ["http"],
        "consumes": ["application/json"], "produces": ["application/json"],
        "paths": {
            "/ed-fi/students": {"post": {"parameters": [body],
                                         "responses": {"200": {"description": "Updated"},
                                                       "201": {"description": "Created"}}}},
            "/ed-fi/students/{id}": {"put": {"parameters": [
                {"name": "id", "in": "path", "required": True, "type": "string"}, body],
                "responses": {"204": {"description": "Updated"}}}},
        },
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


@dataclass
class State:
    credentials: Credentials
    token_lifetime: int = 1800
    require_auth: bool = True
    students: dict = field(default_factory=dict)        # id -> stored body
    people: dict = field(default_factory=dict)          # int id -> stored body
    tokens: dict = field(default_factory=dict)          # token -> expiry (monotonic)
    faults: list = field(default_factory=list)
    log: list = field(default_factory=list)             # (method, path, status)
    extra_properties: dict = field(default_factory=dict)  # "student"/"person" -> {name: schema}
    next_person: int = 1
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self):
        self._initial_require_auth = self.require_auth

    def reset(self) -> None:
        with self.lock:
            self.students.clear()
            self.people.clear()
            self.tokens.clear()
            self.faults.clear()
            self.log.clear()
            self.extra_properties.clear()
            self.next_person = 1
            self.require_auth = self._initial_require_auth


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


def make_app(state: State) -> Flask:
    app = Flask("sis_generic.sandbox")
    student_validator = _validator(openapi_document(), "#/components/schemas/edFi_student",
                                   referencing.jsonschema.DRAFT4, jsonschema.Draft4Validator)
    person_validator = _validator(person_json_schema(), "#", referencing.jsonschema.DRAFT202012,
                                  jsonschema.Draft202012Validator)

    def base() -> str:
        return request.host_url.rstrip("/")

    # ------------------------------------------------------------------ plumbing
    @app.after_request
    def record(response):
        if not request.path.startswith("/sandbox/"):
            with state.lock:
                state.log.append((request.method, request.path, response.status_code))
        return response

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
            return expiry is not None and time.monotonic() < expiry
        if header.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
            except Exception:
                return False
            return user == creds.username and pw == creds.password
        return False

    def take_fault():
        with state.lock:
            for fault in state.faults:
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

    @app.before_request
    def gate():
        p = request.path
        if p.startswith("/data/") or p.startswith("/api/"):
            fault = take_fault()
            if fault is not None:
                return fault_response(fault)
            if not authorized():
                return _problem(401, "security:authentication", "Authentication Failed",
                                "Authorization denied. The access token is invalid or missing.")
        return None

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

    @app.get("/metadata/data/v3/split/swagger.json")
    def split_metadata():
        return _json(split_openapi_document(base()))

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

    # ------------------------------------------------------------------ Ed-Fi students
    def student_problems(body: Any) -> dict:
        problems: dict[str, list[str]] = {}
        for err in student_validator.iter_errors(body):
            path = list(err.absolute_path)
            if err.validator == "required":
                m = re.match(r"^'([^']*)'", err.message)
                if m:
                    path.append(m.group(1))
            problems.setdefault(_json_path(path), []).append(err.message)
        if isinstance(body, dict):
            if "id" in body and request.method == "POST":
                problems.setdefault("$.id", []).append(
                    "Resource identifiers cannot be assigned by the client.")
            bd = body.get("birthDate")
            if isinstance(bd, str):
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
        return problems

    def validation_failed(problems: dict) -> Response:
        return _problem(400, "bad-request:data-validation-failed", "Data Validation Failed",
                        "Data validation failed. See 'validationErrors' for details.",
                        validationErrors=problems)

    def read_json():
        try:
            return json.loads(request.get_data(as_text=True) or "null"), None
        except ValueError:
            return None, _problem(400, "bad-request", "Bad Request", "The request body is not valid JSON.")

    def store_student(sid: str, body: dict) -> dict:
        stored = dict(body)
        stored["id"] = sid
        stored["_etag"] = str(time.time_ns())
        stored["_lastModifiedDate"] = dt.datetime.now(dt.timezone.utc).isoformat()
        state.students[sid] = stored
        return stored

    @app.get("/data/v3/ed-fi/students")
    def list_students():
        limit = request.args.get("limit", default=25, type=int)
        offset = request.args.get("offset", default=0, type=int)
        with state.lock:
            items = list(state.students.values())
        return _json(items[offset: offset + limit], **{"Total-Count": str(len(items))})

    @app.post("/data/v3/ed-fi/students")
    def post_student():
        body, err = read_json()
        if err is not None:
            return err
        problems = student_problems(body)
        if problems:
            return validation_failed(problems)
        with state.lock:
            existing = next((s for s in state.students.values()
                             if s.get("studentUniqueId") == body["studentUniqueId"]), None)
            sid = existing["id"] if existing else uuid.uuid4().hex
            stored = store_student(sid, body)
        location = f"{base()}/data/v3/ed-fi/students/{sid}"
        return Response(status=200 if existing else 201,
                        headers={"Location": location, "ETag": f'"{stored["_etag"]}"'})

    @app.get("/data/v3/ed-fi/students/<sid>")
    def get_student(sid):
        with state.lock:
            stored = state.students.get(sid)
        if stored is None:
            return _problem(404, "not-found", "Not Found", "The specified resource could not be found.")
        return _json(stored)

    @app.put("/data/v3/ed-fi/students/<sid>")
    def put_student(sid):
        body, err = read_json()
        if err is not None:
            return err
        with state.lock:
            if sid not in state.students:
                return _problem(404, "not-found", "Not Found", "The specified resource could not be found.")
        problems = student_problems(body)
        if problems:
            return validation_failed(problems)
        with state.lock:
            stored = store_student(sid, body)
        return Response(status=204, headers={"ETag": f'"{stored["_etag"]}"'})

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

    # ------------------------------------------------------------------ test control
    @app.get("/sandbox/dump")
    def dump():
        with state.lock:
            return _json({"students": list(state.students.values()),
                          "people": list(state.people.values()),
                          "requests": [list(x) for x in state.log]})

    @app.post("/sandbox/reset")
    def reset():
        state.reset()
        return _json({"ok": True})

    @app.post("/sandbox/faults")
    def faults():
        body = request.get_json(silent=True)
        if not isinstance(body, list):
            return _json({"message": "Send a JSON list of faults."}, 400)
        with state.lock:
            state.faults[:] = [dict(f) for f in body if isinstance(f, dict)]
        return _json({"ok": True})

    return app


# --------------------------------------------------------------------------- the handle

class ServerHandle:
    """A running test server: ``url``, ``dump()``, ``set_faults()``, ``count()``, ``stop()``."""

    def __init__(self, state: State, server, thread: threading.Thread):
        self.state = state
        self._server = server
        self._thread = thread
        self.url = f"http://{server.host}:{server.port}"

    @property
    def credentials(self) -> Credentials:
        return self.state.credentials

    def dump(self) -> dict:
        """A deep copy of what the server holds: {"students": [...], "people": [...]}."""
        with self.state.lock:
            return copy.deepcopy({"students": list(self.state.students.values()),
                                  "people": list(self.state.people.values())})

    def set_faults(self, *faults: dict) -> None:
        """Replace the fault list. Each fault answers matching data requests (``/data``,
        ``/api``) instead of the API: ``status``; optional ``times`` (default 1, None =
        every time), ``method``, ``path`` (prefix), ``retry_after``, ``headers``, ``body``
        (str or JSON) and ``content_type``. Without a body, an Ed-Fi problem-details body
        fitting the status is sent."""
        with self.state.lock:
            self.state.faults[:] = [dict(f) for f in faults]

    def requests(self, method: str | None = None, path: str | None = None) -> list[tuple]:
        """(method, path, status) of every request served, oldest first."""
        with self.state.lock:
            return [r for r in self.state.log
                    if (method is None or r[0] == method.upper()) and (path is None or r[1].startswith(path))]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.requests(method, path))

    def reset(self) -> None:
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
        with self.state.lock:
            self.state.tokens.clear()

    def set_require_auth(self, value: bool) -> None:
        with self.state.lock:
            self.state.require_auth = bool(value)

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


def serve_in_thread(port: int = 0, host: str = "127.0.0.1", *,
                    credentials: Credentials | None = None, token_lifetime: int = 1800,
                    require_auth: bool = True) -> ServerHandle:
    """Start the test server on ``host:port`` (0 = any free port) in a daemon thread."""
    state = State(credentials=credentials or Credentials(), token_lifetime=token_lifetime,
                  require_auth=require_auth)
    app = make_app(state)
    server = make_server(host, port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="sis-generic-sandbox", daemon=True)
    thread.start()
    return ServerHandle(state, server, thread)
