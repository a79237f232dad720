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

    @pytest.fixture
    def unknown_sis_id(self):
        return "987654321"  # the sandbox numbers students from 1

    @pytest.fixture
    def make_sis_busy(self, sandbox):
        return lambda n: sandbox.set_faults(busy_records=n)


def test_the_bundled_contract_provides_every_optional_fixture():
    """A bundled plugin never skips a contract check for want of a fixture."""
    for name in ("sis_count", "unknown_sis_id", "make_sis_busy"):
        assert getattr(TestPowerSchoolContract, name) is not getattr(AdapterContract, name), name
