"""Auto-map: propose rows by matching Enroll field names to SIS field names.

Only confident matches are proposed: names are normalised (case, separators,
camelCase, a leading "student"/"legal", a few synonyms such as DOB -> birth date)
and a pair is proposed only when the SIS field matches exactly one Enroll field
and that Enroll field matches exactly one SIS field. Fields inside lists
(``contacts.0.first_name``) are never guessed. The admin accepts or discards the
proposals; nothing is saved here.

What is proposed: Direct; for a date SIS field a Transformation with one Date step
(auto-detect -> YYYY-MM-DD, since answers are typed as 09/01/2007); for a SIS field
with codes, Match Codes only when every choice of the Enroll field equals one of
the codes or its label (otherwise nothing).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from ..adapters import FieldSection, TargetField
from .engine import flatten_targets

__all__ = ["auto_map", "normalise_name"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_LEADING_NOISE = {"student", "students", "stu", "legal", "s", "the"}
_SYNONYMS = (
    (re.compile(r"\b(dob|birthdate|birthday|date of birth|birth day)\b"), "birth date"),
    (re.compile(r"\bsex\b"), "gender"),
    (re.compile(r"\b(zip code|zipcode|zip|postal code|postcode|postal)\b"), "postal code"),
    (re.compile(r"\b(last surname|surname|family name)\b"), "last name"),
    (re.compile(r"\b(given name)\b"), "first name"),
    (re.compile(r"\b(e mail|email address|e mail address)\b"), "email"),
    (re.compile(r"\b(telephone|phone number)\b"), "phone"),
    (re.compile(r"\b(grade level)\b"), "grade"),
)


def normalise_name(text: str) -> str:
    """"Student's Legal First Name", "student_legal_first_name", "firstName" -> "first name"."""
    s = _CAMEL.sub(" ", str(text)).lower()
    s = " ".join(_NON_ALNUM.sub(" ", s).split())
    for rx, repl in _SYNONYMS:
        s = rx.sub(repl, s)
    tokens = s.split()
    while tokens and tokens[0] in _LEADING_NOISE and len(tokens) > 1:
        tokens.pop(0)
    return " ".join(tokens)


def _catalog_entry(item: Any) -> tuple[str, str, str, list]:
    """(key, label, type, options) from a FormField-like object, a dict or a tuple."""
    if isinstance(item, str):
        return item, "", "", []
    if isinstance(item, Mapping):
        return (str(item.get("key", "")), str(item.get("label") or ""), str(item.get("type") or ""),
                list(item.get("options") or ()))
    if isinstance(item, (list, tuple)):
        if len(item) >= 5:  # enroll_sync.catalog.CATALOG: (key, label, section, type, options)
            return str(item[0]), str(item[1] or ""), str(item[3] or ""), list(item[4] or ())
        return str(item[0]), str(item[1] if len(item) > 1 else ""), "", []
    return (str(getattr(item, "key", "")), str(getattr(item, "label", "") or ""),
            str(getattr(item, "type", "") or ""), list(getattr(item, "options", None) or ()))


def _target_names(target: TargetField, section_label: str) -> set[str]:
    parts = target.key.split(".")
    if any(p.isdigit() for p in parts):
        return set()
    names = {normalise_name(parts[-1]), normalise_name(target.key)}
    if len(parts) >= 2:
        names.add(normalise_name(" ".join(parts[-2:])))
    if target.label:
        names.add(normalise_name(target.label))
        if section_label:
            names.add(normalise_name(f"{section_label} {target.label}"))
    names.discard("")
    return names


def _codes_for(options: list, target: TargetField) -> dict[str, str] | None:
    by_text: dict[str, str] = {}
    for c in target.codes:
        by_text.setdefault(c.value.strip().casefold(), c.value)
        if c.label:
            by_text.setdefault(c.label.strip().casefold(), c.value)
    out: dict[str, str] = {}
    for opt in options:
        value = opt.get("value") if isinstance(opt, Mapping) else opt
        if value is None or str(value).strip() == "":
            continue
        code = by_text.get(str(value).strip().casefold())
        if code is None:
            return None
        out[str(value)] = code
    return out or None


def auto_map(catalog_fields: Iterable[Any], target_fields: Iterable[FieldSection | TargetField],
             existing_rows: Iterable[Mapping[str, Any]] = ()) -> list[dict]:
    """Proposed rows for SIS fields not yet mapped, in the SIS's field order.

    ``catalog_fields``: FormField objects, {key, label, type, options} dicts,
    ``catalog.CATALOG`` tuples or bare keys. ``target_fields``: FieldSections.
    ``existing_rows``: the saved rows; their mapped To Fields and From fields are
    left alone. Deterministic.
    """
    targets = flatten_targets(target_fields)
    section_of: dict[str, str] = {}
    for item in target_fields or ():
        if isinstance(item, FieldSection):
            for f in item.fields:
                section_of.setdefault(f.key, item.label)
    taken_targets, taken_fields = set(), set()
    for row in existing_rows or ():
        if row.get("type") not in (None, "", "do_not_map"):
            taken_targets.add(row.get("to"))
            if row.get("from"):
                taken_fields.add(row.get("from"))

    entries = []
    seen_keys = set()
    for item in catalog_fields or ():
        key, label, ftype, options = _catalog_entry(item)
        if not key or key in seen_keys or key in taken_fields:
            continue
        seen_keys.add(key)
        names = {normalise_name(key)}
        if label:
            names.add(normalise_name(label))
        names.discard("")
        entries.append((key, names, ftype, options))

    target_names = {k: _target_names(t, section_of.get(k, "")) for k, t in targets.items()
                    if k not in taken_targets}
    matches_of_target: dict[str, list[str]] = {}
    matches_of_field: dict[str, list[str]] = {}
    for tkey, tnames in target_names.items():
        if not tnames:
            continue
        for fkey, fnames, _, _ in entries:
            if tnames & fnames:
                matches_of_target.setdefault(tkey, []).append(fkey)
                matches_of_field.setdefault(fkey, []).append(tkey)

    info = {e[0]: e for e in entries}
    rows = []
    for tkey, target in targets.items():
        cands = matches_of_target.get(tkey, [])
        if len(cands) != 1 or len(matches_of_field.get(cands[0], [])) != 1:
            continue
        fkey = cands[0]
        _, _, ftype, options = info[fkey]
        if target.codes:
            codes = _codes_for(options, target)
            if codes is None:
                continue
            rows.append({"to": tkey, "type": "match_codes", "from": fkey, "codes": codes, "unmatched": "fail"})
        elif (target.type or "").lower() == "date" or (target.format or "").lower() == "date":
            rows.append({"to": tkey, "type": "transformation", "from": fkey,
                         "steps": [{"kind": "date", "from_format": "auto", "to_format": "YYYY-MM-DD"}]})
        else:
            rows.append({"to": tkey, "type": "direct", "from": fkey})
    return rows
