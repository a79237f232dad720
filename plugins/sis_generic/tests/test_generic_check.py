"""Check Connection and schema problems: each gives a message the admin can act on,
on the connection card (CheckResult), from target_fields (AdapterError) and in every
record's outcome."""
from __future__ import annotations

import pytest

from enroll_sync import AdapterError, Outcome
from generic_helpers import student


def test_check_connection_reports_what_was_found(edfi, server):
    result = edfi.check_connection()
    assert result.ok, result.message
    n = len([f for s in edfi.target_fields() for f in s.fields])
    assert result.message.startswith(f"Connected. Student (POST /data/v3/ed-fi/students): {n} fields, "
                                     f"4 required: studentUniqueId, firstName, lastSurname, birthDate.")
    assert "The create operation upserts." in result.message
    assert result.details["resource"] == "Student"
    assert result.details["fields"] == str(n)
    assert result.details["schema"].startswith("OpenAPI 3.0.1 (")
    # it authenticated and reached the students resource, not only the public metadata
    assert server.count("POST", "/oauth/token") == 1
    assert server.requests("GET", "/data/v3/ed-fi/students") == [("GET", "/data/v3/ed-fi/students", 200)]


def test_check_connection_json_schema_source(people_settings):
    from sis_generic import GenericRestAdapter
    with GenericRestAdapter(people_settings()) as adapter:
        result = adapter.check_connection()
    assert result.ok, result.message
    assert "Person (POST /api/v1/people)" in result.message
    assert "3 required: externalId, givenName, familyName" in result.message
    assert "Updates use PUT /api/v1/people/{id}." in result.message
    assert result.details["schema"].startswith("JSON Schema (")


BROKEN = [
    ({"schema_url": "/metadata/broken/invalid.json"}, "is not valid JSON"),
    ({"schema_url": "/metadata/broken/page.html"}, "is HTML, not a JSON document"),
    ({"schema_url": "/metadata/broken/not-openapi.json"}, "is not an OpenAPI document"),
    ({"schema_url": "/metadata/nothing-here.json"}, "answered HTTP 404 (not found)"),
    ({"schema_url": "/metadata/broken/dangling-ref.json"},
     "refers to '#/components/schemas/edFi_missingBirthData', which does not exist"),
    ({"create_operation": "POST /data/v3/ed-fi/studnets"},
     "The OpenAPI document has no POST /data/v3/ed-fi/studnets (the create operation). "
     "Operations with a request body in the document include: POST /ed-fi/students"),
    ({"create_operation": "PATCH /data/v3/ed-fi/students"},
     "has the path /data/v3/ed-fi/students but no PATCH operation on it (it has GET, POST)"),
    ({"update_operation": "PUT /data/v3/ed-fi/pupils/{id}"},
     "has no PUT /data/v3/ed-fi/pupils/{id} (the update operation)"),
    ({"create_operation": "/data/v3/ed-fi/students"}, "must look like \"POST /data/v3/ed-fi/students\""),
    ({"schema_source": "json_schema_url"}, "is an OpenAPI document, not a JSON Schema"),
    ({"id_location": "data.id"}, "must be \"Location header\" or a JSON Pointer"),
]


@pytest.mark.parametrize("overrides, expected", BROKEN, ids=[e[:30] for _, e in BROKEN])
def test_schema_problems_are_explained_everywhere(make_adapter, server, overrides, expected):
    adapter = make_adapter(**overrides)
    result = adapter.check_connection()
    assert not result.ok
    assert expected in result.message
    with pytest.raises(AdapterError) as raised:
        adapter.target_fields()
    assert expected in str(raised.value)
    [outcome] = adapter.export([student()])
    assert outcome.outcome == Outcome.FAILED and expected in outcome.message
    assert server.count("POST", "/data/v3/ed-fi/students") == 0
    assert server.dump()["students"] == []


def test_unreachable_schema_and_sis(make_adapter, closed_port):
    adapter = make_adapter(base_url=f"http://127.0.0.1:{closed_port}", auth="none",
                           schema_url=f"http://127.0.0.1:{closed_port}/metadata/data/v3/swagger.json",
                           max_attempts=2)
    result = adapter.check_connection()
    assert not result.ok
    assert result.message.startswith(f"Could not fetch the schema from http://127.0.0.1:{closed_port}/"
                                      f"metadata/data/v3/swagger.json: Could not reach 127.0.0.1:"
                                      f"{closed_port}: the connection was refused")
    [outcome] = adapter.export([student()])
    assert outcome.outcome == Outcome.FAILED and "the connection was refused" in outcome.message


def test_sis_unreachable_after_schema_read(make_adapter, server, closed_port):
    # the schema is public on the test server; the SIS itself is somewhere that does not answer
    adapter = make_adapter(base_url=f"http://127.0.0.1:{closed_port}", auth="none",
                           schema_url=f"{server.url}/metadata/data/v3/swagger.json", max_attempts=1)
    result = adapter.check_connection()
    assert not result.ok
    assert "The schema was read, but the SIS could not be reached" in result.message
    records = [student(), student()]
    first, second = adapter.export(records)
    assert "the connection was refused" in first.message
    assert second.message.startswith("Not sent: held back because the SIS failed for an earlier record")


@pytest.mark.parametrize("overrides, expected", [
    ({"base_url": "sis.example.org"}, "The base URL must start with https://"),
    ({"auth_mode": "oauth2", "client_secret": ""}, "OAuth2 needs a client ID and a client secret"),
    ({"schema_source": "openapi_text", "schema_text": ""}, "The pasted schema document is empty"),
    ({"timeout": "soon"}, "Timeout (seconds) must be a number"),
    ({"timeout": "nan"}, "Timeout (seconds) must be a finite number between 1 and 600, not 'nan'"),
    ({"timeout": float("nan")}, "Timeout (seconds) must be a finite number between 1 and 600"),
    ({"retry_backoff": float("inf")}, "First retry wait (seconds) must be a finite number"),
    ({"max_attempts": "-inf"}, "Attempts per request must be a finite number between 1 and 10"),
])
def test_settings_problems(make_adapter, overrides, expected):
    adapter = make_adapter(**overrides)
    result = adapter.check_connection()
    assert not result.ok and expected in result.message
    [outcome] = adapter.export([student()])
    assert outcome.outcome == Outcome.FAILED and expected in outcome.message


def test_failing_or_non_json_sis_is_not_reported_connected(edfi, server):
    server.set_faults({"status": 500, "times": None})
    result = edfi.check_connection()
    assert not result.ok
    assert result.message.startswith("The schema was read, but the SIS is failing: Gave up on GET "
                                     "/data/v3/ed-fi/students after 1 attempt: the last answer was "
                                     "HTTP 500 (An unexpected problem has occurred.).")
    server.set_faults({"status": 200, "body": "<html><title>Portal login</title></html>",
                       "content_type": "text/html"})
    result = edfi.check_connection()
    assert not result.ok
    assert "answered with a body that is not JSON (text/html: “Portal login”)" in result.message


def test_a_nan_batch_size_fails_the_export_clearly(people_settings, server):
    from generic_helpers import person
    from sis_generic import GenericRestAdapter
    with GenericRestAdapter(people_settings(request_mode="array", batch_size=float("nan"),
                                            create_operation="POST /api/v1/people/batch")) as adapter:
        [r] = adapter.export([person(1)])
    assert r.outcome == Outcome.FAILED
    assert r.message == "Not sent: Batch size must be a finite number between 1 and 1000, not 'nan'."
    assert server.dump()["people"] == []
