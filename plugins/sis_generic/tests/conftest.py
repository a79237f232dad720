"""Fixtures: one Ed-Fi-style test server per session (reset before every test) and
adapters configured against it with tiny retry waits, so the suite stays fast."""
from __future__ import annotations

import socket

import pytest

from generic_helpers import FAST
from sis_generic import GenericRestAdapter
from sis_generic.sandbox import serve_in_thread



@pytest.fixture(scope="session")
def server():
    handle = serve_in_thread(port=0)
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def _clean_server(server):
    server.reset()
    yield


@pytest.fixture
def make_adapter(server):
    """make_adapter(auth="oauth2", **settings) -> a GenericRestAdapter closed after the test."""
    made = []

    def make(auth: str = "oauth2", **overrides) -> GenericRestAdapter:
        adapter = GenericRestAdapter(server.settings(auth=auth, **{**FAST, **overrides}))
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


@pytest.fixture
def edfi(make_adapter) -> GenericRestAdapter:
    return make_adapter()


@pytest.fixture
def people_settings(server):
    """Settings for the JSON-Schema-only configuration (the /api/v1/people API)."""
    def make(**overrides):
        return server.settings(auth="api_key", **{
            **FAST,
            "schema_source": "json_schema_url",
            "schema_url": "/schemas/person.schema.json",
            "create_operation": "POST /api/v1/people",
            "update_operation": "PUT /api/v1/people/{id}",
            "id_location": "/data/id",
            **overrides})
    return make


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
