"""The adapter contract from ``enroll_sync.testing``, against the Ed-Fi-style server:
once with OpenAPI 3 + OAuth2, once with Swagger 2 + HTTP basic."""
from __future__ import annotations

import pytest

from enroll_sync.testing import AdapterContract
from generic_helpers import FAST, student
from sis_generic import GenericRestAdapter


class TestGenericRestContractOpenAPI(AdapterContract):
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
    @pytest.fixture
    def adapter(self, server):
        settings = server.settings(auth="basic", schema_url="/metadata/data/v3/swagger.json?version=2",
                                   update_operation="PUT /data/v3/ed-fi/students/{id}", **FAST)
        with GenericRestAdapter(settings) as a:
            yield a
