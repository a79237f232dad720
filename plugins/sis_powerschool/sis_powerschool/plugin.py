"""Hook implementations of the PowerSchool plugin (entry point ``sis_powerschool``)."""
from __future__ import annotations

from enroll_sync import hookimpl

from .adapter import PowerSchoolAdapter

DEFAULT_SANDBOX_URL = "http://127.0.0.1:5001"


@hookimpl
def register_sis_adapters():
    return [PowerSchoolAdapter]


@hookimpl
def register_demo_connections(sandbox_urls):
    from .sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    url = (sandbox_urls or {}).get("powerschool", DEFAULT_SANDBOX_URL)
    return [{
        "adapter": "powerschool",
        "name": "PowerSchool Sandbox",
        "environment": "sandbox",
        "settings": {
            "server_url": url,
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
            "batch_size": 100,
            "min_interval_ms": 0,
            "timeout_s": 30,
            "match_existing": True,
        },
    }]


@hookimpl
def register_sandbox_commands(sandbox):
    from .cli import powerschool_command

    sandbox.add_command(powerschool_command)
