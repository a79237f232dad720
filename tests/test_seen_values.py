"""The Match Codes editor lists every answer registrations hold. Counting them runs in
the database (JSON functions differ between SQLite and PostgreSQL), so it is checked
on both against the same count made in Python."""
from __future__ import annotations

from collections import Counter

import pytest

from enroll_sync.db import database
from enroll_sync.models import Organization, Registration
from enroll_sync.sync.mappings.examples import seen_values
from tests.test_sync_support import BACKENDS, backend_app


@pytest.fixture(params=BACKENDS)
def app(request, tmp_path):
    yield from backend_app(request.param, tmp_path)


def test_seen_values_counts_answers_and_multi_select_items(app):
    with app.app_context(), database.connection_context():
        org = Organization.get().id
        regs = list(Registration.select().where(Registration.organization == org).order_by(Registration.id))
        # one odd answer, one multi-select stored as a list, one blank, one with a quote in the key's value
        odd = {regs[0].id: "Prefer not to say", regs[1].id: ["Asian", "White"], regs[2].id: "  ",
               regs[3].id: 'O"Neil'}
        for rid, value in odd.items():
            reg = Registration.get_by_id(rid)
            Registration.update(answers={**reg.answers, "gender": value}).where(Registration.id == rid).execute()
        expected = Counter()
        for reg in Registration.select().where(Registration.organization == org):
            v = reg.answers.get("gender")
            for item in (v if isinstance(v, list) else [v]):
                if item is not None and str(item).strip():
                    expected[str(item)] += 1
        assert seen_values(org, "gender") == dict(expected)
        assert seen_values(org, "gender")["Prefer not to say"] == 1 and seen_values(org, "gender")["Asian"] == 1
        assert seen_values(org, "registration.grade") == dict(Counter(r.grade for r in regs if r.grade))
        assert seen_values(org, "no_such_field") == {}
