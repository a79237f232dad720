"""The adapter contract (enroll_sync.testing) run against the Aeries sandbox."""
from __future__ import annotations

import pytest

from aeries_helpers import FAST, record
from enroll_sync.testing import AdapterContract


class TestAeriesContract(AdapterContract):
    @pytest.fixture
    def adapter(self, make_adapter, sandbox):
        sandbox.seed(40, seed=9)  # existing students the new ones must not be confused with
        return make_adapter(batch_size=2)

    @pytest.fixture
    def make_records(self):
        return lambda n: [record() for _ in range(n)]

    @pytest.fixture
    def sis_count(self, sandbox):
        return sandbox.count

    @pytest.fixture
    def unknown_sis_id(self):
        return "12345"  # the sandbox numbers students from 99400001

    @pytest.fixture
    def make_sis_busy(self, sandbox):
        """The next n record writes answer 503 "busy" on every try the adapter makes."""
        return lambda n: sandbox.set_faults(busy_writes=n * FAST["max_attempts"], retry_after="0")


def test_the_optional_fixtures_are_provided():
    for name in ("sis_count", "unknown_sis_id", "make_sis_busy"):
        assert getattr(TestAeriesContract, name) is not getattr(AdapterContract, name), name
