"""The adapter contract from ``enroll_sync.testing``, against the test server: the
Ed-Fi-style students API (its POST upserts) with OpenAPI 3 + OAuth2 and with Swagger 2 +
HTTP basic, and the JSON-Schema-only people API — whose create does not upsert, so it is
repeat-safe only through "Find existing record" — one record per request and in arrays."""
from __future__ import annotations

import pytest

from enroll_sync.testing import AdapterContract
from generic_helpers import FAST, person, student
from sis_generic import GenericRestAdapter


def busy(server):
    """make_sis_busy(n): the next n records' first requests answer 503 on every try."""
    return lambda n: server.set_faults({"status": 503, "times": n * FAST["max_attempts"],
                                        "retry_after": 0})


class TestGenericRestContractOpenAPI(AdapterContract):
    """POST upserts on the natural key (no update operation): a sent sis_id is not used."""

    contract_updates_by_id = False

    @pytest.fixture
    def unknown_sis_id(self):
        return "0" * 32

    @pytest.fixture
    def make_sis_busy(self, server):
        return busy(server)

    @pytest.fixture
    def adapter(self, server):
        with GenericRestAdapter(server.settings(auth="oauth2", **FAST)) as a:
            yield a

    @pytest.fixture
    def make_records(self):
        return lambda n: [student() for _ in range(n)]

    @pytest.fixture
    def sis_count(self, server):
        return lambda: len(server.dump()["students"])


class TestGenericRestContractSwagger2(TestGenericRestContractOpenAPI):
    """Updates by id (PUT); a record sent without one goes to the upserting POST, whose 200
    does not say whether it matched (the create may answer 200 either way)."""

    contract_updates_by_id = True
    contract_reports_matched_by = False

    @pytest.fixture
    def adapter(self, server):
        settings = server.settings(auth="basic", schema_url="/metadata/data/v3/swagger.json?version=2",
                                   update_operation="PUT /data/v3/ed-fi/students/{id}", **FAST)
        with GenericRestAdapter(settings) as a:
            yield a


class TestGenericRestContractJSONSchema(AdapterContract):
    """POST /api/v1/people answers 409 to a repeat; the lookup turns it into an update."""

    @pytest.fixture
    def unknown_sis_id(self):
        return "999999"

    @pytest.fixture
    def make_sis_busy(self, server):
        return busy(server)

    @pytest.fixture
    def adapter(self, people_settings):
        settings = people_settings(lookup_operation="GET /api/v1/people?externalId={externalId}")
        with GenericRestAdapter(settings) as a:
            yield a

    @pytest.fixture
    def make_records(self):
        return lambda n: [person() for _ in range(n)]

    @pytest.fixture
    def sis_count(self, server):
        return lambda: len(server.dump()["people"])


class TestGenericRestContractJSONSchemaArrays(TestGenericRestContractJSONSchema):
    """Arrays per request (POST /api/v1/people/batch), matched by e-mail, id by pointer."""

    @pytest.fixture
    def adapter(self, people_settings):
        settings = people_settings(request_mode="array", batch_size=2,
                                   create_operation="POST /api/v1/people/batch",
                                   lookup_operation="GET /api/v1/people?email={contact.email}",
                                   lookup_id_location="/data/0/id")
        with GenericRestAdapter(settings) as a:
            yield a


@pytest.mark.parametrize("cls", [TestGenericRestContractOpenAPI, TestGenericRestContractSwagger2,
                                 TestGenericRestContractJSONSchema,
                                 TestGenericRestContractJSONSchemaArrays])
def test_the_bundled_contracts_provide_every_optional_fixture(cls):
    """A bundled configuration never skips a contract check for want of a fixture."""
    for name in ("sis_count", "unknown_sis_id", "make_sis_busy"):
        assert getattr(cls, name) is not getattr(AdapterContract, name), (cls.__name__, name)
