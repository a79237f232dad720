"""Holding a large update: the district's limit (``organization.hold_updates_over``),
and on each sync job how many students it would update, the limit that held it and
who approved it."""
from peewee import DateTimeField, IntegerField

from ..models import SyncJob
from . import add_column_if_missing


def up(db, migrator):
    add_column_if_missing(db, migrator, "organization", "hold_updates_over", IntegerField(null=True))
    add_column_if_missing(db, migrator, "syncjob", "would_update", IntegerField(null=True))
    add_column_if_missing(db, migrator, "syncjob", "hold_limit", IntegerField(null=True))
    add_column_if_missing(db, migrator, "syncjob", "approved_by_id", SyncJob.approved_by)
    add_column_if_missing(db, migrator, "syncjob", "approved_at", DateTimeField(null=True))
