"""SIS identity per connection: a ``sislink`` row per (student, connection) replaces the
one ``sis_id`` a student and a registration carried.

Every id that was stored becomes a link to the connection that produced it, read from
the sync history (the newest Succeeded or Partial Sync record that returned that id).
Where the history does not say (an id imported from a CSV, or made before the history
kept connections), the id is kept as a link whose connection is unknown: the
registration page shows it so an admin can set or remove it, and no sync uses it. How
many of each is written to the audit log of each district, and shown on Sync Service.
Then the two old columns go.

A connection may also be told it points at the same SIS as another
(``syncconnection.shares_links_with_id``); none does after this migration.
"""
import datetime as dt
import json

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model

from . import add_column_if_missing


def up(db, migrator):
    from playhouse.migrate import migrate

    class Base(Model):
        class Meta:
            database = db

    class Organization(Base):
        pass

    class User(Base):
        pass

    class Student(Base):
        pass

    class SyncConnection(Base):
        pass

    class SisLink(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        student = ForeignKeyField(Student, on_delete="CASCADE")
        connection = ForeignKeyField(SyncConnection, null=True, on_delete="CASCADE")
        sis_id = CharField()
        how = CharField()
        linked_at = DateTimeField()
        linked_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        sync_item_id = IntegerField(null=True)

        class Meta:
            table_name = "sislink"
            indexes = ((("student", "connection"), True), (("connection", "sis_id"), False))

    db.create_tables([SisLink], safe=True)
    add_column_if_missing(db, migrator, "syncconnection", "shares_links_with_id",
                          ForeignKeyField(SyncConnection, field=SyncConnection.id, null=True, on_delete="SET NULL"))

    student_cols = {c.name for c in db.get_columns("student")}
    registration_cols = {c.name for c in db.get_columns("registration")}
    if "sis_id" not in student_cols:
        return  # already done

    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    # every (student, id) that was stored: the student's own, else a registration's
    known: dict[int, tuple[int, str]] = {}
    for sid, org, value in db.execute_sql(
            "SELECT id, organization_id, sis_id FROM student WHERE sis_id IS NOT NULL AND sis_id <> ''").fetchall():
        known[sid] = (org, str(value))
    if "sis_id" in registration_cols:
        for sid, org, value in db.execute_sql(
                "SELECT student_id, organization_id, sis_id FROM registration "
                "WHERE sis_id IS NOT NULL AND sis_id <> '' ORDER BY id").fetchall():
            known.setdefault(sid, (org, str(value)))

    counts: dict[int, dict[str, int]] = {}
    for student_id, (org, value) in known.items():
        row = db.execute_sql(
            "SELECT i.connection_id, i.id FROM syncitem i JOIN registration r ON r.id = i.registration_id "
            "JOIN syncconnection c ON c.id = i.connection_id "
            "WHERE r.student_id = %s AND i.sis_id = %s AND i.status IN ('Succeeded', 'Partial Sync') "
            "ORDER BY i.id DESC LIMIT 1".replace("%s", db.param), (student_id, value)).fetchone()
        conn_id, item_id = (row[0], row[1]) if row else (None, None)
        how = "migrated" if conn_id else "connection unknown"
        SisLink.insert(organization=org, student=student_id, connection=conn_id, sis_id=value, how=how,
                       linked_at=now, sync_item_id=item_id).execute()
        tally = counts.setdefault(org, {"migrated": 0, "connection unknown": 0})
        tally[how] += 1
    for org, tally in counts.items():
        db.execute_sql(
            "INSERT INTO auditlog (organization_id, user_id, action, object_type, object_id, details, at) "
            "VALUES (%s, NULL, 'links.migrated', 'SisLink', NULL, %s, %s)".replace("%s", db.param),
            (org, json.dumps({"linked": tally["migrated"], "connection_unknown": tally["connection unknown"]}), now))

    index = "student_organization_id_sis_id"
    if index in {i.name for i in db.get_indexes("student")}:
        migrate(migrator.drop_index("student", index))
    migrate(migrator.drop_column("student", "sis_id"))
    if "sis_id" in registration_cols:
        migrate(migrator.drop_column("registration", "sis_id"))
