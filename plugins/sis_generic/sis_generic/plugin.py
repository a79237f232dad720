"""Hook implementations of the generic REST plugin (entry point ``sis_generic``)."""
from __future__ import annotations

import click

from enroll_sync.hookspecs import hookimpl

from .adapter import GenericRestAdapter

DEFAULT_SANDBOX_PORT = 5002
DEFAULT_SANDBOX_URL = f"http://127.0.0.1:{DEFAULT_SANDBOX_PORT}"


@hookimpl
def register_sis_adapters():
    return [GenericRestAdapter]


@hookimpl
def register_demo_connections(sandbox_urls):
    from .testserver import DEFAULT_CREDENTIALS, edfi_settings

    url = (sandbox_urls or {}).get("edfi", DEFAULT_SANDBOX_URL)
    return [{
        "adapter": GenericRestAdapter.name,
        "name": "Ed-Fi Sandbox",
        "environment": "sandbox",
        "settings": edfi_settings(url, DEFAULT_CREDENTIALS, auth="oauth2", timeout=30),
    }]


@click.command("edfi")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_SANDBOX_PORT, show_default=True, type=int,
              help="0 picks a free port.")
@click.option("--token-lifetime", default=1800, show_default=True, type=int,
              help="OAuth2 expires_in, in seconds.")
def edfi_command(host, port, token_lifetime):
    """Run an Ed-Fi-style test SIS (OpenAPI document, OAuth2, students) for the generic adapter."""
    import time

    from .testserver import DEFAULT_CREDENTIALS, serve_in_thread

    handle = serve_in_thread(port=port, host=host, credentials=DEFAULT_CREDENTIALS,
                             token_lifetime=token_lifetime)
    creds = handle.credentials
    click.echo(f"Ed-Fi-style sandbox SIS on {handle.url}")
    click.echo(f"  OpenAPI document   {handle.url}/metadata/data/v3/swagger.json")
    click.echo(f"  JSON Schema        {handle.url}/schemas/person.schema.json")
    click.echo("  create operation   POST /data/v3/ed-fi/students (upserts on studentUniqueId)")
    click.echo(f"  OAuth2 token URL   {handle.url}/oauth/token")
    click.echo(f"  sandbox client id  {creds.client_id}  (sandbox-only credentials, see "
               f"sis_generic.testserver.Credentials)")
    click.echo(f"  stored data        GET {handle.url}/_test/dump")
    click.echo("Press Ctrl+C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()


@hookimpl
def register_sandbox_commands(sandbox):
    sandbox.add_command(edfi_command)
