"""Import (SIS -> Enroll): a student's imported profile per connection
(``studentprofile``), each connection's import schedule and change marker
(``importstate``), the import side of a sync job (``importrun``) and its per-student
outcomes (``importitem``), and ``student.match_key`` (name + birth date, normalised)
to find returning students.

Literal copies of the tables as they are at this migration, like 0004. The match keys
of existing students are filled in by the first import (from their latest
registration), not here: a migration must not wait on every registration of every
district.
"""
from peewee import (BooleanField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField)

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

    class SyncJob(Base):
        pass

    class StudentProfile(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        student = ForeignKeyField(Student, on_delete="CASCADE")
        connection = ForeignKeyField(SyncConnection, on_delete="CASCADE")
        sis_id = CharField()
        school_number = CharField(null=True)
        values = TextField()
        imported_at = DateTimeField()
        job_id = IntegerField(null=True)

        class Meta:
            table_name = "studentprofile"
            indexes = ((("student", "connection"), True),)

    class ImportState(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        connection = ForeignKeyField(SyncConnection, on_delete="CASCADE", unique=True)
        daily_at = CharField(null=True)
        last_scheduled_on = CharField(null=True)
        marker = TextField(null=True)
        marker_at = DateTimeField(null=True)
        fields_cache = TextField(null=True)
        fields_cached_at = DateTimeField(null=True)
        updated_at = DateTimeField()
        updated_by = ForeignKeyField(User, null=True, on_delete="SET NULL")

        class Meta:
            table_name = "importstate"

    class ImportRun(Base):
        job = ForeignKeyField(SyncJob, on_delete="CASCADE", unique=True)
        connection = ForeignKeyField(SyncConnection, on_delete="CASCADE")
        preview = BooleanField(default=False)
        from_preview = ForeignKeyField(SyncJob, null=True, on_delete="SET NULL", backref="imports_started")
        scheduled = BooleanField(default=False)
        since = TextField(null=True)
        cursor = TextField(null=True)
        marker = TextField(null=True)
        pages = IntegerField(default=0)
        failures = IntegerField(default=0)
        mapping_version = IntegerField(null=True)
        lease = CharField(null=True)

        class Meta:
            table_name = "importrun"

    class ImportItem(Base):
        job = ForeignKeyField(SyncJob, on_delete="CASCADE")
        sis_id = CharField()
        student = ForeignKeyField(Student, null=True, on_delete="SET NULL")
        status = CharField()
        reason = TextField(null=True)
        matched_by = CharField(null=True)
        name = CharField(default="")
        school = CharField(null=True)
        match_key = CharField(null=True)
        changes = TextField(null=True)
        finished_at = DateTimeField()

        class Meta:
            table_name = "importitem"
            indexes = ((("job", "sis_id"), True), (("job", "status"), False), (("job", "match_key"), False),
                       (("job", "student"), False))

    db.create_tables([StudentProfile, ImportState, ImportRun, ImportItem], safe=True)
    add_column_if_missing(db, migrator, "student", "match_key", CharField(null=True))
    index = "student_organization_id_match_key"
    if index not in {i.name for i in db.get_indexes("student")}:
        migrate(migrator.add_index("student", ("organization_id", "match_key"), False))
