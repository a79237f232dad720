"""The first schema, frozen: organizations, users, schools, the form, students and
registrations, connections, mappings and their versions, sync jobs and the audit log,
as they stood when migration 0003 was the newest.

These classes are a literal copy of that schema, not the live models: later
migrations change the live models, and a fresh database must still be built by
replaying every migration in order (0002 and 0003 find their columns already here
and change nothing).
"""
from peewee import (BooleanField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField)


def up(db, migrator):
    class Base(Model):
        class Meta:
            database = db

    class Organization(Base):
        name = CharField()
        slug = CharField(unique=True)
        uses_registration_module = BooleanField(default=True)
        hold_updates_over = IntegerField(null=True)
        created_at = DateTimeField()

    class User(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        email = CharField(unique=True)
        name = CharField()
        password_hash = CharField()
        role = CharField()
        active = BooleanField(default=True)
        created_at = DateTimeField()
        last_login_at = DateTimeField(null=True)

    class LoginAttempt(Base):
        key = CharField(index=True)
        at = DateTimeField(index=True)

    class SyncConnection(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        adapter = CharField()
        name = CharField()
        environment = CharField(default="sandbox")
        settings = TextField()
        secrets = TextField(default="")
        last_check_at = DateTimeField(null=True)
        last_check_ok = BooleanField(null=True)
        last_check_message = TextField(null=True)
        fields_cache = TextField(null=True)
        fields_cached_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

    class School(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        name = CharField()
        school_number = CharField()
        low_grade = CharField(default="K")
        high_grade = CharField(default="12")
        kind = CharField(default="School")
        sync_connection = ForeignKeyField(SyncConnection, null=True, on_delete="SET NULL")

        class Meta:
            indexes = ((("organization", "school_number"), True),)

    class FormField(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        key = CharField()
        label = CharField()
        section = CharField()
        type = CharField(default="text")
        options = TextField()
        position = IntegerField(default=0)

        class Meta:
            indexes = ((("organization", "key"), True),)

    class Student(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        schoolmint_id = CharField()
        sis_id = CharField(null=True)
        first_name = CharField(default="")
        last_name = CharField(default="")

        class Meta:
            indexes = ((("organization", "schoolmint_id"), True), (("organization", "sis_id"), False))

    class Registration(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        form_id = IntegerField()
        student = ForeignKeyField(Student, on_delete="CASCADE")
        school = ForeignKeyField(School, on_delete="CASCADE")
        grade = CharField()
        school_year = CharField()
        status = CharField(default="Submitted", index=True)
        answers = TextField()
        student_name = CharField(default="")
        submitted_at = DateTimeField()
        approved_at = DateTimeField(null=True)
        sync_status = CharField(default="Not Synced", index=True)
        last_synced_at = DateTimeField(null=True)
        sis_id = CharField(null=True)
        sync_lock = CharField(null=True)
        sync_lock_at = DateTimeField(null=True)

        class Meta:
            indexes = ((("organization", "form_id"), True), (("organization", "status", "school"), False))

    class Mapping(Base):
        connection = ForeignKeyField(SyncConnection, on_delete="CASCADE")
        kind = CharField(default="export_student")
        rows = TextField()
        registration_examples = TextField()
        student_examples = TextField()
        version = IntegerField(default=1)
        updated_at = DateTimeField()
        updated_by = ForeignKeyField(User, null=True, on_delete="SET NULL")

        class Meta:
            indexes = ((("connection", "kind"), True),)

    class MappingVersion(Base):
        mapping = ForeignKeyField(Mapping, on_delete="CASCADE")
        version = IntegerField()
        rows = TextField()
        saved_at = DateTimeField()
        saved_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        note = CharField(null=True)

        class Meta:
            indexes = ((("mapping", "version"), True),)

    class SyncJob(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        kind = CharField(default="bulk")
        retry_of = ForeignKeyField("self", null=True, on_delete="SET NULL")
        status = CharField(default="Queued", index=True)
        total = IntegerField(default=0)
        created_at = DateTimeField()
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)
        heartbeat_at = DateTimeField(null=True)
        message = TextField(null=True)
        would_update = IntegerField(null=True)
        hold_limit = IntegerField(null=True)
        approved_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="approved_jobs")
        approved_at = DateTimeField(null=True)

    class SyncItem(Base):
        job = ForeignKeyField(SyncJob, on_delete="CASCADE")
        registration = ForeignKeyField(Registration, on_delete="CASCADE")
        connection = ForeignKeyField(SyncConnection, null=True, on_delete="SET NULL")
        status = CharField(default="Pending", index=True)
        reason = TextField(null=True)
        action = CharField(null=True)
        sis_id = CharField(null=True)
        sent = TextField(null=True)
        response = TextField(null=True)
        errors = TextField(null=True)
        mapping_version = IntegerField(null=True)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            indexes = ((("job", "status"), False),)

    class AuditLog(Base):
        organization = ForeignKeyField(Organization, on_delete="CASCADE")
        user = ForeignKeyField(User, null=True, on_delete="SET NULL")
        action = CharField()
        object_type = CharField()
        object_id = CharField(null=True)
        details = TextField()
        at = DateTimeField(index=True)

    db.create_tables([Organization, User, LoginAttempt, SyncConnection, School, FormField, Student,
                      Registration, Mapping, MappingVersion, SyncJob, SyncItem, AuditLog], safe=True)
