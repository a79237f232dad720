"""Hook implementations of the Aeries plugin (entry point ``sis_aeries``)."""
from __future__ import annotations

from enroll_sync import hookimpl

DEFAULT_SANDBOX_URL = "http://127.0.0.1:5003"


@hookimpl
def register_sandbox_commands(sandbox):
    from .cli import aeries_command

    sandbox.add_command(aeries_command)
