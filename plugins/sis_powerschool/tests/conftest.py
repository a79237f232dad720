"""Fixtures: one PowerSchool sandbox on a real socket (127.0.0.1, a free port) for the
whole session, emptied before each test, and adapters pointing at it with tiny
backoffs so retry tests stay fast."""
from __future__ import annotations

import httpx
import pytest

from sis_powerschool.adapter import PowerSchoolAdapter
from sis_powerschool.sandbox import serve_in_thread



@pytest.fixture(scope="session")
def _sandbox_server():
    handle = serve_in_thread(port=0, seed=1234)
    yield handle
    handle.stop()


@pytest.fixture
def sandbox(_sandbox_server):
    """The running sandbox, empty, with no faults."""
    _sandbox_server.reset()
    yield _sandbox_server
    _sandbox_server.reset()


FAST = {"retry_backoff": 0.005, "max_backoff": 0.05, "max_attempts": 4, "timeout_s": 2}


@pytest.fixture
def make_adapter(sandbox):
    """make_adapter(**settings) -> PowerSchoolAdapter on the sandbox (closed after the test)."""
    made = []

    def make(**overrides):
        settings = {"server_url": sandbox.url, "client_id": sandbox.client_id,
                    "client_secret": sandbox.client_secret, "batch_size": 100, **FAST}
        settings.update(overrides)
        adapter = PowerSchoolAdapter(settings)
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


@pytest.fixture
def adapter(make_adapter):
    return make_adapter()


@pytest.fixture
def token(sandbox):
    r = httpx.post(sandbox.url + "/oauth/access_token", data={"grant_type": "client_credentials"},
                   auth=(sandbox.client_id, sandbox.client_secret))
    assert r.status_code == 200
    return r.json()["access_token"]


@pytest.fixture
def api(sandbox, token):
    """An httpx client with a valid bearer token, talking to the sandbox directly."""
    with httpx.Client(base_url=sandbox.url, headers={"Authorization": f"Bearer {token}"},
                      timeout=5) as client:
        yield client


