"""Hook implementations of the generic REST plugin (entry point ``sis_generic``)."""
from __future__ import annotations

from enroll_sync import hookimpl

from .adapter import GenericRestAdapter

DEFAULT_SANDBOX_PORT = 5002  # sandbox.DEFAULT_PORT, without importing the sandbox here
DEFAULT_SANDBOX_URL = f"http://127.0.0.1:{DEFAULT_SANDBOX_PORT}"


@hookimpl
def register_sis_adapters():
    return [GenericRestAdapter]


@hookimpl
def register_demo_connections(sandbox_urls):
    from .sandbox import DEFAULT_CREDENTIALS, edfi_settings

    url = (sandbox_urls or {}).get("edfi", DEFAULT_SANDBOX_URL)
    return [{
        "adapter": GenericRestAdapter.name,
        "name": "Ed-Fi Sandbox",
        "environment": "sandbox",
        "settings": edfi_settings(url, DEFAULT_CREDENTIALS, auth="oauth2", timeout=30),
    }]


@hookimpl
def register_sandbox_commands(sandbox):
    from .cli import edfi_command

    sandbox.add_command(edfi_command)
