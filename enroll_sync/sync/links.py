"""The SIS link of a student on a connection: the one home of "which record in this
SIS is this student".

A student meets many SISs (a Sandbox and a Production connection, a PowerSchool and
an Ed-Fi one, a SIS restored from a backup), so an id is never a column of the
student: it is a ``SisLink`` of (student, connection). Insert vs update, the Dry run,
Send Record, Retry and the registration page all read the link of the connection the
record is going to.

Connections share links only when an admin says they point at the same SIS
(``SyncConnection.shares_links_with``); their links are then stored under that
connection (``link_scope``). A link whose connection is unknown (kept from before
links existed) is shown, never used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from peewee import JOIN

from ..db import executemany, table

from ..models import (LINK_INSERTED, LINK_MATCHED, LINK_RELINKED, LINK_UNKNOWN, Registration, SisLink, Student, SyncConnection, User, utcnow)


def link_scope(conn: SyncConnection | None) -> int | None:
    """The connection id the links of ``conn`` are stored under."""
    if conn is None:
        return None
    return conn.shares_links_with_id or conn.id


def scope_of(conn_id: int | None) -> int | None:
    """``link_scope`` from a connection id (one small query)."""
    if conn_id is None:
        return None
    row = (SyncConnection.select(SyncConnection.id, SyncConnection.shares_links_with)
           .where(SyncConnection.id == conn_id).tuples().first())
    return None if row is None else (row[1] or row[0])


def sis_id_for(student_id: int, conn: SyncConnection | None) -> str | None:
    """The student's id in the SIS behind ``conn``, or None (the export is then an insert)."""
    scope = link_scope(conn)
    if scope is None:
        return None
    row = (SisLink.select(SisLink.sis_id)
           .where((SisLink.student == student_id) & (SisLink.connection == scope)).tuples().first())
    return row[0] if row else None


def sis_ids_for(student_ids: Iterable[int], scope: int | None) -> dict[int, str]:
    """student id -> SIS id for the students linked in ``scope`` (one query)."""
    ids = list(set(student_ids))
    if scope is None or not ids:
        return {}
    out: dict[int, str] = {}
    for start in range(0, len(ids), 900):
        chunk = ids[start:start + 900]
        out.update(SisLink.select(SisLink.student, SisLink.sis_id)
                   .where(SisLink.student.in_(chunk) & (SisLink.connection == scope)).tuples())
    return out


@dataclass(frozen=True)
class LinkChange:
    """A link to write: ``student_id`` is ``sis_id`` in the SIS of ``scope``, made ``how``."""

    organization_id: int
    student_id: int
    scope: int
    sis_id: str
    how: str
    item_id: int | None = None
    user_id: int | None = None


def record_links(changes: list[LinkChange]) -> None:
    """Create or replace links (inside the caller's transaction). A link that already
    says the same id is left as it is (its "how" and "when" stay those of its making)."""
    if not changes:
        return
    now = utcnow()
    by_key = {(c.student_id, c.scope): c for c in changes}
    existing = {}
    students = list({c.student_id for c in changes})
    for start in range(0, len(students), 900):
        chunk = students[start:start + 900]
        for sid, scope, value in (SisLink.select(SisLink.student, SisLink.connection, SisLink.sis_id)
                                  .where(SisLink.student.in_(chunk) & SisLink.connection.is_null(False)).tuples()):
            existing[(sid, scope)] = value
    fresh = []
    for key, c in sorted(by_key.items()):
        if key not in existing:
            fresh.append(dict(organization=c.organization_id, student=c.student_id, connection=c.scope,
                              sis_id=c.sis_id, how=c.how, linked_at=now, linked_by=c.user_id,
                              sync_item_id=c.item_id))
        elif existing[key] != c.sis_id:
            SisLink.update(sis_id=c.sis_id, how=c.how, linked_at=now, linked_by=c.user_id,
                           sync_item_id=c.item_id).where(
                (SisLink.student == c.student_id) & (SisLink.connection == c.scope)).execute()
    # one prepared INSERT run for every new link (building a 500-row peewee insert costs
    # more than the rest of recording a batch)
    executemany(f'INSERT INTO {table(SisLink)} ("organization_id", "student_id", "connection_id", "sis_id", "how", '
                f'"linked_at", "linked_by_id", "sync_item_id") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                [(f["organization"], f["student"], f["connection"], f["sis_id"], f["how"], f["linked_at"],
                  f["linked_by"], f["sync_item_id"]) for f in fresh])


def record_link(conn: SyncConnection, student_id: int, sis_id: str, how: str, *, item_id: int | None = None,
                user_id: int | None = None) -> None:
    record_links([LinkChange(conn.organization_id, student_id, link_scope(conn), str(sis_id), how, item_id,
                             user_id)])


def how_linked(result, sent_sis_id: str | None, relinked_from: str | None = None) -> str:
    """How an answer the SIS holds (``result.ok``) links the student: ``relinked`` after
    the SIS no longer had ``relinked_from``, ``matched`` when match-before-insert found
    them (or an update answered with the id already linked), ``inserted`` for a new SIS
    record."""
    if relinked_from or (sent_sis_id and result.sis_id and str(result.sis_id) != sent_sis_id):
        return LINK_RELINKED
    if result.matched_by or sent_sis_id:
        return LINK_MATCHED
    return LINK_INSERTED if (result.action or "insert") == "insert" else LINK_MATCHED


def forget_gone(student_id: int, scope: int, gone_sis_id: str) -> None:
    """The SIS said it no longer has ``gone_sis_id``: that link goes (nothing in the SIS changes)."""
    SisLink.delete().where((SisLink.student == student_id) & (SisLink.connection == scope)
                           & (SisLink.sis_id == gone_sis_id)).execute()


def unlink(link: SisLink) -> None:
    """Forget a link. Nothing in the SIS changes: the next sync through that connection
    matches the student again before inserting."""
    link.delete_instance()


# --------------------------------------------------------------------------- reading for people

@dataclass
class LinkView:
    link: SisLink
    connection: SyncConnection | None
    sharers: list[str]
    linked_by: User | None

    @property
    def usable(self) -> bool:
        return self.connection is not None and self.link.how != LINK_UNKNOWN


def links_of_student(student_id: int) -> list[LinkView]:
    """Every link of a student, with its connection (or None) and who set it."""
    Sharer = SyncConnection.alias()
    links = list(SisLink.select(SisLink, SyncConnection, User)
                 .join(SyncConnection, JOIN.LEFT_OUTER, on=(SisLink.connection == SyncConnection.id))
                 .switch(SisLink).join(User, JOIN.LEFT_OUTER, on=(SisLink.linked_by == User.id))
                 .where(SisLink.student == student_id).order_by(SisLink.linked_at.desc(), SisLink.id.desc()))
    scopes = [lk.connection_id for lk in links if lk.connection_id]
    sharers: dict[int, list[str]] = {}
    if scopes:
        for name, scope in (Sharer.select(Sharer.name, Sharer.shares_links_with)
                            .where(Sharer.shares_links_with.in_(scopes)).tuples()):
            sharers.setdefault(scope, []).append(name)
    return [LinkView(lk, lk.connection if lk.connection_id else None, sharers.get(lk.connection_id, []),
                     lk.linked_by if lk.linked_by_id else None) for lk in links]


def unknown_link_count(org_id: int) -> int:
    """Links kept from before per-connection links whose connection nobody knows."""
    return SisLink.select().where((SisLink.organization == org_id) & SisLink.connection.is_null()).count()


CSV_HEADER = ["SchoolMint ID", "Student", "Connection", "SIS ID", "How", "Linked (UTC)"]


def links_csv_rows(org_id: int) -> Iterator[list]:
    """Every link of the district, one row each (streamed), student by student."""
    q = (SisLink.select(SisLink.sis_id, SisLink.how, SisLink.linked_at, Student.schoolmint_id, Student.first_name,
                        Student.last_name, SyncConnection.name)
         .join(Student, on=(SisLink.student == Student.id))
         .switch(SisLink).join(SyncConnection, JOIN.LEFT_OUTER, on=(SisLink.connection == SyncConnection.id))
         .where(SisLink.organization == org_id).order_by(Student.schoolmint_id, SisLink.id).tuples())
    for sis_id, how, at, sm_id, first, last, conn_name in q.iterator():
        yield [sm_id, f"{last}, {first}".strip(", "), conn_name or "(unknown)", sis_id, how,
               at.strftime("%Y-%m-%d %H:%M:%S") if at else ""]


def students_by_sis_id(org_id: int, sis_id: str, scope: int | None = None) -> list[int]:
    """Students linked to ``sis_id`` (in ``scope`` when given, else in any connection)."""
    q = SisLink.select(SisLink.student).where((SisLink.organization == org_id) & (SisLink.sis_id == str(sis_id)))
    if scope is not None:
        q = q.where(SisLink.connection == scope)
    return [sid for (sid,) in q.tuples()]


def registration_ids_with_sis_id(org_id: int, sis_id: str):
    """A sub-select of registrations whose student is linked to ``sis_id`` anywhere (search)."""
    return (Registration.select(Registration.id)
            .join(SisLink, on=(SisLink.student == Registration.student))
            .where((SisLink.organization == org_id) & (SisLink.sis_id == sis_id)))


__all__ = ["link_scope", "scope_of", "sis_id_for", "sis_ids_for", "LinkChange", "record_links", "record_link",
           "unlink", "how_linked", "forget_gone", "LinkView", "links_of_student", "unknown_link_count", "CSV_HEADER", "links_csv_rows",
           "students_by_sis_id", "registration_ids_with_sis_id"]
