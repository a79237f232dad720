"""The first schema: organizations, users, schools, the form, registrations,
connections, mappings, sync jobs and the audit log."""
from ..models import ALL_MODELS


def up(db, migrator):
    db.create_tables(ALL_MODELS, safe=True)
