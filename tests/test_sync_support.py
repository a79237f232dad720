"""Shared set-up for the sync tests (no tests here): a PowerSchool sandbox on a real
socket, the demo connection pointed at it, schools assigned, and a working Export
Student Mapping. Import the fixtures with ``from tests.test_sync_support import ...``."""
from __future__ import annotations

import os
import uuid

import pytest

from enroll_sync.sync.links import sis_id_for
from enroll_sync.sync.connections import drop_adapter, target_sections
from enroll_sync.db import database
from enroll_sync.sync.mappings.versions import save_rows
from enroll_sync.models import (Mapping, Registration, School, SyncConnection, SyncItem, SyncJob, utcnow)
from enroll_sync.testing import wait_for  # noqa: F401  (imported from here by the sync tests)

#: fast retries so fault tests stay quick (advanced adapter settings, not in the form)
FAST = {"retry_backoff": 0.01, "max_backoff": 0.05, "max_attempts": 3, "timeout_s": 2}

SCHOOL_CODES = {"101": "100", "102": "100", "201": "200", "301": "300"}
GRADE_CODES = {"K": "0", **{str(g): str(g) for g in range(1, 13)}}

#: a small but real Export Student Mapping for PowerSchool (every required field)
MAPPING_ROWS = [
    {"to": "local_id", "type": "direct", "from": "registration.form_id"},
    {"to": "name.first_name", "type": "transformation", "from": "student_legal_first_name",
     "steps": [{"kind": "trim"}]},
    {"to": "name.last_name", "type": "transformation", "from": "student_legal_last_name",
     "steps": [{"kind": "trim"}]},
    {"to": "name.middle_name", "type": "do_not_map"},
    {"to": "demographics.gender", "type": "match_codes", "from": "gender",
     "codes": {"Female": "F", "Male": "M"}, "unmatched": "blank"},
    {"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
    {"to": "school_enrollment.school_number", "type": "match_codes", "from": "school.school_number",
     "codes": SCHOOL_CODES, "unmatched": "fail"},
    {"to": "school_enrollment.grade_level", "type": "match_codes", "from": "registration.grade",
     "codes": GRADE_CODES, "unmatched": "fail"},
    {"to": "school_enrollment.entry_date", "type": "transformation",
     "steps": [{"kind": "value", "value": "2026-08-19"}]},
    {"to": "school_enrollment.exit_date", "type": "transformation",
     "steps": [{"kind": "value", "value": "2027-06-10"}]},
    {"to": "school_enrollment.enroll_status", "type": "transformation",
     "steps": [{"kind": "value", "value": "P"}]},
]


@pytest.fixture
def sandbox():
    from sis_powerschool.sandbox import serve_in_thread
    handle = serve_in_thread(port=0, seed=7)
    yield handle
    handle.stop()


def connect_to_sandbox(app, sandbox, *, rows=MAPPING_ROWS, schools="all_but_preschool", **settings):
    """Point the demo PowerSchool connection at ``sandbox``, assign schools, save a mapping.

    Returns the connection id."""
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get(SyncConnection.adapter == "powerschool")
        conn.settings = {**conn.settings, "server_url": sandbox.url, **FAST, **settings}
        conn.updated_at = utcnow()
        conn.save()
        drop_adapter(conn.id)
        target_sections(conn, refresh=True)
        if schools == "all_but_preschool":
            School.update(sync_connection=conn).where(School.school_number != "901").execute()
        Mapping.delete().where(Mapping.connection == conn).execute()
        if rows is not None:
            save_rows(conn, "export_student", None, rows, None)
        return conn.id


def job_done(app, job_id):
    with app.app_context(), database.connection_context():
        return SyncJob.get_by_id(job_id).status == "Completed"


def statuses(app, job_id):
    """registration id -> (item status, registration sync status, the student's SIS id on the item's
    connection)."""
    with app.app_context(), database.connection_context():
        rows = (SyncItem.select(SyncItem.registration, SyncItem.status, Registration.sync_status,
                                Registration.student, SyncItem.connection)
                .join(Registration).where(SyncItem.job == job_id).tuples())
        return {r: (s, rs, sis_id_for(student, SyncConnection.get_or_none(SyncConnection.id == conn)))
                for r, s, rs, student, conn in rows}


def local_ids(dump):
    return [str(s.get("local_id")) for s in dump]


# --------------------------------------------------------------------------- PostgreSQL and Redis

POSTGRES_URL = os.environ.get("ENROLL_SYNC_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("ENROLL_SYNC_TEST_REDIS_URL")


def postgres_schema_url():
    """A fresh schema in the test database; returns (url using it, drop function)."""
    import psycopg2
    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg2.connect(POSTGRES_URL) as c, c.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"

    def drop():
        c = psycopg2.connect(POSTGRES_URL)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        c.close()
    return url, drop


def redis_queue_url():
    """A Redis queue URL with a name of its own; returns (url, flush function)."""
    name = "test_" + uuid.uuid4().hex[:12]
    sep = "&" if "?" in REDIS_URL else "?"
    url = f"{REDIS_URL}{sep}name={name}"

    def flush():
        import redis
        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(f"huey.*.{name}*"):
            r.delete(key)
        r.close()
    return url, flush


#: the two ways Enroll Sync runs: the embedded defaults, and the scale path
BACKENDS = [
    pytest.param("sqlite", id="sqlite+sqlitehuey"),
    pytest.param("postgres", id="postgres+redis", marks=[
        pytest.mark.postgres, pytest.mark.redis,
        pytest.mark.skipif(not (POSTGRES_URL and REDIS_URL),
                           reason="set ENROLL_SYNC_TEST_POSTGRES_URL and ENROLL_SYNC_TEST_REDIS_URL")]),
]


def backend_app(backend: str, tmp_path, **overrides):
    """Yields an app with the demo district on ``backend`` (SQLite files, or a fresh
    PostgreSQL schema and Redis queue name), cleaned up afterwards."""
    from enroll_sync.demo import load_demo
    from enroll_sync.migrations import upgrade
    from tests.conftest import make_app

    cleanups = []
    if backend == "postgres":
        db_url, drop = postgres_schema_url()
        queue_url, flush = redis_queue_url()
        overrides.update(DATABASE_URL=db_url, QUEUE_URL=queue_url)
        cleanups += [drop, flush]
    app = make_app(tmp_path, **overrides)
    with app.app_context(), database.connection_context():
        upgrade()
        load_demo(app.extensions["enroll_sync.plugins"], {"powerschool": "http://127.0.0.1:9"}, registrations=40)
    yield app
    if not database.is_closed():
        database.close()
    database.obj.close() if database.obj is not None else None
    for fn in cleanups:
        fn()
