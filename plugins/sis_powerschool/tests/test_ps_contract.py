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

    # the import contract: list_students over the sandbox's district student list
    @pytest.fixture
    def sis_empty(self, sandbox):
        return sandbox.empty

    @pytest.fixture
    def sis_seed(self, sandbox):
        seeds = iter(range(1, 10**6))
        return lambda n: sandbox.seed_students(n, seed=next(seeds))

    @pytest.fixture
    def sis_fail_page(self, sandbox):
        return lambda page, times: sandbox.set_faults(page_error_at=page, page_error_times=times)


def test_the_bundled_contract_provides_every_optional_fixture():
    """A bundled plugin never skips a contract check for want of a fixture."""
    for name in ("sis_count", "unknown_sis_id", "make_sis_busy", "sis_empty", "sis_seed", "sis_fail_page"):
        assert getattr(TestPowerSchoolContract, name) is not getattr(AdapterContract, name), name
