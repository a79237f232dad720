"""Sync connections: settings validation, secrets at rest, adapter instances and
the per-connection cache of target fields.

Used by the web layer (Sync Service pages) and by sync jobs alike. Needs an app
context (for the plugin manager and the encryption key).
"""
from __future__ import annotations

import logging
import math
import threading
from typing import Any

from flask import current_app

from ..adapters import AdapterError, FieldSection, SettingField, SISAdapter, sections_from_dicts, sections_to_dicts
from ..inputs import MAX_INT, SETTING_MAX, SETTING_TEXT_MAX, field_problem, limit_of
from ..models import SyncConnection, utcnow
from ..security import secret_box

log = logging.getLogger("enroll_sync.connections")

ENVIRONMENTS = (("sandbox", "Sandbox"), ("production", "Production"))


class SettingsError(ValueError):
    """Field-by-field problems with submitted settings: ``errors`` maps key -> message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def adapter_classes(app=None) -> dict[str, type[SISAdapter]]:
    return (app or current_app).extensions["enroll_sync.adapters"]


def adapter_label(name: str, app=None) -> str:
    """What admins see as the SIS type of adapter ``name``."""
    cls = adapter_classes(app).get(name)
    return (cls.label or cls.name) if cls else f"{name} (not installed)"


def adapter_class(name: str, app=None) -> type[SISAdapter]:
    cls = adapter_classes(app).get(name)
    if cls is None:
        raise AdapterError(f"The SIS adapter “{name}” is not installed. Install its plugin or pick another connection.")
    return cls


#: the largest magnitude of a "number" setting without a declared max
MAX_NUMBER = 1e15


def coerce_settings(schema: list[SettingField], submitted: dict[str, Any], stored_secrets: dict[str, Any]
                    ) -> tuple[dict, dict]:
    """Validate submitted values against ``schema``.

    Returns (settings, secrets). A blank secret keeps the stored one. Raises
    SettingsError with a message per field.
    """
    settings, secrets, errors = {}, {}, {}
    for f in schema:
        raw = submitted.get(f.key)
        if isinstance(raw, str):
            raw = raw.strip() if f.type != "text" else raw
            if field_problem(errors, f.key, raw, SETTING_TEXT_MAX if f.type == "text" else SETTING_MAX, f.label):
                continue
        if f.type == "boolean":
            settings[f.key] = raw in (True, "1", "on", "true", "yes", "y")
            continue
        if f.secret:
            if raw:
                secrets[f.key] = raw
            elif f.key in stored_secrets:
                secrets[f.key] = stored_secrets[f.key]
            elif f.required:
                errors[f.key] = f"Enter the {f.label}."
            continue
        if raw in (None, ""):
            if f.required:
                errors[f.key] = f"Enter the {f.label}."
            elif f.default is not None:
                settings[f.key] = f.default
            continue
        try:
            if f.type == "integer":
                value: Any = int(raw)
            elif f.type == "number":
                value = float(raw)
                if not math.isfinite(value):
                    raise ValueError(raw)
            else:
                value = raw
        except (TypeError, ValueError):
            errors[f.key] = f"{f.label} must be a {'whole number' if f.type == 'integer' else 'number'}."
            continue
        if f.type in ("integer", "number"):
            if f.max is None and abs(value) > (MAX_INT if f.type == "integer" else MAX_NUMBER):
                # no adapter needs more, and a number beyond it breaks the code that uses it
                errors[f.key] = f"{f.label} is too large."
                continue
            if f.min is not None and value < f.min:
                errors[f.key] = f"{f.label} must be at least {f.min:g}."
                continue
            if f.max is not None and value > f.max:
                errors[f.key] = f"{f.label} must be at most {f.max:g}."
                continue
        if f.type == "url" and not str(value).startswith(("http://", "https://")):
            errors[f.key] = f"{f.label} must start with http:// or https://."
            continue
        if f.type == "choice" and f.choices and value not in {c[0] for c in f.choices}:
            errors[f.key] = f"Choose one of the listed values for {f.label}."
            continue
        settings[f.key] = value
    if errors:
        raise SettingsError(errors)
    return settings, secrets


def _validated(cls, name: str, environment: str, submitted: dict, stored_secrets: dict) -> tuple[dict, dict]:
    """The name, environment and adapter settings checked together, so the admin sees
    every problem at once."""
    errors = {}
    if not (name or "").strip():
        errors["name"] = "Enter a name for this connection."
    else:
        field_problem(errors, "name", name.strip(), limit_of(SyncConnection.name), "The name")
    if environment not in dict(ENVIRONMENTS):
        errors["environment"] = "Choose Sandbox or Production."
    settings, secrets = {}, {}
    try:
        settings, secrets = coerce_settings(cls.settings_schema(), submitted, stored_secrets)
    except SettingsError as exc:
        errors.update(exc.errors)
    if errors:
        raise SettingsError(errors)
    return settings, secrets


def link_partners(org_id: int, adapter: str, conn: SyncConnection | None = None) -> list[SyncConnection]:
    """The connections ``conn`` may say it shares SIS links with: same district and SIS
    type, not itself, and not themselves sharing another's links."""
    q = SyncConnection.select().where((SyncConnection.organization == org_id) & (SyncConnection.adapter == adapter)
                                      & SyncConnection.shares_links_with.is_null())
    if conn is not None:
        q = q.where(SyncConnection.id != conn.id)
    return list(q.order_by(SyncConnection.name))


def _partner(org_id: int, adapter: str, conn: SyncConnection | None, raw) -> int | None:
    """The checked ``shares_links_with`` choice (None: its own links)."""
    if raw in (None, "", "0"):
        return None
    allowed = {c.id: c for c in link_partners(org_id, adapter, conn)}
    try:
        chosen = int(raw)
    except (TypeError, ValueError):
        chosen = None
    if chosen not in allowed:
        raise SettingsError({"shares_links_with": "Choose a connection of the same SIS type listed here, or "
                                                  "“Its own SIS”."})
    if conn is not None and SyncConnection.select().where(SyncConnection.shares_links_with == conn.id).exists():
        raise SettingsError({"shares_links_with": f"Other connections share {conn.name}'s SIS links, so it "
                                                  f"cannot share another's. Change those first."})
    return chosen


def create_connection(org, adapter: str, name: str, environment: str, submitted: dict, plugin_manager=None,
                      app=None, shares_links_with=None) -> SyncConnection:
    """Validate and store a new connection (secrets sealed)."""
    settings, secrets = _validated(adapter_class(adapter, app), name, environment, submitted, {})
    partner = _partner(getattr(org, "id", org), adapter, None, shares_links_with)
    return SyncConnection.create(organization=org, adapter=adapter, name=name.strip(), environment=environment,
                                 settings=settings, secrets=secret_box(app).seal(secrets),
                                 shares_links_with=partner)


def update_connection(conn: SyncConnection, name: str, environment: str, submitted: dict, app=None,
                      shares_links_with=None) -> SyncConnection:
    box = secret_box(app)
    settings, secrets = _validated(adapter_class(conn.adapter, app), name, environment, submitted,
                                   box.open(conn.secrets))
    conn.shares_links_with = _partner(conn.organization_id, conn.adapter, conn, shares_links_with)
    conn.name, conn.environment, conn.settings = name.strip(), environment, settings
    conn.secrets = box.seal(secrets)
    conn.updated_at = utcnow()
    conn.fields_cache = None  # a different server may have different fields
    conn.save()
    drop_adapter(conn.id)
    return conn


def secret_values(conn: SyncConnection, app=None) -> list[str]:
    """Every secret of ``conn`` (to redact from anything shown or stored)."""
    return [str(v) for v in secret_box(app).open(conn.secrets).values() if v]


def safe_secret_values(conn: SyncConnection, app=None) -> list[str]:
    """``secret_values``, or nothing when they cannot be decrypted (then there is
    nothing to redact, and nothing will be sent either)."""
    try:
        return secret_values(conn, app)
    except Exception:
        return []


# --------------------------------------------------------------------------- adapter instances

_instances: dict[int, tuple[Any, SISAdapter]] = {}
_lock = threading.Lock()


def open_adapter(conn: SyncConnection, app=None) -> SISAdapter:
    """The adapter instance for ``conn``, reused while its settings are unchanged, so
    tokens and keep-alive connections are shared between requests and batches."""
    stamp = (conn.adapter, conn.updated_at, conn.secrets, repr(sorted(conn.settings.items())))
    with _lock:
        cached = _instances.get(conn.id)
        if cached and cached[0] == stamp:
            return cached[1]
    cls = adapter_class(conn.adapter, app)
    settings = dict(conn.settings)
    settings.update(secret_box(app).open(conn.secrets))
    settings["environment"] = conn.environment
    instance = cls(settings)
    with _lock:
        old = _instances.pop(conn.id, None)
        _instances[conn.id] = (stamp, instance)
    if old:
        _safe_close(old[1])
    return instance


def drop_adapter(conn_id: int) -> None:
    with _lock:
        old = _instances.pop(conn_id, None)
    if old:
        _safe_close(old[1])


def _safe_close(adapter):
    try:
        adapter.close()
    except Exception:  # closing must never break the caller
        log.warning("closing adapter %s failed", type(adapter).__name__, exc_info=True)


def target_sections(conn: SyncConnection, refresh: bool = False, app=None) -> list[FieldSection]:
    """The connection's target fields, cached on the connection row."""
    if conn.fields_cache and not refresh:
        return sections_from_dicts(conn.fields_cache)
    sections = open_adapter(conn, app).target_fields()
    conn.fields_cache = sections_to_dicts(sections)
    conn.fields_cached_at = utcnow()
    SyncConnection.update(fields_cache=conn.fields_cache, fields_cached_at=conn.fields_cached_at).where(
        SyncConnection.id == conn.id).execute()
    return sections
