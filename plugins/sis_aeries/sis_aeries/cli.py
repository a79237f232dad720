"""``enroll-sync sandbox aeries``: run the Aeries-compatible sandbox SIS.

Every fault and setting of ``/sandbox/faults`` (``DEFAULT_FAULTS``) has a flag here: its
name with dashes (``burst_429`` -> ``--burst-429``), except the lists, whose flags are
singular and repeatable (``no_insert_permission`` -> ``--no-insert-permission FIELD``,
``available_years`` -> ``--year``). ``FAULT_FLAGS`` says which flag sets which fault.
"""
from __future__ import annotations

import click

from .sandbox import DEFAULT_CERT, DEFAULT_FAULTS, MALFORMED_KINDS, make_sandbox_server

#: click parameter name -> the key of DEFAULT_FAULTS it sets
FAULT_FLAGS = {
    "cert": "cert",
    "default_year": "default_year",
    "year": "available_years",
    "no_insert_permission": "no_insert_permission",
    "no_update_permission": "no_update_permission",
    "deny_area": "denied_areas",
    "not_implemented": "not_implemented",
    "reject_last_name": "reject_last_names",
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
    "busy_writes": "busy_writes",
    "lost_answers": "lost_answers",
    "drip": "drip",
    "drip_ms": "drip_ms",
    "drip_bytes": "drip_bytes",
    "page_error_at": "page_error_at",
    "fault_path": "fault_path",
    "min_interval_ms": "min_interval_ms",
}
_LISTS = {"available_years", "no_insert_permission", "no_update_permission", "denied_areas",
          "not_implemented", "reject_last_names"}
_KINDS = "; ".join(f"{k}: {v}" for k, v in MALFORMED_KINDS.items())
_D = DEFAULT_FAULTS


@click.command("aeries")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=5003, show_default=True, type=int, help="Port (0: any free port).")
@click.option("--db", default=":memory:", show_default=True,
              help="SQLite file to keep the year databases in, or :memory:.")
@click.option("--seed-students", "seed_count", default=0, show_default=True, type=int,
              help="Store this many example students (with contacts) in the default year at start "
                   "(and again after /sandbox/reset).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Random seed: the same seed gives the same students and random faults.")
# -- the simulated district
@click.option("--cert", default=DEFAULT_CERT, show_default=True,
              help="The AERIES-CERT value accepted (case sensitive; a demo value, not a secret).")
@click.option("--default-year", default=_D["default_year"], show_default=True, type=int,
              help="The year database (start year) a request without a usable DatabaseYear gets.")
@click.option("--year", multiple=True, type=int,
              help="A year database that exists (repeatable; default: "
                   + ", ".join(map(str, _D["available_years"])) + "). A request for another year "
                   "silently gets the default year, as Aeries does.")
@click.option("--no-insert-permission", multiple=True, metavar="FIELD",
              help="A field whose Insert permission is off, silently ignored on insert, e.g. "
                   "BirthDate or contact.EmailAddress (repeatable).")
@click.option("--no-update-permission", multiple=True, metavar="FIELD",
              help="A field whose Update permission is off, silently ignored on update (repeatable).")
@click.option("--deny-area", multiple=True, metavar="AREA",
              help="A security area the certificate lacks (401): 'Student Data', 'Contacts', "
                   "'School Information', or 'Contacts:Insert' and the like (repeatable).")
@click.option("--not-implemented", multiple=True, metavar="PATH",
              help="A path prefix answering 501 as when the v5 Enhancements flag is off, e.g. "
                   "/api/v5/InsertContact (repeatable).")
@click.option("--reject-last-name", multiple=True,
              help="Insert/update of a student or contact with this last name answers 400 (repeatable).")
# -- slowness and random failures
@click.option("--latency-ms", default=0, show_default=True, type=int, help="Added to every API request.")
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
              help="The next N API requests answer 429 (with --retry-after when given).")
@click.option("--burst-503", default=0, show_default=True, type=int,
              help="The next N API requests answer 503 (with --retry-after when given).")
@click.option("--retry-after", default=None,
              help="Retry-After sent with 429/503 answers, seconds or an HTTP date (none by default).")
@click.option("--malformed", default=0, show_default=True, type=int,
              help="The next N API requests answer HTTP 200 with a broken body (not processed).")
@click.option("--malformed-kind", default="truncated", show_default=True,
              type=click.Choice(list(MALFORMED_KINDS)), help=f"Which broken body. {_KINDS}.")
@click.option("--malformed-body", default=None,
              help="Send exactly this text (as application/json) for --malformed instead.")
@click.option("--busy-writes", default=0, show_default=True, type=int,
              help="The next N writes (InsertStudent, UpdateStudent, InsertContact, UpdateContact) "
                   "answer 503 'busy, try again later' (with --retry-after, else Retry-After: 0); "
                   "not processed.")
@click.option("--lost-answers", default=0, show_default=True, type=int,
              help="The next N writes (InsertStudent, UpdateStudent, contacts) under --fault-path "
                   "are saved, then answered 500 (the answer is lost).")
@click.option("--drip", default=0, show_default=True, type=int,
              help="The next N API answers trickle out --drip-bytes at a time.")
@click.option("--drip-ms", default=50, show_default=True, type=int,
              help="Pause between two chunks of a dripped answer.")
@click.option("--drip-bytes", default=16, show_default=True, type=int,
              help="Chunk size of a dripped answer.")
@click.option("--page-error-at", default=0, show_default=True, type=int,
              help="A student list starting at record N (StartingRecord) answers 500 once (0: off).")
@click.option("--fault-path", default="/", show_default=True,
              help="Counted faults hit only paths starting with this, e.g. /api/v5/UpdateStudent.")
@click.option("--min-interval-ms", default=0, show_default=True, type=int,
              help="Answer 429 to a request sooner than this after the previous one (0: off).")
@click.option("--quiet/--access-log", default=False, show_default=True,
              help="Hide the per-request access log.")
def aeries_command(host, port, db, seed_count, seed, quiet, **flags):
    """Run an Aeries-compatible sandbox SIS (REST API v5).

    Clients send the certificate in the AERIES-CERT header; GET /api/v5/systeminfo lists the
    year databases. Faults and settings can be changed while it runs: POST a JSON object to
    /sandbox/faults (GET it to see them all) with the names in snake case, e.g.
    {"burst_429": 3, "retry_after": "2"} or {"no_update_permission": ["BirthDate"]}.
    GET /sandbox/dump shows every year database; POST /sandbox/reset goes back to the start
    (seeded students, these flags); POST /sandbox/empty removes every student;
    POST /sandbox/renumber gives every student a new StudentID (a restored backup).
    """
    faults = {}
    for name, value in flags.items():
        key = FAULT_FLAGS[name]
        if key in _LISTS:
            value = list(value)
            if key == "available_years" and not value:
                continue
        faults[key] = value
    store, server = make_sandbox_server(host=host, port=port, db=db, seed=seed,
                                        seed_count=seed_count, quiet=quiet, **faults)
    url = f"http://{host}:{server.server_port}"
    years = ", ".join(str(y) for y in store.faults["available_years"])
    click.echo(f"Aeries sandbox on {url} (AERIES-CERT {store.faults['cert']}; years {years}, "
               f"default {store.faults['default_year']}; {store.count()} students in {db})")
    click.echo(f"Faults: POST {url}/sandbox/faults   Dump: GET {url}/sandbox/dump")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
