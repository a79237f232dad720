"""peewee models. Every row that belongs to a district carries ``organization`` and
every query in the web layer filters on the signed-in user's organization.

The schema itself is created by the numbered migrations in ``migrations/``, not by
``create_tables``; a migration that adds a field adds it here too.
"""
from __future__ import annotations

import datetime as dt
import json

import orjson
from peewee import (BooleanField, CharField, DateTimeField, ForeignKeyField, IntegerField,
                    Model, TextField)

from .db import database


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class JSONText(TextField):
    """JSON kept as text, so SQLite and PostgreSQL behave the same. Read with orjson (a
    sync loads every registration's answers); json takes over for what orjson refuses."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), default=str)

    def python_value(self, value):
        if value is None:
            return None
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:  # e.g. an integer beyond 64 bits
            return json.loads(value)


class BaseModel(Model):
    class Meta:
        database = database


# --------------------------------------------------------------------------- statuses

REGISTRATION_STATUSES = ("Submitted", "In Review", "Approved", "Denied", "Withdrawn")
#: only Approved registrations are exported (the walkthrough's note)
APPROVED = "Approved"

SYNC_NOT_SYNCED = "Not Synced"
SYNC_PENDING = "Pending"
SYNC_IN_PROGRESS = "In Progress"
SYNC_SUCCEEDED = "Succeeded"
SYNC_FAILED = "Failed"
SYNC_PARTIAL = "Partial Sync"
SYNC_STATUSES = (SYNC_NOT_SYNCED, SYNC_PENDING, SYNC_IN_PROGRESS, SYNC_SUCCEEDED, SYNC_FAILED,
                 SYNC_PARTIAL)
#: a job item the job did not send because the registration was not eligible any more
SKIPPED = "Skipped"
#: how a job item can end
FINAL_STATUSES = (SYNC_SUCCEEDED, SYNC_PARTIAL, SYNC_FAILED, SKIPPED)
ITEM_STATUSES = (SYNC_PENDING, SYNC_IN_PROGRESS) + FINAL_STATUSES


# --------------------------------------------------------------------------- tenancy and people

class Organization(BaseModel):
    name = CharField()
    slug = CharField(unique=True)
    #: exporting is only available to districts that use the Registration module
    uses_registration_module = BooleanField(default=True)
    #: hold a sync for approval when it would update more than this many students the
    #: SIS already has (None: never hold); see docs/bulk_sync.md "Holding a large update"
    hold_updates_over = IntegerField(null=True)
    created_at = DateTimeField(default=utcnow)


class User(BaseModel):
    organization = ForeignKeyField(Organization, backref="users", on_delete="CASCADE")
    #: unique within a district (not across districts: one district must not learn that
    #: an address has an account in another); sign-in checks every account with it
    email = CharField(index=True)
    name = CharField()
    password_hash = CharField()
    #: the named permissions granted to this user (``security.PERMISSIONS``), a JSON list.
    #: Access is decided by these alone (``can``).
    permissions = JSONText(null=True)
    #: a label kept in step with ``permissions`` by ``save``: the preset they equal
    #: ("Registrar", ...) or "Custom". Creating a user with ``role=`` and no permissions
    #: applies that preset (the CLI and older callers do).
    role = CharField(default="Custom")
    active = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)
    #: carried in the session cookie; sign-out and deactivation raise it, so a cookie
    #: copied before then no longer signs anyone in
    session_version = IntegerField(default=0)

    class Meta:
        indexes = ((("organization", "email"), True),)

    # flask-login protocol
    @property
    def is_active(self):
        return self.active

    @property
    def is_authenticated(self):
        return True

    @property
    def is_anonymous(self):
        return False

    def get_id(self):
        return str(self.id)

    def can(self, permission: str) -> bool:
        return bool(self.active) and permission in (self.permissions or ())

    def save(self, *args, **kwargs):
        from .security import CUSTOM, PRESETS, normalize, preset_of
        if self.permissions is None:  # created with a preset's name only
            self.permissions = sorted(PRESETS.get(self.role, ()))
        self.permissions = normalize(self.permissions)
        self.role = preset_of(self.permissions) or CUSTOM
        return super().save(*args, **kwargs)


class LoginThrottle(BaseModel):
    """Failed sign-ins of one account or one address in the current window, for the rate
    limit (shared by every process). One row per key, counted up atomically before a
    password is checked (``web.auth``), so parallel attempts cannot all get through."""

    key = CharField(unique=True)
    window_start = DateTimeField(default=utcnow)
    count = IntegerField(default=0)


# --------------------------------------------------------------------------- SIS connections

class SyncConnection(BaseModel):
    organization = ForeignKeyField(Organization, backref="connections", on_delete="CASCADE")
    adapter = CharField()
    name = CharField()
    environment = CharField(default="sandbox")  # sandbox | production
    settings = JSONText(default=dict)  # non-secret settings
    secrets = TextField(default="")  # Fernet token of a JSON object
    last_check_at = DateTimeField(null=True)
    last_check_ok = BooleanField(null=True)
    last_check_message = TextField(null=True)
    fields_cache = JSONText(null=True)
    fields_cached_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)
    #: the admin says this connection points at the same SIS as ``shares_links_with``
    #: (a Sandbox and Production pair never do by default): it then reads and writes that
    #: connection's SIS links (``sync.links``)
    shares_links_with = ForeignKeyField("self", null=True, on_delete="SET NULL", backref="link_sharers")


class School(BaseModel):
    organization = ForeignKeyField(Organization, backref="schools", on_delete="CASCADE")
    name = CharField()
    school_number = CharField()
    low_grade = CharField(default="K")
    high_grade = CharField(default="12")
    kind = CharField(default="School")  # School | Program
    sync_connection = ForeignKeyField(SyncConnection, null=True, backref="schools", on_delete="SET NULL")

    class Meta:
        indexes = ((("organization", "school_number"), True),)


# --------------------------------------------------------------------------- the form and its answers

class FormField(BaseModel):
    """One field of the Enroll registration form (the From Enroll Field catalog)."""

    organization = ForeignKeyField(Organization, backref="form_fields", on_delete="CASCADE")
    key = CharField()
    label = CharField()
    section = CharField()
    type = CharField(default="text")  # text, date, choice, phone, email, number, yesno, textarea
    options = JSONText(default=list)
    position = IntegerField(default=0)

    class Meta:
        indexes = ((("organization", "key"), True),)


class Student(BaseModel):
    """A student of the district. Their ids in SISs are ``SisLink`` rows, one per connection."""

    organization = ForeignKeyField(Organization, backref="students", on_delete="CASCADE")
    schoolmint_id = CharField()
    first_name = CharField(default="")
    last_name = CharField(default="")
    #: "last|first|YYYY-MM-DD", normalised (``sync.imports.matching.match_key``): how an
    #: import finds a returning student by name and birth date. None: not known yet
    #: (an import fills it in from the student's latest registration first)
    match_key = CharField(null=True)

    class Meta:
        indexes = ((("organization", "schoolmint_id"), True), (("organization", "match_key"), False))


class Registration(BaseModel):
    organization = ForeignKeyField(Organization, backref="registrations", on_delete="CASCADE")
    form_id = IntegerField()  # the Registration Form ID (end of the registration's URL)
    student = ForeignKeyField(Student, backref="registrations", on_delete="CASCADE")
    school = ForeignKeyField(School, backref="registrations", on_delete="CASCADE")
    grade = CharField()
    school_year = CharField()
    status = CharField(default="Submitted", index=True)
    answers = JSONText(default=dict)
    student_name = CharField(default="")  # "Last, First" for search and sort
    submitted_at = DateTimeField(default=utcnow)
    approved_at = DateTimeField(null=True)
    sync_status = CharField(default=SYNC_NOT_SYNCED, index=True)
    last_synced_at = DateTimeField(null=True)
    #: per-record in-flight marker: the job item currently exporting this record
    sync_lock = CharField(null=True)
    sync_lock_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("organization", "form_id"), True), (("organization", "status", "school"), False),
                   # the School Year Quick Filter's choices (DISTINCT) come from the index alone
                   (("organization", "school_year"), False))


# --------------------------------------------------------------------------- SIS identity

#: how a student came to be linked to a SIS record
LINK_INSERTED = "inserted"     # a sync created the SIS record
LINK_MATCHED = "matched"       # match-before-insert found the SIS record
LINK_RELINKED = "relinked"     # the linked record was gone; matched or inserted again
LINK_MANUAL = "set by hand"    # an admin set it
LINK_IMPORTED = "imported"     # a CSV import or an import from the SIS
LINK_MIGRATED = "migrated"     # kept from before per-connection links (connection known)
LINK_UNKNOWN = "connection unknown"  # kept from before per-connection links; not used for syncs


class SisLink(BaseModel):
    """A student's id in the SIS behind one connection (``sync.links``).

    ``connection`` is the connection whose SIS holds the record (for connections that
    share links, the one they share with). A link without a connection was kept from
    before links existed, when it could not be told which SIS the id came from: it is
    shown to admins but never used to send an update.
    """

    organization = ForeignKeyField(Organization, backref="sis_links", on_delete="CASCADE")
    student = ForeignKeyField(Student, backref="sis_links", on_delete="CASCADE")
    connection = ForeignKeyField(SyncConnection, null=True, backref="sis_links", on_delete="CASCADE")
    sis_id = CharField()
    how = CharField()
    linked_at = DateTimeField(default=utcnow)
    linked_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
    #: the sync record that made the link (None: set by hand, imported or migrated)
    sync_item_id = IntegerField(null=True)

    class Meta:
        indexes = ((("student", "connection"), True), (("connection", "sis_id"), False))


# --------------------------------------------------------------------------- import (SIS -> Enroll)

class StudentProfile(BaseModel):
    """What the last import read for a student from the SIS behind one connection:
    ``values`` are answers keyed like the form's fields (``student_legal_first_name``,
    ``birth_date`` ...), after the Import Student Mapping and its Overwrite rule. They
    pre-fill the student's next registration (``sync.imports.profiles``).
    ``connection`` is the link scope (as ``SisLink.connection``)."""

    organization = ForeignKeyField(Organization, backref="student_profiles", on_delete="CASCADE")
    student = ForeignKeyField(Student, backref="profiles", on_delete="CASCADE")
    connection = ForeignKeyField(SyncConnection, backref="student_profiles", on_delete="CASCADE")
    sis_id = CharField()
    school_number = CharField(null=True)
    values = JSONText(default=dict)
    imported_at = DateTimeField(default=utcnow)
    #: the import job that last changed it
    job_id = IntegerField(null=True)

    class Meta:
        indexes = ((("student", "connection"), True),)


class ImportState(BaseModel):
    """A connection's imports: the daily schedule and the change marker of the last
    complete import (the next one reads only what changed since, when the SIS can tell)."""

    organization = ForeignKeyField(Organization, on_delete="CASCADE")
    connection = ForeignKeyField(SyncConnection, backref="import_state", on_delete="CASCADE", unique=True)
    #: "HH:MM" in the server's local time; None: no scheduled import
    daily_at = CharField(null=True)
    #: the local day ("YYYY-MM-DD") the schedule last started an import
    last_scheduled_on = CharField(null=True)
    marker = TextField(null=True)
    marker_at = DateTimeField(null=True)
    #: the SIS's import fields (``SISAdapter.import_fields``), kept like ``SyncConnection.fields_cache``
    fields_cache = JSONText(null=True)
    fields_cached_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)
    updated_by = ForeignKeyField(User, null=True, on_delete="SET NULL")


# --------------------------------------------------------------------------- mapping

class Mapping(BaseModel):
    """A connection's Export Student Mapping: rows + examples (see docs/architecture.md)."""

    connection = ForeignKeyField(SyncConnection, backref="mappings", on_delete="CASCADE")
    kind = CharField(default="export_student")
    rows = JSONText(default=list)
    registration_examples = JSONText(default=list)
    student_examples = JSONText(default=list)
    version = IntegerField(default=1)
    updated_at = DateTimeField(default=utcnow)
    updated_by = ForeignKeyField(User, null=True, on_delete="SET NULL")

    class Meta:
        indexes = ((("connection", "kind"), True),)


class MappingVersion(BaseModel):
    """The rows of one saved version of a mapping (``mapping_versions``)."""

    mapping = ForeignKeyField(Mapping, backref="versions", on_delete="CASCADE")
    version = IntegerField()
    rows = JSONText(default=list)
    saved_at = DateTimeField(default=utcnow)
    saved_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
    note = CharField(null=True)

    class Meta:
        indexes = ((("mapping", "version"), True),)


# --------------------------------------------------------------------------- sync jobs

JOB_QUEUED = "Queued"
JOB_RUNNING = "Running"
JOB_DONE = "Completed"
JOB_FAILED = "Failed"
JOB_CANCELLED = "Cancelled"
#: created but waiting for a second person's approval (no worker runs it)
JOB_HELD = "Held"
ACTIVE_JOB_STATUSES = (JOB_QUEUED, JOB_RUNNING)
#: jobs Cancel sync may stop: the active ones and those held for approval (which no worker runs)
CANCELLABLE_JOB_STATUSES = ACTIVE_JOB_STATUSES + (JOB_HELD,)
#: what started a job
JOB_BULK, JOB_RETRY, JOB_TEST = "bulk", "retry", "test"
#: import jobs (SIS -> Enroll): the preview writes nothing but its report
JOB_IMPORT, JOB_IMPORT_PREVIEW = "import", "import preview"
IMPORT_JOB_KINDS = (JOB_IMPORT, JOB_IMPORT_PREVIEW)


class SyncJob(BaseModel):
    organization = ForeignKeyField(Organization, backref="jobs", on_delete="CASCADE")
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
    kind = CharField(default="bulk")  # bulk | retry | test
    retry_of = ForeignKeyField("self", null=True, on_delete="SET NULL")
    status = CharField(default=JOB_QUEUED, index=True)
    total = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    heartbeat_at = DateTimeField(null=True)
    message = TextField(null=True)
    #: registrations whose student already has an SIS id (the sync would update them),
    #: counted when the job was created while the district had a limit
    would_update = IntegerField(null=True)
    #: the district's limit in force when the job was held (None: not held)
    hold_limit = IntegerField(null=True)
    approved_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="approved_jobs")
    approved_at = DateTimeField(null=True)
    #: how many tasks the job was planned with (recovery keeps that many running)
    planned_tasks = IntegerField(null=True)


class SyncTask(BaseModel):
    """One task running a job right now (a worker thread). Its heartbeat says it is alive;
    recovery counts the live ones to bring a job back to ``SyncJob.planned_tasks``."""

    job = ForeignKeyField(SyncJob, backref="tasks", on_delete="CASCADE")
    token = CharField(unique=True)
    started_at = DateTimeField(default=utcnow)
    heartbeat_at = DateTimeField(default=utcnow, index=True)


class SyncItem(BaseModel):
    """One registration in one job: its attempt, payload sent and the SIS's answer."""

    job = ForeignKeyField(SyncJob, backref="items", on_delete="CASCADE")
    registration = ForeignKeyField(Registration, backref="sync_items", on_delete="CASCADE")
    connection = ForeignKeyField(SyncConnection, null=True, on_delete="SET NULL")
    status = CharField(default=SYNC_PENDING, index=True)
    reason = TextField(null=True)
    action = CharField(null=True)
    sis_id = CharField(null=True)
    sent = JSONText(null=True)
    response = JSONText(null=True)
    errors = JSONText(null=True)
    #: the version of the connection's mapping the record was mapped with
    mapping_version = IntegerField(null=True)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("job", "status"), False),)


#: what an import made of one SIS student (beside SKIPPED and SYNC_FAILED)
IMPORT_CREATED = "Created"
IMPORT_UPDATED = "Updated"
IMPORT_UNCHANGED = "Unchanged"
IMPORT_CONFLICT = "Conflict"
IMPORT_STATUSES = (IMPORT_CREATED, IMPORT_UPDATED, IMPORT_UNCHANGED, IMPORT_CONFLICT, SKIPPED, SYNC_FAILED)


class ImportRun(BaseModel):
    """The import side of a SyncJob of kind "import" or "import preview": which
    connection, where the reading stands (``cursor``, stored with each recorded page, so
    an interrupted import resumes without reading a page twice), the change marker it
    read from (``since``) and the one it will keep (``marker``)."""

    job = ForeignKeyField(SyncJob, backref="import_run", on_delete="CASCADE", unique=True)
    connection = ForeignKeyField(SyncConnection, on_delete="CASCADE")
    #: a preview: every outcome is worked out and reported, nothing else is written
    preview = BooleanField(default=False)
    #: the preview this import was started from
    from_preview = ForeignKeyField(SyncJob, null=True, on_delete="SET NULL", backref="imports_started")
    scheduled = BooleanField(default=False)
    since = TextField(null=True)
    cursor = TextField(null=True)
    marker = TextField(null=True)
    pages = IntegerField(default=0)
    #: pages that failed in a row (after the transport's own retries)
    failures = IntegerField(default=0)
    mapping_version = IntegerField(null=True)
    #: the task running the job (a task whose lease was taken over stops at its next page)
    lease = CharField(null=True)


class ImportItem(BaseModel):
    """One SIS student in one import job: what was (or would be) done and why."""

    job = ForeignKeyField(SyncJob, backref="import_items", on_delete="CASCADE")
    sis_id = CharField()
    student = ForeignKeyField(Student, null=True, on_delete="SET NULL")
    status = CharField()
    reason = TextField(null=True)
    matched_by = CharField(null=True)
    name = CharField(default="")
    school = CharField(null=True)
    match_key = CharField(null=True)
    #: Enroll field key -> [value before, value after] (None: blank)
    changes = JSONText(null=True)
    finished_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("job", "sis_id"), True), (("job", "status"), False), (("job", "match_key"), False),
                   (("job", "student"), False))


class AuditLog(BaseModel):
    organization = ForeignKeyField(Organization, backref="audit", on_delete="CASCADE")
    user = ForeignKeyField(User, null=True, on_delete="SET NULL")
    action = CharField()
    object_type = CharField()
    object_id = CharField(null=True)
    details = JSONText(default=dict)
    at = DateTimeField(default=utcnow, index=True)


class SchemaVersion(BaseModel):
    """Which numbered migrations have run."""

    version = IntegerField(primary_key=True)
    name = CharField()
    applied_at = DateTimeField(default=utcnow)


ALL_MODELS = [Organization, User, LoginThrottle, SyncConnection, School, FormField, Student,
              Registration, SisLink, StudentProfile, ImportState, Mapping, MappingVersion, SyncJob, SyncTask,
              SyncItem, ImportRun, ImportItem, AuditLog]
