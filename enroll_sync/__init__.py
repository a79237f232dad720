"""Enroll Sync: approved registrations from Enroll into a district's SIS.

``create_app(config=None)`` builds the Flask app. The names re-exported here are
the public API that plugins may import.
"""
from __future__ import annotations

from .adapters import (AdapterError, CheckResult, Code, ExportRecord, ExportResult, FieldError,
                       FieldSection, Outcome, SettingField, SISAdapter, TargetField, nest)
from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "create_app", "hookimpl", "AdapterError", "CheckResult", "Code", "ExportRecord", "ExportResult",
    "FieldError", "FieldSection", "Outcome", "SettingField", "SISAdapter", "TargetField", "nest",
    "__version__",
]


def create_app(config: dict | None = None):
    from .app import build_app
    return build_app(config)


def __getattr__(name):
    # Heavier public names load on first use so `import enroll_sync` stays light.
    if name in ("Transport", "OAuth2ClientCredentials", "TransportError"):
        from . import transport
        return getattr(transport, name)
    if name in ("Step", "StepError", "StepConfigError", "Param", "StepContext", "is_blank"):
        from .mapping import steps
        return getattr(steps, name)
    raise AttributeError(name)
