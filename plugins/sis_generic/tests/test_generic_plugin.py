"""The plugin's hooks: registration through the entry point, the sandbox command
(run for real in a subprocess) and the demo connection."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import click
import httpx
import pluggy
from click.testing import CliRunner

from enroll_sync import plugin_manager
from sis_generic import GenericRestAdapter, plugin


def manager() -> pluggy.PluginManager:
    return plugin_manager(plugin)


def test_entry_point_and_adapter_registration():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="enroll_sync")}
    assert eps.get("sis_generic") == "sis_generic.plugin"
    [batch] = manager().hook.register_sis_adapters()
    assert batch == [GenericRestAdapter]
    assert GenericRestAdapter.name == "generic_rest"
    assert GenericRestAdapter.label == "Generic REST (OpenAPI / JSON Schema)"


def test_settings_schema_keys_and_secrets():
    schema = {f.key: f for f in GenericRestAdapter.settings_schema()}
    assert {k for k, f in schema.items() if f.secret} == {"api_key", "bearer_token", "password",
                                                          "client_secret"}
    assert [c for c, _ in schema["auth_mode"].choices] == ["none", "api_key", "bearer", "basic", "oauth2"]
    assert [c for c, _ in schema["schema_source"].choices] == [
        "openapi_url", "openapi_text", "json_schema_url", "json_schema_text"]
    assert schema["schema_text"].type == "text"


def test_sandbox_command_is_added_and_serves(tmp_path):
    sandbox = click.Group("sandbox")
    manager().hook.register_sandbox_commands(sandbox=sandbox)
    assert "edfi" in sandbox.commands
    help_text = CliRunner().invoke(sandbox, ["edfi", "--help"]).output
    assert "--port" in help_text

    code = "from sis_generic.cli import edfi_command; edfi_command(['--port', '0'])"
    proc = subprocess.Popen([sys.executable, "-u", "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("Ed-Fi-style sandbox SIS on http://127.0.0.1:"), first
        url = first.rsplit(" ", 1)[1].strip()
        doc = httpx.get(f"{url}/metadata/data/v3/swagger.json", timeout=5).json()
        assert doc["openapi"].startswith("3.") and "/ed-fi/students" in doc["paths"]
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_demo_connection_works_against_the_sandbox(server):
    [batch] = manager().hook.register_demo_connections(sandbox_urls={"edfi": server.url})
    [spec] = batch
    assert spec["adapter"] == "generic_rest" and spec["environment"] == "sandbox"
    with GenericRestAdapter(spec["settings"]) as adapter:
        result = adapter.check_connection()
    assert result.ok, result.message
