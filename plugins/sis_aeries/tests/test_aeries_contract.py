"""The adapter contract (enroll_sync.testing) run against the Aeries sandbox."""
from __future__ import annotations

import pytest

from aeries_helpers import record
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
