"""Enroll Sync: approved registrations from Enroll into a district's SIS.

``create_app(config=None)`` builds the Flask app. The names in ``__all__`` are the
public API: the whole contract a plugin (an SIS adapter, a transformation step, and
their tests) may import. Plugins import ``enroll_sync`` and ``enroll_sync.testing``
and nothing deeper; ``tests/test_plugin_contract.py`` enforces it.

``import enroll_sync`` stays light (no Flask, httpx or peewee): the contract
dataclasses and the hook markers load at once, heavier names on first use through
the module ``__getattr__`` below.
"""
from __future__ import annotations

from .adapters import (AdapterError, CheckResult, Code, ExportRecord, ExportResult, FieldError,
                       FieldSection, Outcome, SettingField, SISAdapter, SISStudent, StudentPage, TargetField,
                       can_import, flatten, nest, sections_from_dicts, sections_to_dicts)
from .hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

#: public name -> the module it lives in, imported on first use
_LAZY = {
    # the shared HTTP transport (httpx)
    "Transport": "transport", "TransportError": "transport",
    "OAuth2ClientCredentials": "transport", "parse_retry_after": "transport",
    "error_reason": "transport",
    # redaction: the one place that cuts secrets out of text
    "redact": "redaction", "REDACTED": "redaction",
    # transformation steps (register_transformations)
    "Step": "mapping.steps", "StepError": "mapping.steps", "StepConfigError": "mapping.steps",
    "Param": "mapping.steps", "StepContext": "mapping.steps", "is_blank": "mapping.steps",
    # the plugin manager
    "build_plugin_manager": "plugins", "plugin_manager": "plugins",
}

__all__ = [
    "__version__", "create_app",
    # hooks
    "hookimpl", "hookspec", "build_plugin_manager", "plugin_manager",
    # the SIS adapter contract
    "AdapterError", "CheckResult", "Code", "ExportRecord", "ExportResult", "FieldError",
    "FieldSection", "Outcome", "SettingField", "SISAdapter", "TargetField", "nest",
    "sections_from_dicts", "sections_to_dicts",
    # import (SIS -> Enroll)
    "SISStudent", "StudentPage", "flatten", "can_import",
    # HTTP for adapters, and redaction
    "Transport", "TransportError", "OAuth2ClientCredentials", "parse_retry_after",
    "error_reason", "redact", "REDACTED",
    # transformation steps
    "Step", "StepError", "StepConfigError", "Param", "StepContext", "is_blank",
]


def create_app(config: dict | None = None):
    """The Flask app (see ``enroll_sync.app.build_app``)."""
    from .app import build_app
    return build_app(config)


def __getattr__(name):
    # Heavier public names load on first use so `import enroll_sync` stays light.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'enroll_sync' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
