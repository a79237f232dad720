"""Recovery that restores parallelism: ``synctask`` (one row per task running a job, with
its heartbeat) and ``syncjob.planned_tasks`` (how many tasks the job was planned with).
Recovery counts the live tasks of each job and enqueues the missing ones, so a job whose
workers died (some or all) runs as wide again as it was planned."""
from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model

from . import add_column_if_missing


def up(db, migrator):
    class SyncJob(Model):
        class Meta:
            database = db
            table_name = "syncjob"

    class SyncTask(Model):
        job = ForeignKeyField(SyncJob, on_delete="CASCADE")
        token = CharField(unique=True)
        started_at = DateTimeField()
        heartbeat_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "synctask"

    add_column_if_missing(db, migrator, "syncjob", "planned_tasks", IntegerField(null=True))
    db.create_tables([SyncTask], safe=True)
