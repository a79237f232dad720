"""``enroll-sync sandbox edfi``: run the Ed-Fi-style sandbox SIS of the generic adapter.

Every named fault of ``/sandbox/faults`` (``sandbox.DEFAULT_FAULTS``) has a flag here: the
fault's name with dashes (``page_error_at`` -> ``--page-error-at``). ``FAULT_FLAGS`` says
which flag sets which fault.
"""
from __future__ import annotations

import time

import click

from .sandbox import DEFAULT_CREDENTIALS, DEFAULT_FAULTS, DEFAULT_PORT, serve_in_thread

#: click parameter name -> the fault of DEFAULT_FAULTS it sets
FAULT_FLAGS = {name: name for name in DEFAULT_FAULTS}


@click.command("edfi")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int,
              help="Port (0: any free port).")
@click.option("--token-lifetime", default=1800, show_default=True, type=int,
              help="OAuth2 expires_in, in seconds.")
@click.option("--require-auth/--no-auth", default=True, show_default=True,
              help="Whether data endpoints need credentials.")
# -- data at start
@click.option("--seed-students", default=0, show_default=True, type=int,
              help="Store this many example students at start (studentUniqueId S000001 and up).")
@click.option("--seed-contacts/--no-seed-contacts", default=False, show_default=True,
              help="Give the seeded students contacts (a mother per family, a father in every "
                   "second) and studentContactAssociations.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed for the example data and the random faults: the same seed gives the "
                   "same students, ids and errors.")
# -- faults (also POST /sandbox/faults while it runs)
@click.option("--latency-ms", default=0, show_default=True, type=int,
              help="Added to every request under --fault-path.")
@click.option("--error-rate", default=0.0, show_default=True, type=float,
              help="Share of requests under --fault-path answered HTTP 500 (0..1).")
@click.option("--drip-bytes-per-s", default=0, show_default=True, type=int,
              help="Send answer bodies under --fault-path this many bytes per second "
                   "(streamed, Content-Length up front; 0: at once).")
@click.option("--revoke-new-tokens-every", default=0, show_default=True, type=int,
              help="Every N-th request made with an issued OAuth2 token revokes that token "
                   "(it is served; the next use answers 401). The count runs across tokens, so "
                   "a freshly issued token may be revoked after its first use (0: never).")
@click.option("--page-error-at", default=0, show_default=True, type=int,
              help="The N-th list page (GET of a collection) from now answers HTTP 500, once.")
@click.option("--writes-503", default=0, show_default=True, type=int,
              help="The next N writes (POST/PUT/DELETE under --fault-path) each answer 503 "
                   "with Retry-After once; the retry of the same request goes through.")
@click.option("--retry-after", default="1", show_default=True,
              help="Retry-After sent by --writes-503: seconds or an HTTP date.")
@click.option("--gone-students", default=0, show_default=True, type=int,
              help="The next N requests for /data/v3/ed-fi/students/{id} find the student "
                   "deleted in the SIS (with its associations) and answer 404.")
@click.option("--fault-path", default="/", show_default=True,
              help="--latency-ms, --error-rate, --drip-bytes-per-s and --writes-503 hit only "
                   "paths starting with this, e.g. /data/.")
@click.option("--quiet/--access-log", default=False, show_default=True,
              help="Hide the per-request access log.")
def edfi_command(host, port, token_lifetime, require_auth, seed_students, seed_contacts, seed,
                 quiet, **flags):
    """Run an Ed-Fi-style sandbox SIS (OpenAPI document, OAuth2, students, contacts, change
    queries) for the generic adapter.

    Faults can also be changed while it runs: POST a JSON object to /sandbox/faults (GET it to
    see them all) with the flags' names in snake case, e.g. {"writes_503": 3, "retry_after": 2};
    {"revoke_tokens": true} revokes the tokens issued so far. GET /sandbox/dump shows every
    stored item; POST /sandbox/reset empties the SIS and puts the faults back to these flags.
    """
    faults = {FAULT_FLAGS[name]: value for name, value in flags.items()}
    retry_after = faults["retry_after"]
    faults["retry_after"] = int(retry_after) if str(retry_after).isdigit() else retry_after
    try:
        handle = serve_in_thread(port=port, host=host, credentials=DEFAULT_CREDENTIALS,
                                 token_lifetime=token_lifetime, require_auth=require_auth,
                                 seed=seed, quiet=quiet, **faults)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if seed_students:
        handle.seed_students(seed_students, seed=seed, contacts=seed_contacts)
    creds = handle.credentials
    url = handle.url
    click.echo(f"Ed-Fi-style sandbox SIS on {url}")
    click.echo(f"  OpenAPI document   {url}/metadata/data/v3/swagger.json")
    click.echo(f"  JSON Schema        {url}/schemas/person.schema.json")
    click.echo("  create operation   POST /data/v3/ed-fi/students (upserts on studentUniqueId)")
    click.echo("  also               /data/v3/ed-fi/contacts, /studentContactAssociations, "
               "/relationDescriptors, /telephoneNumberTypeDescriptors, ...")
    click.echo(f"  change queries     {url}/changeQueries/v1/availableChangeVersions")
    click.echo(f"  OAuth2 token URL   {url}/oauth/token")
    click.echo(f"  sandbox client id  {creds.client_id}  (sandbox-only credentials, see "
               f"sis_generic.sandbox.Credentials)")
    dump = handle.dump()
    click.echo(f"  stored             {len(dump['students'])} students, {len(dump['contacts'])} "
               f"contacts (GET {url}/sandbox/dump)")
    click.echo(f"  faults             POST {url}/sandbox/faults")
    click.echo("Press Ctrl+C to stop.")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
