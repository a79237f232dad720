"""Numbered schema migrations (``NNNN_name.py`` each with ``up(db, migrator)``).

``upgrade()`` applies, in order, every migration not yet recorded in the
``schemaversion`` table, each in its own transaction. A migration that adds a
column to a model must also add the field to ``models.py``; because 0001 creates
tables from the models as they are now, later migrations use ``add_column_if_missing``
so a fresh database and an old one end the same.
"""
from __future__ import annotations

import importlib
import pkgutil
import re

from playhouse.migrate import PostgresqlMigrator, SqliteMigrator, migrate

from ..db import analyze, database, is_sqlite
from ..models import SchemaVersion

_NAME = re.compile(r"^(\d{4})_(\w+)$")


def available() -> list[tuple[int, str, object]]:
    out = []
    for info in pkgutil.iter_modules(__path__):
        m = _NAME.match(info.name)
        if m:
            out.append((int(m.group(1)), m.group(2), importlib.import_module(f"{__name__}.{info.name}")))
    return sorted(out, key=lambda t: t[0])


def applied() -> set[int]:
    if not database.table_exists(SchemaVersion._meta.table_name):
        return set()
    return {row.version for row in SchemaVersion.select()}


def upgrade() -> list[str]:
    """Apply pending migrations; return the names applied."""
    database.create_tables([SchemaVersion], safe=True)
    done = applied()
    migrator = SqliteMigrator(database.obj) if is_sqlite() else PostgresqlMigrator(database.obj)
    ran = []
    for number, name, module in available():
        if number in done:
            continue
        with database.atomic():
            module.up(database, migrator)
            SchemaVersion.create(version=number, name=name)
        ran.append(f"{number:04d}_{name}")
    if ran:
        analyze()  # new indexes, and tables rebuilt by a migration, have no statistics yet
    return ran


def add_column_if_missing(db, migrator, table: str, column: str, field) -> None:
    if column not in {c.name for c in db.get_columns(table)}:
        migrate(migrator.add_column(table, column, field))
