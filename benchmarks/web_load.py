"""Benchmark: the web tier under load while a 10,000-record sync runs.

50 signed-in users work as registrars do — 30 on the Registrations list (the list,
Quick Filters, search, paging, one registration's page; a click, then 2-6 s reading),
20 on a sync job's page (its progress component polls every 2 s, as the page does; its
records paged or filtered every ~20 s), and every page's running-jobs item polling every
5 s — first with no sync running (the same pages, for a finished job), then while
"Proceed with Sync" of 10,000 Approved registrations runs to completion. Every
part is real: ``enroll-sync serve`` (waitress) in its own process, the PowerSchool
sandbox in its own process with 20 ms added to every request, and

- SQLite + SqliteHuey, the embedded default (the sync runs in serve's in-process worker);
- PostgreSQL + Redis (``--postgres-url``/``--redis-url``, default from
  ENROLL_SYNC_TEST_POSTGRES_URL / ENROLL_SYNC_TEST_REDIS_URL), with two separate
  ``enroll-sync worker`` processes.

Target: 0 errors (any answer other than the page, a transport error or a timeout), and
the p95 time of each page during the sync printed beside the same page with no sync.

    .venv/bin/python benchmarks/web_load.py [--users 50] [--records 10000] [--idle-seconds 20]

The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from powerschool_export import start_sandbox_process  # noqa: E402

from enroll_sync import create_app  # noqa: E402
from enroll_sync.db import database  # noqa: E402
from enroll_sync.demo import DEMO_PASSWORD, create_registrations, load_demo  # noqa: E402
from enroll_sync.migrations import upgrade  # noqa: E402
from enroll_sync.models import Mapping, Organization, Registration, School, SyncConnection, SyncJob, User, utcnow  # noqa: E402

ENROLL_SYNC = str(Path(sys.executable).with_name("enroll-sync"))

SCHOOL_CODES = {"101": "100", "102": "100", "201": "200", "301": "300"}
GRADE_CODES = {"K": "0", **{str(g): str(g) for g in range(1, 13)}}
MAPPING = [
    {"to": "local_id", "type": "direct", "from": "registration.form_id"},
    {"to": "name.first_name", "type": "transformation", "from": "student_legal_first_name", "steps": [{"kind": "trim"}]},
    {"to": "name.last_name", "type": "transformation", "from": "student_legal_last_name", "steps": [{"kind": "trim"}]},
    {"to": "demographics.gender", "type": "match_codes", "from": "gender", "codes": {"Female": "F", "Male": "M"},
     "unmatched": "blank"},
    {"to": "demographics.birth_date", "type": "transformation", "from": "birth_date",
     "steps": [{"kind": "date", "from_format": "MM/DD/YYYY", "to_format": "YYYY-MM-DD"}]},
    {"to": "school_enrollment.school_number", "type": "match_codes", "from": "school.school_number",
     "codes": SCHOOL_CODES, "unmatched": "fail"},
    {"to": "school_enrollment.grade_level", "type": "match_codes", "from": "registration.grade",
     "codes": GRADE_CODES, "unmatched": "fail"},
    {"to": "school_enrollment.entry_date", "type": "transformation", "steps": [{"kind": "value", "value": "2026-08-19"}]},
    {"to": "school_enrollment.exit_date", "type": "transformation", "steps": [{"kind": "value", "value": "2027-06-10"}]},
    {"to": "school_enrollment.enroll_status", "type": "transformation", "steps": [{"kind": "value", "value": "P"}]},
]
CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- the district

class Site:
    """An instance folder and database with the demo district, ``records`` Approved
    registrations, ``users`` registrars, the PowerSchool connection aimed at the sandbox;
    ``enroll-sync serve`` (and workers) as processes."""

    def __init__(self, root: Path, sandbox_url: str, *, records: int, users: int, database_url=None,
                 queue_url=None, workers: int = 0):
        self.root, self.workers_n = root, workers
        self.env = dict(os.environ, ENROLL_SYNC_INSTANCE_PATH=str(root / "instance"),
                        ENROLL_SYNC_IN_PROCESS_WORKER="0" if workers else "1",
                        ENROLL_SYNC_LOGIN_MAX_ATTEMPTS="1000", ENROLL_SYNC_WORKERS="2")
        if database_url:
            self.env["ENROLL_SYNC_DATABASE_URL"] = database_url
        if queue_url:
            self.env["ENROLL_SYNC_QUEUE_URL"] = queue_url
        cfg = {"INSTANCE_PATH": str(root / "instance"), "IN_PROCESS_WORKER": "0"}
        if database_url:
            cfg["DATABASE_URL"] = database_url
        if queue_url:
            cfg["QUEUE_URL"] = queue_url
        self.app = create_app(cfg)
        from werkzeug.security import generate_password_hash
        with self.app.app_context(), database.connection_context():
            upgrade()
            _, org = load_demo(self.app.extensions["enroll_sync.plugins"], {"powerschool": sandbox_url},
                               registrations=0)
            conn = SyncConnection.get((SyncConnection.organization == org) & (SyncConnection.adapter == "powerschool"))
            conn.settings = {**conn.settings, "server_url": sandbox_url, "batch_size": 100}
            conn.updated_at = utcnow()
            conn.save()
            schools = list(School.select().where((School.organization == org) & (School.school_number != "901")))
            School.update(sync_connection=conn).where(School.id.in_([s.id for s in schools])).execute()
            Mapping.create(connection=conn, kind="export_student", rows=MAPPING)
            create_registrations(Organization.get_by_id(org.id), schools, records, seed=7, statuses=["Approved"],
                                 chunk=1000)
            password_hash = generate_password_hash(DEMO_PASSWORD)
            self.emails = [f"registrar{i}@riverside.example" for i in range(users)]
            User.insert_many([{"organization": org.id, "email": e, "name": f"Registrar {i}", "role": "Registrar",
                               "password_hash": password_hash, "created_at": utcnow()}
                              for i, e in enumerate(self.emails)]).execute()
            self.form_ids = [f for (f,) in Registration.select(Registration.form_id).tuples()]
        database.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs = []

    def start(self):
        logs = open(self.root / "serve.log", "wb")
        self.procs.append(subprocess.Popen([ENROLL_SYNC, "serve", "--port", str(self.port), "--threads", "16"],
                                           env=self.env, stdout=logs, stderr=subprocess.STDOUT))
        for i in range(self.workers_n):
            wlog = open(self.root / f"worker-{i}.log", "wb")
            self.procs.append(subprocess.Popen([ENROLL_SYNC, "worker", "--workers", "2"], env=self.env,
                                               stdout=wlog, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/login", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit(f"serve did not start; see {self.root / 'serve.log'}")

    def job(self, job_id):
        with self.app.app_context(), database.connection_context():
            return SyncJob.get_by_id(job_id)

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if not database.is_closed():
            database.close()


# ----------------------------------------------------------------------------- the users

async def sign_in(url: str, email: str) -> httpx.AsyncClient:
    c = httpx.AsyncClient(base_url=url, timeout=60, follow_redirects=False,
                          limits=httpx.Limits(max_connections=2))
    token = CSRF_INPUT.search((await c.get("/login")).text).group(1)
    r = await c.post("/login", data={"email": email, "password": DEMO_PASSWORD, "csrf_token": token})
    if r.status_code != 302:
        raise SystemExit(f"sign-in of {email} answered {r.status_code}")
    page = await c.get("/registrations/")
    c.headers["X-CSRFToken"] = CSRF_META.search(page.text).group(1)
    return c


def browsing_page(form_ids: list[int], rng: random.Random) -> tuple[str, str, dict]:
    """(page name, path, headers) of a registrar's next click on the Registrations list."""
    htmx = {"HX-Request": "true"}
    choice = rng.choices(["list", "filter", "search", "page", "registration"], weights=[3, 3, 2, 2, 2])[0]
    if choice == "list":
        return choice, "/registrations/", {}
    if choice == "filter":
        grade = rng.choice(["K", "1", "5", "9", "12"])
        status = rng.choice(["", "Succeeded", "Pending"])
        return choice, f"/registrations/?status=Approved&grade={grade}&sync_status={status}", htmx
    if choice == "search":
        return choice, f"/registrations/?q={rng.choice(['an', 'Garcia', 'Lee', str(rng.choice(form_ids))])}", htmx
    if choice == "page":
        return choice, f"/registrations/?page={rng.randint(2, 150)}", htmx
    return choice, f"/registrations/{rng.choice(form_ids)}", {}


async def fetch(client, name, path, headers, samples, errors):
    t0 = time.perf_counter()
    try:
        r = await client.get(path, headers=headers)
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            errors.append(f"{path}: HTTP {r.status_code}")
        else:
            samples.setdefault(name, []).append(ms)
    except httpx.HTTPError as exc:
        errors.append(f"{path}: {type(exc).__name__}")


async def browse(client, form_ids, rng, until, samples, errors):
    """A registrar working the Registrations list: a click, then reading for 2-6 s."""
    while not until():
        await fetch(client, *browsing_page(form_ids, rng), samples, errors)
        await asyncio.sleep(rng.uniform(2, 6))


async def watch(client, job_id, rng, until, samples, errors):
    """A registrar on a sync job's page: the progress component polls every 2 s (as
    jobs/job.html does); every ~20 s they page through or filter the records."""
    await fetch(client, "job", f"/registrations/sync-jobs/{job_id}", {}, samples, errors)
    polls = 0
    while not until():
        await asyncio.sleep(2)
        await fetch(client, "progress", f"/registrations/sync-jobs/{job_id}/progress", {"HX-Request": "true"},
                    samples, errors)
        polls += 1
        if polls % 10 == 0:
            status = rng.choice(["", "Failed", "Succeeded"])
            await fetch(client, "job", f"/registrations/sync-jobs/{job_id}?page={rng.randint(1, 5)}&status={status}",
                        {"HX-Request": "true"}, samples, errors)


async def nav_poll(client, until, samples, errors):
    """While a job runs, the navigation's running-jobs item polls every 5 s on every page."""
    while not until():
        await asyncio.sleep(5)
        await fetch(client, "running", "/running-jobs", {"HX-Request": "true"}, samples, errors)


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(0.95 * len(values)))], 1)


async def phase(clients, form_ids, job_id, until, seed, nav: bool):
    """Two users in five watch the job's page; the others work the Registrations list."""
    samples: dict[str, list[float]] = {}
    errors: list[str] = []
    tasks = []
    for i, c in enumerate(clients):
        rng = random.Random(seed * 1000 + i)
        await asyncio.sleep(0.02)  # people do not all click in the same millisecond
        if i % 5 < 2:
            tasks.append(asyncio.create_task(watch(c, job_id, rng, until, samples, errors)))
        else:
            tasks.append(asyncio.create_task(browse(c, form_ids, rng, until, samples, errors)))
        if nav:
            tasks.append(asyncio.create_task(nav_poll(c, until, samples, errors)))
    await asyncio.gather(*tasks)
    every = [ms for v in samples.values() for ms in v]
    return {"requests": len(every) + len(errors), "errors": len(errors), "error_examples": errors[:5],
            "p95_ms": {k: p95(v) for k, v in sorted(samples.items())}, "p95_all_ms": p95(every)}


async def proceed(client) -> int:
    """Select all matching (Approved) + Proceed with Sync, as the registrar's browser does."""
    r = await client.post("/registrations/sync/confirm", data={"all_matching": "1", "status": "Approved"},
                          headers={"HX-Request": "true"})
    assert r.status_code == 200, r.text[:300]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                        r.text[r.text.index('action="/registrations/sync"'):])
    data: dict[str, list[str]] = {}
    for k, v in fields:
        if k != "csrf_token":
            data.setdefault(k, []).append(v)
    r = await client.post("/registrations/sync", data=data, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "HX-Redirect" in r.headers, (r.status_code, r.text[:300])
    return int(r.headers["HX-Redirect"].rsplit("/", 1)[1])


async def run_site(site: Site, args) -> dict:
    clients = [await sign_in(site.url, e) for e in site.emails]
    try:
        # a finished job to open while no sync runs (the same pages, idle)
        small = await proceed_small(clients[0], site)
        end = time.monotonic() + args.idle_seconds
        idle = await phase(clients, site.form_ids, small, lambda: time.monotonic() > end, 1, nav=True)
        t0 = time.monotonic()
        job_id = await proceed(clients[0])
        done = {"flag": False}

        def finished():
            if time.monotonic() - t0 > args.timeout:
                return True
            if not done["flag"] and int(time.monotonic() * 2) % 2 == 0:
                done["flag"] = site.job(job_id).status not in ("Queued", "Running")
            return done["flag"]

        busy = await phase(clients, site.form_ids, job_id, finished, 2, nav=True)
        job = site.job(job_id)
        return {"records": job.total, "job_status": job.status, "sync_seconds": round(time.monotonic() - t0, 1),
                "idle": idle, "during_sync": busy,
                "p95_ms_idle_vs_sync": {k: [idle["p95_ms"].get(k), busy["p95_ms"].get(k)]
                                        for k in sorted(set(idle["p95_ms"]) | set(busy["p95_ms"]))},
                "errors": idle["errors"] + busy["errors"]}
    finally:
        for c in clients:
            await c.aclose()


async def proceed_small(client, site: Site) -> int:
    """Sync 20 registrations and wait for the job: the job page of the idle phase."""
    ids = [str(i) for i in range(1, 21)]
    r = await client.post("/registrations/sync", data={"registration_ids": ids}, headers={"HX-Request": "true"})
    assert r.status_code == 200 and "HX-Redirect" in r.headers, (r.status_code, r.text[:300])
    job_id = int(r.headers["HX-Redirect"].rsplit("/", 1)[1])
    deadline = time.monotonic() + 120
    while site.job(job_id).status in ("Queued", "Running"):
        if time.monotonic() > deadline:
            raise SystemExit("the small warm-up job did not finish")
        await asyncio.sleep(0.2)
    return job_id


def postgres_schema(url: str):
    import psycopg2
    schema = "bench_" + uuid.uuid4().hex[:10]
    with psycopg2.connect(url) as c, c.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in url else "?"

    def drop():
        c = psycopg2.connect(url)
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        c.close()
    return f"{url}{sep}options=-csearch_path%3D{schema}", drop


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=900, help="longest wait for the sync, seconds")
    ap.add_argument("--postgres-url", default=os.environ.get("ENROLL_SYNC_TEST_POSTGRES_URL"))
    ap.add_argument("--redis-url", default=os.environ.get("ENROLL_SYNC_TEST_REDIS_URL"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="web-load-bench-"))
    figures: dict = {"benchmark": "web_load", "users": args.users, "server": "waitress, 16 threads"}
    backends = [("sqlite", {}, 0)]
    drops = []
    if args.postgres_url and args.redis_url:
        db_url, drop = postgres_schema(args.postgres_url)
        drops.append(drop)
        sep = "&" if "?" in args.redis_url else "?"
        backends.append(("postgres", {"database_url": db_url,
                                      "queue_url": f"{args.redis_url}{sep}name=bench_{uuid.uuid4().hex[:8]}"}, 2))
    else:
        figures["postgres"] = "skipped: set ENROLL_SYNC_TEST_POSTGRES_URL and ENROLL_SYNC_TEST_REDIS_URL"
    try:
        for name, urls, workers in backends:
            sandbox, sandbox_url = start_sandbox_process(latency_ms=args.latency_ms)
            site = None
            try:
                log(f"{name}: seeding {args.records} registrations and {args.users} users")
                site = Site(root / name, sandbox_url, records=args.records, users=args.users, workers=workers,
                            **urls)
                site.start()
                log(f"{name}: {args.users} users browsing, {args.idle_seconds:g} s idle, then during the sync")
                figures[name] = asyncio.run(run_site(site, args))
                log(f"{name}: {json.dumps(figures[name]['p95_ms_idle_vs_sync'])}, "
                    f"errors {figures[name]['errors']}")
            finally:
                if site is not None:
                    site.stop()
                sandbox.terminate()
                sandbox.wait(timeout=10)
    finally:
        for drop in drops:
            drop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))
    errors = sum(figures[n]["errors"] for n, _, _ in backends if isinstance(figures.get(n), dict))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
