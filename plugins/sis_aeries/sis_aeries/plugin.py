"""Hook implementations of the Aeries plugin (entry point ``sis_aeries``)."""
from __future__ import annotations

from enroll_sync import hookimpl

from .adapter import AeriesAdapter

DEFAULT_SANDBOX_URL = "http://127.0.0.1:5003"


@hookimpl
def register_sis_adapters():
    return [AeriesAdapter]


@hookimpl
def register_demo_connections(sandbox_urls):
    from .sandbox import DEFAULT_CERT, DEFAULT_YEAR

    url = (sandbox_urls or {}).get("aeries", DEFAULT_SANDBOX_URL)
    return [{
        "adapter": "aeries",
        "name": "Aeries Sandbox",
        "environment": "sandbox",
        "settings": {
            "server_url": url,
            "certificate": DEFAULT_CERT,
            "school_year": DEFAULT_YEAR,
            "batch_size": 100,
            "min_interval_ms": 0,
            "timeout_s": 30,
        },
    }]


@hookimpl
def register_sandbox_commands(sandbox):
    from .cli import aeries_command

    sandbox.add_command(aeries_command)
