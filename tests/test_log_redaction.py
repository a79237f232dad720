"""A connection's secrets and any bearer token never reach a log line, whoever logs it:
an adapter's traceback in a worker, httpx printing a URL, a library."""
from __future__ import annotations

import logging

from enroll_sync.sync.connections import create_connection, secret_values
from enroll_sync.db import database
from enroll_sync.models import Organization

SECRET = "s3cr3t-client-secret-value"
API_KEY = "key-0123456789abcdef"


def test_secrets_are_cut_out_of_messages_and_tracebacks(app, caplog):
    with app.app_context(), database.connection_context():
        org = Organization.select().first()
        conn = create_connection(org, "powerschool", "Logged", "sandbox",
                                 {"server_url": "http://127.0.0.1:9", "client_id": "id-visible",
                                  "client_secret": SECRET})
        assert SECRET in secret_values(conn)  # decrypting is what teaches the logs the secret
    caplog.set_level(logging.INFO)
    log = logging.getLogger("enroll_sync.sync.runner")
    try:
        raise RuntimeError(f"adapter blew up while using {SECRET}")
    except RuntimeError:
        log.exception("export through connection %s failed with %s", conn.id, SECRET)
    logging.getLogger("some.library").warning("GET https://sis.example/api?secret=%s", SECRET)
    logging.getLogger("httpx").warning("sent Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig")
    text = caplog.text
    assert "adapter blew up while using [redacted]" in text  # the traceback is kept, the secret is not
    assert "failed with [redacted]" in text and "api?secret=[redacted]" in text
    assert SECRET not in text and "eyJhbGciOiJIUzI1NiJ9" not in text


def test_history_hides_secret_looking_fields_but_a_preview_shows_what_is_sent():
    from enroll_sync.redaction import scrub
    body = {"name": {"first_name": "Ana"}, "web_password": "Tiger-42",
            "note": f"uses {SECRET}", "headers": ["Bearer abc.def"]}
    history = scrub(body, [SECRET])
    assert history["web_password"] == "[redacted]" and history["note"] == "uses [redacted]"
    assert history["headers"] == ["Bearer [redacted]"] and history["name"] == {"first_name": "Ana"}
    preview = scrub(body, [SECRET], keys=False)
    assert preview["web_password"] == "Tiger-42"  # the admin checks the record as the SIS will get it
    assert preview["note"] == "uses [redacted]" and preview["headers"] == ["Bearer [redacted]"]


def test_stored_history_json_handles_what_orjson_refuses():
    """Big integers and non-string keys (an adapter's answer can hold either) are still
    stored, through json, rather than failing the record's bookkeeping."""
    import json

    from enroll_sync.redaction import dumps_scrubbed
    text = dumps_scrubbed({"id": 2**70, 7: "seven", "note": f"key {SECRET}"}, [SECRET])
    assert json.loads(text) == {"id": 2**70, "7": "seven", "note": "key [redacted]"}
    assert json.loads(dumps_scrubbed({"name": "Zoë", "ok": True})) == {"name": "Zoë", "ok": True}
