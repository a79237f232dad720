"""Versions of a connection's mapping, and moving a mapping between connections.

Every save that changes a mapping's rows makes a new version, and the rows of each
version are kept (``MappingVersion``), so an admin can see what changed, restore an
older version, and tell which version a sync sent each record with (the job stores
the version on every ``SyncItem``). A mapping can be downloaded as a JSON document and
imported into another connection of the same SIS type: the usual way from a Sandbox
connection to its Production twin.

Rows that come from outside (a document, a form's hidden stash) are cleaned piece by
piece with ``clean_row``/``clean_row_parts``: only the keys and types the editor
writes survive, so nothing malformed reaches the engine or a page.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ...db import database
from ...mapping.codes import UNMATCHED_POLICIES
from ...mapping.engine import MAPPING_TYPES
from ...models import Mapping, MappingVersion, SyncConnection, utcnow

#: what a downloaded mapping document says it is
DOCUMENT_FORMAT = "enroll-sync/mapping"
DOCUMENT_VERSION = 1
#: the largest mapping document accepted (a 300-row mapping is about 100 kB)
MAX_DOCUMENT_BYTES = 2 * 1024 * 1024


class MappingImportError(ValueError):
    """A mapping document that cannot be imported; ``str()`` says why, for the admin."""


def canonical(rows: Any) -> str:
    return json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


# --------------------------------------------------------------------------- cleaning rows

def clean_row_parts(data: dict) -> dict:
    """The Match Codes and Transformation parts of a row (``codes``, ``unmatched``,
    ``fallback``, ``steps``), each kept only when it has the type the editor writes."""
    out: dict[str, Any] = {}
    codes = data.get("codes")
    if isinstance(codes, dict):
        out["codes"] = {str(a): str(c) for a, c in codes.items()
                        if isinstance(c, (str, int, float)) and not isinstance(c, bool)}
    unmatched = data.get("unmatched")
    if isinstance(unmatched, str) and unmatched in dict(UNMATCHED_POLICIES):
        out["unmatched"] = unmatched
    if isinstance(data.get("fallback"), str):
        out["fallback"] = data["fallback"]
    steps = data.get("steps")
    if isinstance(steps, list):
        out["steps"] = [dict(s) for s in steps if isinstance(s, dict) and isinstance(s.get("kind"), str)]
    return out


def clean_row(row: Any) -> dict | None:
    """A saved row as the editor would write it, or None when it is not one."""
    if not isinstance(row, dict) or not isinstance(row.get("to"), str) or not row["to"].strip():
        return None
    kind = row.get("type")
    if not isinstance(kind, str) or kind not in dict(MAPPING_TYPES):
        return None
    out: dict[str, Any] = {"to": row["to"].strip(), "type": kind}
    if isinstance(row.get("from"), str) and row["from"].strip():
        out["from"] = row["from"].strip()
    out.update(clean_row_parts(row))
    return out


# --------------------------------------------------------------------------- saving and history

def save_rows(conn: SyncConnection, kind: str, mapping: Mapping | None, rows: list[dict], user_id: int | None,
              note: str | None = None) -> tuple[Mapping, bool]:
    """Store ``rows`` as the mapping's next version (kept in its history). Returns
    (mapping, changed); saving the same rows again changes nothing."""
    with database.atomic():
        if mapping is None:
            mapping = Mapping.create(connection=conn, kind=kind, rows=rows, version=1, updated_by=user_id)
        elif canonical(rows) == canonical(mapping.rows or []):
            return mapping, False
        else:
            Mapping.update(rows=rows, version=Mapping.version + 1, updated_at=utcnow(),
                           updated_by=user_id).where(Mapping.id == mapping.id).execute()
            mapping = Mapping.get_by_id(mapping.id)
        MappingVersion.create(mapping=mapping, version=mapping.version, rows=rows, saved_by=user_id, note=note)
    return mapping, True


@dataclass
class Changes:
    """What one version changed against the one before it, by To Field."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    @property
    def summary(self) -> str:
        parts = [f"{len(self.added)} added"] if self.added else []
        parts += [f"{len(self.changed)} changed"] if self.changed else []
        parts += [f"{len(self.removed)} removed"] if self.removed else []
        return ", ".join(parts) or "no row changed"


def changes(before: Iterable[dict], after: Iterable[dict]) -> Changes:
    old = {r["to"]: canonical(r) for r in before if isinstance(r, dict) and "to" in r}
    new = {r["to"]: canonical(r) for r in after if isinstance(r, dict) and "to" in r}
    return Changes(added=sorted(set(new) - set(old)), removed=sorted(set(old) - set(new)),
                   changed=sorted(k for k in set(old) & set(new) if old[k] != new[k]))


@dataclass
class HistoryEntry:
    version: MappingVersion
    changes: Changes
    current: bool


def history(mapping: Mapping | None) -> list[HistoryEntry]:
    """The mapping's versions, newest first, each with what it changed."""
    if mapping is None:
        return []
    versions = list(MappingVersion.select().where(MappingVersion.mapping == mapping.id)
                    .order_by(MappingVersion.version))
    out, before = [], []
    for v in versions:
        out.append(HistoryEntry(v, changes(before, v.rows or []), v.version == mapping.version))
        before = v.rows or []
    return out[::-1]


def get_version(mapping: Mapping | None, version: int) -> MappingVersion | None:
    if mapping is None:
        return None
    return MappingVersion.get_or_none((MappingVersion.mapping == mapping.id) & (MappingVersion.version == version))


# --------------------------------------------------------------------------- documents

def document(conn: SyncConnection, kind: str, rows: list[dict], version: int | None) -> dict:
    """A mapping as a JSON document another connection can import."""
    return {"format": DOCUMENT_FORMAT, "format_version": DOCUMENT_VERSION, "kind": kind,
            "adapter": conn.adapter, "connection": conn.name, "mapping_version": version,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "rows": rows}


@dataclass
class ImportedRows:
    rows: list[dict]
    unknown_fields: list[str]
    unreadable: int
    source: str


def read_document(data: bytes, conn: SyncConnection, kind: str, target_keys: Callable[[], set[str]],
                  adapter_label: str = "") -> ImportedRows:
    """The rows of a downloaded mapping document, for ``conn``. Raises MappingImportError
    (a message for the admin) when the file is not such a document or is for another SIS
    type or mapping; rows for To Fields this SIS does not have (``target_keys()``, asked
    only once the document is known to fit) are left out and listed."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise MappingImportError(f"The file is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB; a mapping "
                                 f"document is far smaller.")
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        raise MappingImportError("The file is not a mapping document (JSON) downloaded from Enroll Sync.") from None
    if not isinstance(doc, dict) or doc.get("format") != DOCUMENT_FORMAT:
        raise MappingImportError("The file is JSON, but not a mapping downloaded from Enroll Sync "
                                 "(use Download on the History tab of another connection).")
    if doc.get("format_version") != DOCUMENT_VERSION:
        raise MappingImportError(f"The file is a mapping document of format version "
                                 f"{doc.get('format_version')!r}; this Enroll Sync reads version {DOCUMENT_VERSION}.")
    if doc.get("adapter") != conn.adapter:
        raise MappingImportError(f"The file holds a mapping for a {doc.get('adapter')!s} connection; "
                                 f"{conn.name} is {adapter_label or conn.adapter}. Only a mapping for the same "
                                 f"SIS type can be imported.")
    if doc.get("kind") != kind:
        raise MappingImportError(f"The file holds a {doc.get('kind')!s} mapping, not {kind}.")
    raw_rows = doc.get("rows")
    if not isinstance(raw_rows, list):
        raise MappingImportError("The file has no list of rows.")
    keys = target_keys()
    rows, unknown, unreadable, seen = [], [], 0, set()
    for raw in raw_rows:
        row = clean_row(raw)
        if row is None:
            unreadable += 1
            continue
        if row["to"] in seen:
            continue
        seen.add(row["to"])
        if row["type"] == "do_not_map":
            continue  # absence means Do Not Map
        if row["to"] not in keys:
            unknown.append(row["to"])
            continue
        rows.append(row)
    source = str(doc.get("connection") or "another connection")
    return ImportedRows(rows=rows, unknown_fields=sorted(unknown), unreadable=unreadable, source=source)
