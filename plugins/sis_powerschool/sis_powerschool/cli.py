"""``enroll-sync sandbox powerschool``: run the PowerSchool-compatible sandbox SIS.

Every fault of ``/sandbox/faults`` (``DEFAULT_FAULTS``) has a flag here: the fault's
name with dashes (``burst_429`` -> ``--burst-429``), except the lists, whose flags are
singular and repeatable (``reject_local_ids`` -> ``--reject-local-id``). ``FAULT_FLAGS``
says which flag sets which fault.
"""
from __future__ import annotations

import click

from .sandbox import (
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_TOKEN_LIFETIME, MALFORMED_KINDS,
    make_sandbox_server, seed_students,
)

#: click parameter name -> the fault of DEFAULT_FAULTS it sets
FAULT_FLAGS = {
    "latency_ms": "latency_ms",
    "error_rate": "error_rate",
    "timeout_rate": "timeout_rate",
    "hang_s": "hang_s",
    "fail_500": "fail_500",
    "timeouts": "timeouts",
    "burst_429": "burst_429",
    "burst_503": "burst_503",
    "retry_after": "retry_after",
    "malformed": "malformed",
    "malformed_kind": "malformed_kind",
    "malformed_body": "malformed_body",
    "lost_answers": "lost_answers",
    "fault_path": "fault_path",
    "min_interval_ms": "min_interval_ms",
    "throttle_status": "throttle_status",
    "token_lifetime": "token_lifetime",
    "revoke_tokens_every": "revoke_tokens_every",
    "revoke_new_tokens_every": "revoke_new_tokens_every",
    "drip_bytes_per_s": "drip_bytes_per_s",
    "drip_answers": "drip_answers",
    "busy_records": "busy_records",
    "page_error_at": "page_error_at",
    "reject_local_id": "reject_local_ids",
    "reject_last_name": "reject_last_names",
    "drop_results_for": "drop_results_for",
    "deny_field": "denied_fields",
    "page_size_max": "student_max_page_size",
}
_LISTS = {"reject_local_ids", "reject_last_names", "drop_results_for", "denied_fields"}
_KINDS = "; ".join(f"{k}: {v}" for k, v in MALFORMED_KINDS.items())


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
@click.option("--seed-students", "seed_students_count", default=0, show_default=True, type=int,
              help="Store this many realistic students at start (local_id 100001 and up; "
                   "families, grades within each school, addresses, codes, extension rows), "
                   "the same ones for the same --seed. 5,000 take well under a second, 100,000 "
                   "several seconds.")
@click.option("--seed-contacts/--no-seed-contacts", default=False, show_default=True,
              help="With --seed-students: also create each family's guardians in the "
                   "contacts API, linked to every child.")
# -- slowness and random failures
@click.option("--latency-ms", default=0, show_default=True, type=int,
              help="Added to every API request.")
@click.option("--error-rate", default=0.0, show_default=True, type=float,
              help="Share of API requests answered HTTP 500 (0..1).")
@click.option("--timeout-rate", default=0.0, show_default=True, type=float,
              help="Share of API requests that hang --hang-s seconds (0..1).")
@click.option("--hang-s", default=5.0, show_default=True, type=float,
              help="How long a simulated timeout hangs (then it answers 500).")
# -- counted faults: the next N requests under --fault-path
@click.option("--fail-500", default=0, show_default=True, type=int,
              help="The next N API requests answer HTTP 500.")
@click.option("--timeouts", default=0, show_default=True, type=int,
              help="The next N API requests hang --hang-s seconds (not processed).")
@click.option("--burst-429", default=0, show_default=True, type=int,
              help="The next N API requests answer 429 Too Many Requests (with --retry-after "
                   "when given).")
@click.option("--burst-503", default=0, show_default=True, type=int,
              help="The next N API requests answer 503 Service Unavailable (with --retry-after "
                   "when given).")
@click.option("--malformed", default=0, show_default=True, type=int,
              help="The next N API requests answer HTTP 200 with a broken body "
                   "(see --malformed-kind); they are not processed.")
@click.option("--malformed-kind", default="truncated", show_default=True,
              type=click.Choice(list(MALFORMED_KINDS)),
              help=f"Which broken body --malformed sends. {_KINDS}.")
@click.option("--malformed-body", default=None,
              help="Send exactly this text (as application/json) for --malformed instead of "
                   "a --malformed-kind.")
@click.option("--lost-answers", default=0, show_default=True, type=int,
              help="The next N POST /ws/v1/student are saved, then answered 500 (the answer "
                   "is lost).")
@click.option("--fault-path", default="/", show_default=True,
              help="Counted faults (--fail-500, --timeouts, --burst-429, --burst-503, "
                   "--malformed) hit only paths starting with this, e.g. /ws/v1/student.")
# -- throttle
@click.option("--min-interval-ms", default=0, show_default=True, type=int,
              help="PowerSchool's per-plugin throttle: minimum ms between API requests.")
@click.option("--throttle-status", default="429", show_default=True,
              type=click.Choice(["429", "503"]), help="Status of a throttled request.")
@click.option("--retry-after", default=None,
              help="Retry-After header sent with 429/503 answers, seconds or an HTTP date "
                   "(none by default).")
# -- tokens
@click.option("--token-lifetime", default=DEFAULT_TOKEN_LIFETIME, show_default=True, type=int,
              help="expires_in of issued tokens, seconds; they stop working after it "
                   "(token expiry).")
@click.option("--revoke-tokens-every", default=0, show_default=True, type=int,
              help="Revoke every token after each N-th API request that had a valid one, so "
                   "the next request gets 401 (token revocation; 0: never).")
@click.option("--revoke-new-tokens-every", default=0, show_default=True, type=int,
              help="Harsher: each N-th API request revokes the token it used AND the next "
                   "token issued is revoked before it is used (workers sharing a token the "
                   "SIS revokes early), so fetching a new token once per request is not "
                   "enough (0: never).")
# -- slow answers and partial failures
@click.option("--drip-bytes-per-s", default=0.0, show_default=True, type=float,
              help="Send API answers under --fault-path this many bytes per second, in small "
                   "pieces with the full Content-Length: each read is quick, the answer "
                   "takes long (defeats a per-read timeout; 0: off).")
@click.option("--drip-answers", default=0, show_default=True, type=int,
              help="With --drip-bytes-per-s: only the next N answers drip, then dripping "
                   "stops (0: every answer).")
@click.option("--busy-records", default=0, show_default=True, type=int,
              help="The next N records of POST /ws/v1/student are refused with HTTP 200 and a "
                   "per-record ERROR 'server is busy ... try again later' (not saved).")
@click.option("--page-error-at", default=0, show_default=True, type=int,
              help="Page N of a student list answers HTTP 500 once, then works (0: off).")
# -- per-record answers
@click.option("--reject-local-id", multiple=True,
              help="Refuse this local_id with a per-record error (repeatable).")
@click.option("--reject-last-name", multiple=True,
              help="Refuse this last name with a per-record error (repeatable).")
@click.option("--drop-results-for", multiple=True,
              help="Save this local_id but leave it out of the answer (repeatable).")
@click.option("--deny-field", multiple=True,
              help="Answer 'No access to the field' for this column, e.g. students.dob "
                   "(repeatable).")
@click.option("--page-size-max", default=500, show_default=True, type=int,
              help="student_max_page_size reported and enforced.")
@click.option("--seed", default=None, type=int,
              help="Random seed for the random faults and --seed-students (which uses 0 "
                   "when not given).")
@click.option("--quiet/--access-log", default=False, show_default=True,
              help="Hide the per-request access log.")
def powerschool_command(host, port, db, client_id, client_secret, seed_count, seed_students_count,
                        seed_contacts, seed, quiet, **flags):
    """Run a PowerSchool-compatible sandbox SIS.

    Faults can also be changed while it runs: POST a JSON object to /sandbox/faults
    (GET it to see them all) with the flags' names in snake case, e.g.
    {"burst_429": 3, "retry_after": "2"}; {"revoke_tokens": true} revokes the tokens
    issued so far. GET /sandbox/dump lists every stored student and GET /sandbox/contacts
    every contact and link; POST /sandbox/reset empties it and puts the faults back to
    these flags. POST /sandbox/empty, /sandbox/renumber and /sandbox/students/<id>/change
    play the SIS being emptied, restored under new ids, or edited by hand.
    """
    faults = {}
    for name, value in flags.items():
        key = FAULT_FLAGS[name]
        if key in _LISTS:
            value = list(value)
        elif key == "throttle_status":
            value = int(value)
        faults[key] = value
    store, server = make_sandbox_server(
        host=host, port=port, db=db, client_id=client_id, client_secret=client_secret,
        seed=seed, quiet=quiet, **faults)
    if seed_count:
        seed_students(store, seed_count)
    if seed_students_count:
        store.seed_students(seed_students_count, seed=0 if seed is None else seed,
                            contacts=seed_contacts)
    url = f"http://{host}:{server.server_port}"
    click.echo(f"PowerSchool sandbox on {url} (client id {client_id!r}; students in {db})")
    if seed_students_count:
        click.echo(f"Seeded {seed_students_count} students"
                   + (" with their guardians" if seed_contacts else ""), err=True)
    click.echo(f"Faults: POST {url}/sandbox/faults   Dump: GET {url}/sandbox/dump")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
