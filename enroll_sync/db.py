"""The database handle: one peewee DatabaseProxy, initialised from a URL.

Models bind to ``database``; ``connect_url`` picks SQLite or PostgreSQL from the
URL. The web app opens a connection per request (``init_app``); workers and the CLI
use ``database.connection_context()``.
"""
from __future__ import annotations

from pathlib import Path

from peewee import DatabaseProxy
from playhouse.db_url import connect

database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "foreign_keys": 1,
    "busy_timeout": 15000,
    "synchronous": "normal",
}


def make_database(url: str):
    """A peewee Database for ``url`` (sqlite:///path, postgresql://...)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # every transaction takes the write lock as it begins: a deferred one that reads and
        # then writes fails at once with "database is locked" (busy_timeout cannot help it)
        # when another connection wrote in between, as two admins saving at once would
        return connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False, lock_type="IMMEDIATE")
    return connect(url)


def bind(url: str):
    """Point the proxy at ``url`` (closing any previous database) and return it."""
    old = database.obj
    if old is not None and not old.is_closed():
        old.close()
    db = make_database(url)
    database.initialize(db)
    return db


def is_sqlite() -> bool:
    from peewee import SqliteDatabase
    return isinstance(database.obj, SqliteDatabase)


def init_app(app):
    @app.before_request
    def _open():
        database.connect(reuse_if_open=True)

    @app.teardown_request
    def _close(exc):
        if not database.is_closed():
            database.close()


# --------------------------------------------------------------------------- dialect helpers

def write_tx():
    """A write transaction that takes the write lock up front on SQLite (no
    SQLITE_BUSY on upgrade between processes); a normal transaction elsewhere."""
    return database.atomic("IMMEDIATE") if is_sqlite() else database.atomic()


def table(model) -> str:
    """The quoted table name of ``model`` for hand-written statements."""
    return '"%s"' % model._meta.table_name


def executemany(sql: str, rows: list[tuple]) -> None:
    """Run one statement for many rows (``?`` placeholders) on the open connection."""
    if not rows:
        return
    if is_sqlite():
        database.cursor().executemany(sql, rows)
    else:
        from psycopg2.extras import execute_batch
        execute_batch(database.cursor(), sql.replace("?", "%s"), rows, page_size=250)


def execute(sql: str, params: tuple) -> None:
    """Run one statement (``?`` placeholders) on the open connection."""
    database.execute_sql(sql if is_sqlite() else sql.replace("?", "%s"), params)


def fetch(sql: str, params: tuple | list) -> list[tuple]:
    """Run one statement (``?`` placeholders; ``UPDATE ... RETURNING`` too) and return its rows."""
    return list(database.execute_sql(sql if is_sqlite() else sql.replace("?", "%s"), tuple(params)).fetchall())


def execute_values(sql: str, rows: list[tuple], template: str, page_size: int = 1000) -> None:
    """PostgreSQL only: run ``sql`` (one ``%s`` where ``VALUES`` rows go, as in
    ``UPDATE t SET ... FROM (VALUES %s) AS v(...)``) for many rows in few round trips."""
    if not rows:
        return
    from psycopg2.extras import execute_values as ev
    ev(database.cursor(), sql, rows, template=template, page_size=page_size)


def analyze() -> None:
    """Refresh the query planner's statistics after many rows arrived (migrations, an
    import, the demo). PostgreSQL's autovacuum does this by itself; SQLite never does, and
    without statistics it picks slower plans for the Registrations list. (A sampled
    ANALYZE, ``analysis_limit``, misjudges these tables: their first rows share one
    district and one school year.)"""
    if is_sqlite():
        database.execute_sql("ANALYZE")


def retrying(fn, attempts: int = 5):
    """Run a transaction, again if the database chose it as a deadlock victim or
    could not serialize it (PostgreSQL), or stayed locked too long (SQLite)."""
    import logging
    import time
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not is_retryable(exc):
                raise
            logging.getLogger("enroll_sync.db").warning(
                "retrying a transaction after: %s", str(exc).splitlines()[0] if str(exc) else exc)
            time.sleep(0.05 * (2 ** attempt))


def is_retryable(exc: BaseException) -> bool:
    """A lock, deadlock or serialization failure: the transaction may simply be run again."""
    import sqlite3

    from peewee import OperationalError
    if isinstance(exc, (OperationalError, sqlite3.OperationalError)):
        return True
    try:  # raw cursors (executemany) raise the driver's own errors
        import psycopg2
        return isinstance(exc, (psycopg2.errors.TransactionRollbackError, psycopg2.OperationalError))
    except ImportError:
        return False
