"""Sign-in hardening:

- ``user.session_version``: carried in the session cookie and raised at sign-out, so a
  cookie copied before then is dead after it;
- an email is unique within a district, not across districts (creating a user must not
  tell one district that an address has an account in another): the unique index on
  ``user.email`` becomes a plain one, and ``(organization_id, email)`` is unique;
- ``loginthrottle`` (one row per account or address, counted up atomically) replaces
  ``loginattempt`` (one row per failure, counted after the fact, which parallel attempts
  got past).
"""
from peewee import CharField, DateTimeField, IntegerField, Model

from . import add_column_if_missing


def up(db, migrator):
    class LoginThrottle(Model):
        key = CharField(unique=True)
        window_start = DateTimeField()
        count = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "loginthrottle"

    add_column_if_missing(db, migrator, "user", "session_version", IntegerField(default=0))
    indexes = {i.name: i for i in db.get_indexes("user")}
    email_index = indexes.get("user_email")
    if email_index is not None and email_index.unique:
        db.execute_sql('DROP INDEX "user_email"')
        email_index = None
    if email_index is None:
        db.execute_sql('CREATE INDEX "user_email" ON "user" ("email")')
    if "user_organization_id_email" not in indexes:
        db.execute_sql('CREATE UNIQUE INDEX "user_organization_id_email" ON "user" ("organization_id", "email")')
    db.create_tables([LoginThrottle], safe=True)
    db.execute_sql('DROP TABLE IF EXISTS "loginattempt"')
