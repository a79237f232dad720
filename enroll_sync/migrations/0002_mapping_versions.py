"""Mapping versions: the rows of every saved version, and on each sync record the
version it was mapped with. Existing mappings get their current rows as their first
kept version."""
from peewee import IntegerField

from ..models import Mapping, MappingVersion
from . import add_column_if_missing


def up(db, migrator):
    db.create_tables([MappingVersion], safe=True)
    add_column_if_missing(db, migrator, "syncitem", "mapping_version", IntegerField(null=True))
    kept = {m for (m,) in MappingVersion.select(MappingVersion.mapping).tuples()}
    for mapping in Mapping.select():
        if mapping.id not in kept and mapping.rows:
            MappingVersion.create(mapping=mapping, version=mapping.version, rows=mapping.rows,
                                  saved_at=mapping.updated_at, saved_by=mapping.updated_by_id,
                                  note="Kept when versions began")
