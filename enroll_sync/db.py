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
        return connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
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
