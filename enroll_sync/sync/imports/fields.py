"""The two sides of an Import Student Mapping.

From: the SIS's fields (``SISAdapter.import_fields``), cached per connection in
``ImportState.fields_cache`` like the export's target fields (Refresh fields reads them
again). To: Enroll's student fields, the organization's registration form by section
plus SchoolMint ID (a key for matching, never an answer).
"""
from __future__ import annotations

from ...adapters import AdapterError, FieldSection, TargetField, can_import, sections_from_dicts, sections_to_dicts
from ...catalog import Catalog
from ...models import FormField, ImportState, SyncConnection, utcnow

#: To Field keys of an import that are not answers: used to match and to choose the
#: students of the connection's schools, never stored as answers
SCHOOLMINT_ID = "student.schoolmint_id"
SCHOOL_NUMBER = "school.school_number"
SYSTEM_KEYS = (SCHOOLMINT_ID, SCHOOL_NUMBER)
FIRST_NAME, LAST_NAME, BIRTH_DATE = "student_legal_first_name", "student_legal_last_name", "birth_date"
#: what a new Enroll student cannot be created without
REQUIRED = (FIRST_NAME, LAST_NAME)
ENROLL_DATE_FORMAT = "MM/DD/YYYY"


def enroll_targets(conn: SyncConnection) -> list[FieldSection]:
    """Enroll's student fields as To Fields: each form field (choice answers as codes, so
    Match Codes offers them; dates as text in the form's MM/DD/YYYY) by form section,
    then SchoolMint ID."""
    sections: dict[str, list[TargetField]] = {}
    for f in (FormField.select().where(FormField.organization == conn.organization_id)
              .order_by(FormField.position, FormField.id)):
        options = tuple(str(o) for o in (f.options or ()) if str(o).strip())
        kind, codes, fmt, help_ = "string", (), None, ""
        if f.type in ("choice", "yesno") and options:
            from ...adapters import Code
            kind, codes = "code", tuple(Code(o, o) for o in dict.fromkeys(options))
        elif f.type == "date":
            fmt = ENROLL_DATE_FORMAT
            help_ = "Enroll keeps dates as MM/DD/YYYY: map an SIS date with a Date transformation."
        elif f.type == "number":
            kind = "number"
        if f.key in REQUIRED:
            help_ = "Needed to create a new Enroll student."
        sections.setdefault(f.section, []).append(TargetField(
            key=f.key, label=f.label, type=kind, required=f.key in REQUIRED, codes=codes, format=fmt,
            help=help_))
    out = [FieldSection(_section_key(name), name, tuple(fields)) for name, fields in sections.items()]
    from ...adapters import Code
    from ...models import School
    schools = tuple(Code(str(n), f"{n} {name}") for n, name in School.select(School.school_number, School.name)
                    .where(School.organization == conn.organization_id).order_by(School.school_number).tuples())
    out.append(FieldSection("student", "Enroll student record", (
        TargetField(SCHOOLMINT_ID, "SchoolMint ID",
                    help="Matches the SIS student to the Enroll student with this SchoolMint ID; a student the "
                         "import creates gets it as their SchoolMint ID."),
        TargetField(SCHOOL_NUMBER, "School Number", "code" if schools else "string", codes=schools,
                    help="The Enroll school the SIS student is at (Match Codes from the SIS's school numbers). "
                         "Unmapped: the SIS's own school number. Only students of the schools assigned to this "
                         "connection are imported."),
    )))
    return out


def _section_key(name: str) -> str:
    return "enroll." + "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def import_state(conn: SyncConnection) -> ImportState:
    """The connection's ImportState row (created on first use)."""
    state = ImportState.get_or_none(ImportState.connection == conn.id)
    if state is None:
        ImportState.insert(organization=conn.organization_id, connection=conn.id,
                           updated_at=utcnow()).on_conflict_ignore().execute()
        state = ImportState.get(ImportState.connection == conn.id)
    return state


def sis_sources(conn: SyncConnection, refresh: bool = False, app=None) -> list[FieldSection]:
    """The SIS's import fields (From), cached on the connection's ImportState. Raises
    AdapterError when the SIS cannot be imported from or the fields cannot be read."""
    from ..connections import adapter_class, open_adapter
    state = import_state(conn)
    fresh = state.fields_cached_at is not None and conn.updated_at is not None and \
        state.fields_cached_at >= conn.updated_at
    if state.fields_cache and fresh and not refresh:
        return sections_from_dicts(state.fields_cache)
    if not can_import(adapter_class(conn.adapter, app)):
        raise AdapterError(f"{conn.name}'s SIS type cannot be imported from.")
    sections = open_adapter(conn, app).import_fields()
    if not sections:
        raise AdapterError(f"{conn.name}'s SIS offers no fields to import.")
    now = utcnow()
    ImportState.update(fields_cache=sections_to_dicts(sections), fields_cached_at=now).where(
        ImportState.id == state.id).execute()
    return sections


def sections_catalog(sections: list[FieldSection]) -> Catalog:
    """SIS fields as the editor's From list (the shape ``catalog.load_catalog`` gives the form)."""
    groups, labels, options, entries = [], {}, {}, []
    for s in sections:
        items = []
        for f in s.fields:
            if f.key in labels:
                continue
            label = f"{s.label}: {f.label}" if f.label and s.label and f.label != s.label else (f.label or f.key)
            items.append((f.key, label))
            labels[f.key] = label
            options[f.key] = [c.value for c in f.codes]
            entries.append({"key": f.key, "label": label, "type": f.type, "options": options[f.key]})
        if items:
            groups.append((s.label, items))
    return Catalog(groups=groups, labels=labels, options=options, entries=entries)


__all__ = ["SCHOOLMINT_ID", "SCHOOL_NUMBER", "SYSTEM_KEYS", "FIRST_NAME", "LAST_NAME", "BIRTH_DATE", "REQUIRED", "enroll_targets", "sis_sources",
           "sections_catalog", "import_state"]
