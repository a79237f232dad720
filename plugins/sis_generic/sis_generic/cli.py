"""``enroll-sync sandbox edfi``: run the Ed-Fi-style sandbox SIS of the generic adapter."""
from __future__ import annotations

import time

import click

from .sandbox import DEFAULT_CREDENTIALS, DEFAULT_PORT, serve_in_thread


@click.command("edfi")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int,
              help="0 picks a free port.")
@click.option("--token-lifetime", default=1800, show_default=True, type=int,
              help="OAuth2 expires_in, in seconds.")
def edfi_command(host, port, token_lifetime):
    """Run an Ed-Fi-style test SIS (OpenAPI document, OAuth2, students) for the generic adapter."""
    handle = serve_in_thread(port=port, host=host, credentials=DEFAULT_CREDENTIALS,
                             token_lifetime=token_lifetime)
    creds = handle.credentials
    click.echo(f"Ed-Fi-style sandbox SIS on {handle.url}")
    click.echo(f"  OpenAPI document   {handle.url}/metadata/data/v3/swagger.json")
    click.echo(f"  JSON Schema        {handle.url}/schemas/person.schema.json")
    click.echo("  create operation   POST /data/v3/ed-fi/students (upserts on studentUniqueId)")
    click.echo(f"  OAuth2 token URL   {handle.url}/oauth/token")
    click.echo(f"  sandbox client id  {creds.client_id}  (sandbox-only credentials, see "
               f"sis_generic.sandbox.Credentials)")
    click.echo(f"  stored data        GET {handle.url}/sandbox/dump")
    click.echo("Press Ctrl+C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
