"""``enroll-sync sandbox powerschool``: run the PowerSchool-compatible sandbox SIS."""
from __future__ import annotations

import click

from .sandbox import (
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TOKEN_LIFETIME, make_sandbox_server,
    seed_students,
)


@click.command("powerschool")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=5001, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--db", default=":memory:", show_default=True,
              help="SQLite file to keep students in, or :memory:.")
@click.option("--client-id", default=DEFAULT_CLIENT_ID, show_default=True,
              help="OAuth client ID the sandbox accepts.")
@click.option("--client-secret", default=DEFAULT_CLIENT_SECRET, show_default=True,
              help="OAuth client secret the sandbox accepts (a demo value; not a real secret).")
@click.option("--students", "seed_count", default=0, show_default=True, type=int,
              help="Store this many example students at start (local_id 900001 and up).")
@click.option("--latency-ms", default=0, show_default=True, type=int,
              help="Added to every API request.")
@click.option("--error-rate", default=0.0, show_default=True, type=float,
              help="Share of API requests answered HTTP 500 (0..1).")
@click.option("--timeout-rate", default=0.0, show_default=True, type=float,
              help="Share of API requests that hang --hang-s seconds (0..1).")
@click.option("--hang-s", default=5.0, show_default=True, type=float,
              help="How long a simulated timeout hangs.")
@click.option("--min-interval-ms", default=0, show_default=True, type=int,
              help="PowerSchool's per-plugin throttle: minimum ms between API requests.")
@click.option("--throttle-status", default=429, show_default=True, type=click.Choice(["429", "503"]),
              help="Status of a throttled request.")
@click.option("--retry-after", default=None, help="Retry-After header sent with 429/503 (none by default).")
@click.option("--token-lifetime", default=DEFAULT_TOKEN_LIFETIME, show_default=True, type=int,
              help="expires_in of issued tokens, seconds.")
@click.option("--reject-local-id", multiple=True, help="Refuse this local_id with a per-record error (repeatable).")
@click.option("--reject-last-name", multiple=True, help="Refuse this last name with a per-record error (repeatable).")
@click.option("--deny-field", multiple=True,
              help="Answer 'No access to the field' for this column, e.g. students.dob (repeatable).")
@click.option("--page-size-max", default=500, show_default=True, type=int,
              help="student_max_page_size reported and enforced.")
@click.option("--seed", default=None, type=int, help="Random seed for the random faults.")
@click.option("--quiet/--access-log", default=False, show_default=True,
              help="Hide the per-request access log.")
def powerschool_command(host, port, db, client_id, client_secret, seed_count, latency_ms,
                        error_rate, timeout_rate, hang_s, min_interval_ms, throttle_status,
                        retry_after, token_lifetime, reject_local_id, reject_last_name,
                        deny_field, page_size_max, seed, quiet):
    """Run a PowerSchool-compatible sandbox SIS.

    Faults can also be changed while it runs: POST a JSON object to /sandbox/faults
    (GET it to see them all). GET /sandbox/dump lists every stored student;
    POST /sandbox/reset empties it.
    """
    store, server = make_sandbox_server(
        host=host, port=port, db=db, client_id=client_id, client_secret=client_secret,
        seed=seed, quiet=quiet, latency_ms=latency_ms, error_rate=error_rate,
        timeout_rate=timeout_rate, hang_s=hang_s, min_interval_ms=min_interval_ms,
        throttle_status=int(throttle_status), retry_after=retry_after,
        token_lifetime=token_lifetime, reject_local_ids=list(reject_local_id),
        reject_last_names=list(reject_last_name), denied_fields=list(deny_field),
        student_max_page_size=page_size_max)
    if seed_count:
        seed_students(store, seed_count)
    url = f"http://{host}:{server.server_port}"
    click.echo(f"PowerSchool sandbox on {url} (client id {client_id!r}; students in {db})")
    click.echo(f"Faults: POST {url}/sandbox/faults   Dump: GET {url}/sandbox/dump")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
