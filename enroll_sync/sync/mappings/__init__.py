"""A connection's mapping of a kind: the one home of that concept.

A connection has one mapping per **kind** (``KINDS``): Export Student today;
Export Contact and Import Student register here too. Everything that reads a saved
mapping — the Field Mapping editor, Send Record, the Dry run and the job runner —
goes through this package:

- ``load(conn, kind)``: the saved ``Mapping`` row (rows, examples, version);
- ``compile_rows(conn, rows, ...)``: rows compiled with the step registry against
  the SIS's fields and the organization's form catalog;
- ``check_connection(conn, app)``: whether a connection's records can be sent, with
  the compiled mapping (``ConnectionCheck``), and ``mapping_stamp`` to know when a
  compiled mapping is out of date;
- ``versions``: every save kept, what each changed, documents to move a mapping
  between connections; ``examples``: the Configure tab's Registration and Student
  Examples.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from flask import current_app

from ...adapters import AdapterError, FieldSection
from ...catalog import source_field_keys
from ...mapping import ERROR, compile_mapping
from ...mapping.engine import CompiledMapping
from ...models import Mapping, SyncConnection
from .versions import save_rows

log = logging.getLogger("enroll_sync.sync")


# --------------------------------------------------------------------------- the kinds

@dataclass(frozen=True)
class MappingKind:
    """One kind of mapping a connection can have (a left-sidebar entry)."""

    key: str
    label: str
    #: "export": Enroll -> SIS; "import": SIS -> Enroll
    direction: str
    #: the To Fields of this kind for a connection: (conn, app, refresh) -> sections
    targets: Callable[..., list[FieldSection]]


def _student_targets(conn, app=None, refresh: bool = False) -> list[FieldSection]:
    from ..connections import target_sections
    return target_sections(conn, refresh=refresh, app=app)


EXPORT_STUDENT = "export_student"

KINDS: dict[str, MappingKind] = {}


def register_kind(kind: MappingKind) -> MappingKind:
    KINDS[kind.key] = kind
    return kind


register_kind(MappingKind(EXPORT_STUDENT, "Export Student Mapping", "export", _student_targets))


def get_kind(key: str) -> MappingKind | None:
    return KINDS.get(key)


# --------------------------------------------------------------------------- load and compile

def load(conn: SyncConnection, kind: str = EXPORT_STUDENT) -> Mapping | None:
    """The saved mapping of ``kind`` of ``conn`` (None before the first save)."""
    return Mapping.get_or_none((Mapping.connection == conn.id) & (Mapping.kind == kind))


def mapped_rows(mapping: Mapping | None) -> list[dict]:
    """The rows of ``mapping`` that send something (not Do Not Map)."""
    return [r for r in (mapping.rows if mapping else []) or []
            if isinstance(r, dict) and r.get("type") not in (None, "", "do_not_map")]


def step_classes(app=None) -> dict:
    return (app or current_app).extensions["enroll_sync.steps"]


def compile_rows(conn: SyncConnection, rows: Iterable[dict], sections: list[FieldSection] | None = None,
                 kind: str = EXPORT_STUDENT, app=None, source_fields: Iterable[str] | None = None
                 ) -> CompiledMapping:
    """``rows`` compiled against the SIS's fields of ``kind`` (read when not given),
    the step registry and the organization's form catalog."""
    if sections is None:
        sections = KINDS[kind].targets(conn, app)
    if source_fields is None:
        source_fields = source_field_keys(conn.organization_id)
    return compile_mapping(list(rows or ()), sections, step_classes(app), source_fields=source_fields)


def mapping_stamp(conn_id: int, kind: str = EXPORT_STUDENT):
    """What identifies the saved mapping's current state (a compiled copy is stale when it changes)."""
    row = (Mapping.select(Mapping.id, Mapping.version, Mapping.updated_at)
           .where((Mapping.connection == conn_id) & (Mapping.kind == kind)).first())
    return None if row is None else (row.id, row.version, row.updated_at)


def save_examples(conn: SyncConnection, kind: str, registrations: list[str], students: list[str],
                  user_id: int | None) -> Mapping:
    """Keep the Configure tab's examples (a mapping saved with examples only is version 0:
    version 1 is the first save of rows)."""
    from ...db import database
    from ...models import utcnow
    with database.atomic():
        mapping = load(conn, kind) or Mapping.create(connection=conn, kind=kind, version=0)
        mapping.registration_examples, mapping.student_examples = registrations, students
        mapping.updated_at, mapping.updated_by = utcnow(), user_id
        mapping.save()
    return mapping


# --------------------------------------------------------------------------- readiness

@dataclass
class ConnectionCheck:
    """Whether a connection's records can be sent, and its compiled mapping."""

    connection: SyncConnection
    problem: str | None = None
    compiled: Any = None
    version: tuple | None = None

    @property
    def mapping_version(self) -> int | None:
        return self.version[1] if self.version else None


def check_connection(conn: SyncConnection, app, source_fields: Iterable[str] | None = None,
                     kind: str = EXPORT_STUDENT) -> ConnectionCheck:
    """Compile ``conn``'s mapping of ``kind`` against its target fields.

    ``problem`` says why nothing can be sent through it: no mapping, required SIS
    fields left unmapped, rows that are wrong, or fields that could not be loaded.
    """
    mapping = load(conn, kind)
    stamp = None if mapping is None else (mapping.id, mapping.version, mapping.updated_at)
    label = KINDS[kind].label
    if not mapped_rows(mapping):
        return ConnectionCheck(conn, f"{conn.name} has no {label} yet.", version=stamp)
    try:
        sections = KINDS[kind].targets(conn, app)
    except (AdapterError, ValueError) as exc:
        return ConnectionCheck(conn, f"The SIS fields of {conn.name} could not be loaded: {exc}", version=stamp)
    except Exception:  # an adapter bug must not break a page or a job
        log.exception("target_fields of connection %s failed", conn.id)
        return ConnectionCheck(conn, f"The SIS fields of {conn.name} could not be loaded.", version=stamp)
    compiled = compile_rows(conn, mapping.rows, sections, kind, app, source_fields)
    if compiled.unmapped_required:
        labels = ", ".join(t.label or t.key for t in compiled.unmapped_required)
        return ConnectionCheck(conn, f"The mapping of {conn.name} lacks required field(s): {labels}.",
                               compiled, stamp)
    errors = [p for p in compiled.config_problems if p.severity == ERROR]
    if errors:
        shown = "; ".join(p.message for p in errors[:3]) + (" ..." if len(errors) > 3 else "")
        return ConnectionCheck(conn, f"The mapping of {conn.name} has errors: {shown}", compiled, stamp)
    return ConnectionCheck(conn, None, compiled, stamp)


def check_connections(org_id: int, app, kind: str = EXPORT_STUDENT) -> dict[int, ConnectionCheck]:
    fields = source_field_keys(org_id)
    conns = SyncConnection.select().where(SyncConnection.organization == org_id)
    return {c.id: check_connection(c, app, fields, kind) for c in conns}


__all__ = ["KINDS", "EXPORT_STUDENT", "MappingKind", "register_kind", "get_kind", "load", "mapped_rows",
           "compile_rows", "mapping_stamp", "step_classes", "ConnectionCheck", "check_connection",
           "check_connections", "save_rows", "save_examples"]
