"""The adapter contract (enroll_sync.testing) run against the PowerSchool sandbox."""
from __future__ import annotations

import pytest

from enroll_sync.testing import AdapterContract
from ps_helpers import record


class TestPowerSchoolContract(AdapterContract):
    @pytest.fixture
    def adapter(self, make_adapter):
        return make_adapter(batch_size=2)  # several batches even for small exports

    @pytest.fixture
    def make_records(self):
        return lambda n: [record() for _ in range(n)]

    @pytest.fixture
    def sis_count(self, sandbox):
        return sandbox.count
