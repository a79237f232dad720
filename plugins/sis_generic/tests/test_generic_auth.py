"""Every authentication mode against the test server, wrong credentials, token
refresh, and secrets kept out of every message, result and log line."""
from __future__ import annotations

import json
import logging

import pytest

from enroll_sync import Outcome
from generic_helpers import student
from sis_generic import GenericRestAdapter

MODES = ["none", "api_key", "bearer", "basic", "oauth2"]


@pytest.mark.parametrize("mode", MODES)
def test_each_auth_mode_checks_and_exports(make_adapter, server, mode):
    if mode == "none":
        server.set_require_auth(False)
    adapter = make_adapter(auth=mode)
    result = adapter.check_connection()
    assert result.ok, result.message
    [outcome] = adapter.export([student()])
    assert outcome.outcome == Outcome.SUCCEEDED, outcome.message
    assert len(server.dump()["students"]) == 1
    assert server.count("POST", "/oauth/token") == (1 if mode == "oauth2" else 0)


WRONG = {
    "none": ({}, None),
    "api_key": ({"api_key": "WRONG-key-0001"}, "WRONG-key-0001"),
    "bearer": ({"bearer_token": "WRONG-token-0002"}, "WRONG-token-0002"),
    "basic": ({"password": "WRONG-pass-0003"}, "WRONG-pass-0003"),
    "oauth2": ({"client_secret": "WRONG-secret-0004"}, "WRONG-secret-0004"),
}


@pytest.mark.parametrize("mode", MODES)
def test_wrong_credentials_are_explained_without_the_secret(make_adapter, server, mode, caplog):
    caplog.set_level(logging.DEBUG)
    overrides, secret = WRONG[mode]
    adapter = make_adapter(auth=mode, **overrides)
    result = adapter.check_connection()
    assert not result.ok
    if mode == "oauth2":
        assert result.message.startswith("Authentication failed: The SIS rejected the client ID or "
                                         "client secret (HTTP 401 from the token URL)")
    else:
        assert ("the SIS refused the credentials (GET /data/v3/ed-fi/students answered HTTP 401)"
                in result.message)
    [outcome] = adapter.export([student()])
    assert outcome.outcome == Outcome.FAILED
    assert "401" in outcome.message
    assert server.dump()["students"] == []
    if secret:
        everything = repr(result) + repr(outcome) + caplog.text
        assert secret not in everything
        if mode == "basic":  # nor its base64 form
            import base64
            assert base64.b64encode(f"enroll:{secret}".encode()).decode() not in everything


def test_revoked_token_is_refreshed_once(edfi, server):
    [first] = edfi.export([student()])
    assert first.ok
    server.revoke_tokens()
    [second] = edfi.export([student()])
    assert second.outcome == Outcome.SUCCEEDED
    assert server.count("POST", "/oauth/token") == 2
    assert len(server.dump()["students"]) == 2


@pytest.mark.parametrize("mode, key", [("api_key", "api_key"), ("bearer", "bearer_token"),
                                       ("oauth2", "client_secret")])
def test_secret_echoed_by_the_sis_is_redacted(make_adapter, server, mode, key, caplog):
    caplog.set_level(logging.DEBUG)
    secret = server.settings(auth=mode)[key]
    server.set_faults({"status": 400, "body": {"detail": f"credential {secret} may not write students",
                                               "errors": [f"{secret} is read-only"]}},
                      {"status": 200, "body": f"<p>hello {secret}</p>", "content_type": "text/html"})
    adapter = make_adapter(auth=mode)
    records = [student(), student()]
    results = adapter.export(records)
    assert [r.outcome for r in results] == [Outcome.FAILED, Outcome.FAILED]
    assert "credential [redacted] may not write students" in results[0].message
    dumped = json.dumps([r.__dict__ for r in results], default=str)
    assert secret not in dumped and secret not in caplog.text
    assert "[redacted]" in dumped


def test_secret_in_schema_url_is_redacted(make_adapter):
    adapter = make_adapter(auth="api_key", schema_url="/metadata/missing.json?key=edfi-api-key-55AA11")
    result = adapter.check_connection()
    assert not result.ok and "answered HTTP 404" in result.message
    assert "edfi-api-key-55AA11" not in result.message and "[redacted]" in result.message


def test_credentials_are_not_sent_to_a_foreign_schema_host(server):
    """A schema on another origin is fetched without the SIS credentials."""
    from sis_generic.sandbox import serve_in_thread
    other = serve_in_thread(port=0)
    try:
        settings = server.settings(auth="bearer", schema_url=f"{other.url}/metadata/data/v3/swagger.json",
                                   retry_backoff=0.01)
        seen = []
        other.state.faults.clear()
        app = other._server.app

        def spy(environ, start_response):
            seen.append(environ.get("HTTP_AUTHORIZATION"))
            return app(environ, start_response)

        other._server.app = spy
        with GenericRestAdapter(settings) as adapter:
            assert adapter.check_connection().ok
        assert seen == [None]
    finally:
        other.stop()


@pytest.mark.parametrize("cut", [160, 500])
def test_a_secret_across_the_cut_of_a_long_answer_is_redacted_whole(make_adapter, server, cut):
    """Long SIS answers are shortened for messages; a secret that straddles the cut must be
    redacted before shortening, or its first characters would be kept."""
    secret = server.settings(auth="api_key")["api_key"]
    filler = "x " * ((cut - 10) // 2)
    server.set_faults({"status": 400, "body": f"<p>{filler}{secret} more text after it</p>",
                       "content_type": "text/html"},
                      {"status": 500, "body": f"<p>{filler}{secret}</p>", "content_type": "text/html", "times": None})
    adapter = make_adapter(auth="api_key", max_attempts=1)
    results = adapter.export([student()])
    dumped = json.dumps([r.__dict__ for r in results], default=str)
    for piece in (secret[:8], secret[-8:]):
        assert piece not in dumped, piece
