"""Fixtures: one Aeries sandbox on a real socket (127.0.0.1, a free port) for the whole
session, put back to its start state before each test, and clients talking to it."""
from __future__ import annotations

import httpx
import pytest

from aeries_helpers import FAST
from sis_aeries.sandbox import serve_in_thread


@pytest.fixture(scope="session")
def _aeries_server():
    handle = serve_in_thread(port=0, seed=7)
    yield handle
    handle.stop()


@pytest.fixture
def sandbox(_aeries_server):
    """The running sandbox: no students, start configuration, no faults."""
    _aeries_server.reset()
    yield _aeries_server
    _aeries_server.reset()


@pytest.fixture
def api(sandbox):
    """An httpx client sending the sandbox's certificate, talking to it directly."""
    with httpx.Client(base_url=sandbox.url, headers={"AERIES-CERT": sandbox.cert,
                                                     "Accept": "application/json"},
                      timeout=10) as client:
        yield client



@pytest.fixture
def make_adapter(sandbox):
    """make_adapter(**settings) -> AeriesAdapter on the sandbox (closed after the test)."""
    from sis_aeries.adapter import AeriesAdapter

    made = []

    def make(**overrides):
        settings = {"server_url": sandbox.url, "certificate": sandbox.cert, "school_year": 2025,
                    "batch_size": 100, **FAST}
        settings.update(overrides)
        adapter = AeriesAdapter(settings)
        made.append(adapter)
        return adapter

    yield make
    for a in made:
        a.close()


@pytest.fixture
def adapter(make_adapter):
    return make_adapter()
