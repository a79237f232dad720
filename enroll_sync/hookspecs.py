"""The plugin contract: every hook Enroll Sync calls.

Hooks are called with keyword arguments. Each has a test and a section in
``docs/plugin_hooks.md``; a test fails when one is missing.
"""
from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("enroll_sync")
hookimpl = HookimplMarker("enroll_sync")


@hookspec
def register_sis_adapters():
    """Return a list of SISAdapter subclasses this plugin provides."""


@hookspec
def register_transformations():
    """Return a list of transformation Step classes to offer in the Transformation editor."""


@hookspec
def register_sandbox_commands(sandbox):
    """Add click commands to the ``enroll-sync sandbox`` group (a test SIS server)."""


@hookspec
def register_demo_connections(sandbox_urls):
    """Return dicts {adapter, name, environment, settings} to create with the demo data."""
