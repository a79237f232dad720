"""Migration 0007 (named permissions): every existing user keeps exactly what their role allowed, now as
named permissions; a role it does not know gets none (least privilege)."""
from __future__ import annotations

import datetime as dt

from enroll_sync import security
from enroll_sync.db import database
from enroll_sync.migrations import available, upgrade
from enroll_sync.models import SchemaVersion, User
from tests.conftest import make_app

ROLES = ("District Admin", "Sync Admin", "Registrar", "Viewer", "Auditor")


def test_roles_become_their_presets_permissions(tmp_path):
    app = make_app(tmp_path, LOAD_PLUGINS="0")
    with app.app_context(), database.connection_context():
        from playhouse.migrate import SqliteMigrator
        database.create_tables([SchemaVersion], safe=True)
        migrator = SqliteMigrator(database.obj)
        for number, name, module in available():  # the database as it stood before named permissions
            if number < 7:
                module.up(database, migrator)
                SchemaVersion.create(version=number, name=name)
        assert "permissions" not in {c.name for c in database.get_columns("user")}
        now = dt.datetime(2026, 1, 1)
        database.execute_sql("INSERT INTO organization (name, slug, uses_registration_module, created_at) "
                             "VALUES ('Old District', 'old', 1, ?)", (now,))
        for i, role in enumerate(ROLES):
            database.execute_sql('INSERT INTO "user" (organization_id, email, name, password_hash, role, active, session_version, '
                                 "created_at) VALUES (1, ?, ?, 'x', ?, 1, 0, ?)", (f"u{i}@old.example", role, role, now))

        assert upgrade() == [f"{n:04d}_{name}" for n, name, _ in available() if n >= 7]

        users = {u.name: u for u in User.select()}
        assert set(users["District Admin"].permissions) == set(security.PERMISSIONS)
        assert users["District Admin"].can(security.MANAGE_DISTRICT)  # what Manage Users gave them before
        for role in ("Sync Admin", "Registrar", "Viewer"):
            assert set(users[role].permissions) == set(security.PRESETS[role]), role
            assert users[role].role == role
        assert users["Auditor"].permissions == [] and users["Auditor"].role == security.CUSTOM
        assert not users["Auditor"].can(security.VIEW_REGISTRATIONS)
        assert upgrade() == []  # recorded: never applied twice
