"""Benchmark: bulk Sync to SIS end to end, against the bare transport loop.

What it measures, each through the real parts (the web app over HTTP, the huey queue,
``enroll-sync worker`` processes, the PowerSchool sandbox in its own process with
20 ms added to every request):

1. 10,000 Approved registrations, a 60-row Export Student Mapping, SQLite +
   SqliteHuey (the embedded default), one worker process: records per second from
   "Proceed with Sync" to the job's completion, beside the bare httpx POST loop of
   the PowerSchool benchmark posting the very same student bodies with the same batch
   size (ratio; target >= 0.8). The worker runs with the default WORKERS (2 consumer
   threads); the figure with 1 thread is printed too.
2. The worker's peak memory (VmHWM) for the 10,000 job and for a 100,000 job
   (target: flat, under 250 MB).
3. The time of the "select all matching 100,000 + Proceed with Sync" request
   (target < 2 s), and of the same request at 10,000.
4. With PostgreSQL and Redis (``--postgres-url``/``--redis-url``, default from
   ENROLL_SYNC_TEST_POSTGRES_URL / ENROLL_SYNC_TEST_REDIS_URL): the same 10,000 with 1
   worker process and with 4 (one consumer thread each), and the speed-up (target
   >= 3x while the SIS latency dominates: batches of ``--scale-batch-size`` records).

    .venv/bin/python benchmarks/bulk_sync.py [--records 10000] [--big 100000] [--quick]

The last line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
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

from powerschool_export import bare_httpx_post_loop, start_sandbox_process  # noqa: E402

from enroll_sync import create_app  # noqa: E402
from enroll_sync.db import database  # noqa: E402
from enroll_sync.demo import DEMO_PASSWORD, create_registrations, load_demo  # noqa: E402
from enroll_sync.migrations import upgrade  # noqa: E402
from enroll_sync.models import (Mapping, Organization, Registration, School, SisLink, SyncConnection, SyncItem, SyncJob, utcnow)
from enroll_sync.testing import LiveServer  # noqa: E402

ENROLL_SYNC = str(Path(sys.executable).with_name("enroll-sync"))
SCHOOLS = {"101": "100", "102": "100", "201": "200", "301": "300"}
GRADES = {"K": "0", **{str(g): str(g) for g in range(1, 13)}}


# ----------------------------------------------------------------------------- the 60-row mapping

def D(to, frm):
    return {"to": to, "type": "direct", "from": frm}


def T(to, frm, *steps):
    row = {"to": to, "type": "transformation", "steps": list(steps)}
    if frm:
        row["from"] = frm
    return row


def C(to, frm, codes, unmatched="fail"):
    return {"to": to, "type": "match_codes", "from": frm, "codes": codes, "unmatched": unmatched}


def N(to):
    return {"to": to, "type": "do_not_map"}


def mapping_rows() -> list[dict]:
    """A realistic PowerSchool Export Student Mapping: every field the adapter offers
    has a row (Direct, Match Codes, Transformation chains, Do Not Map)."""
    date = {"kind": "date", "from_format": "auto", "to_format": "YYYY-MM-DD"}
    phone = {"kind": "phone", "format": "(999) 999-9999"}
    rows = [
        D("local_id", "registration.form_id"),
        # Do Not Map: mapped, the adapter's match-by-state-ID search adds several GETs per
        # export (sparse 10-digit ids split its range queries); see the report
        N("state_province_id"),
        T("student_username", None, {"kind": "join", "fields": ["student_legal_first_name", "student_legal_last_name"],
                                     "delimiter": "."}, {"kind": "transliterate"}, {"kind": "lower"},
          {"kind": "substitute", "mode": "regex", "find": r"[^a-z.]", "replace": ""},
          {"kind": "max_length", "length": 20}),
        T("name.first_name", "student_legal_first_name", {"kind": "squish"}, {"kind": "proper_case"},
          {"kind": "max_length", "length": 50}),
        T("name.middle_name", "student_legal_middle_name", {"kind": "squish"}, {"kind": "max_length", "length": 30}),
        T("name.last_name", "student_legal_last_name", {"kind": "squish"}, {"kind": "proper_case"},
          {"kind": "max_length", "length": 50}),
        C("demographics.gender", "gender", {"Female": "F", "Male": "M"}, "blank"),
        T("demographics.birth_date", "birth_date", date),
        T("demographics.district_entry_date", "requested_start_date", date),
        N("demographics.projected_graduation_year"),
        T("addresses.physical.street", None, {"kind": "join", "fields": ["home_street", "home_apartment"],
                                              "delimiter": ", "}, {"kind": "squish"},
          {"kind": "max_length", "length": 60}),
        D("addresses.physical.city", "home_city"),
        D("addresses.physical.state_province", "home_state"),
        T("addresses.physical.postal_code", "home_zip", {"kind": "trim"}),
        N("addresses.physical.grid_location"),
        D("addresses.mailing.street", "mailing_street"),
        D("addresses.mailing.city", "mailing_city"),
        D("addresses.mailing.state_province", "mailing_state"),
        D("addresses.mailing.postal_code", "mailing_zip"),
        N("addresses.mailing.grid_location"),
        T("contact.emergency_contact_name1", "emergency1_name", {"kind": "squish"}, {"kind": "max_length", "length": 60}),
        T("contact.emergency_phone1", "emergency1_phone", phone),
        T("contact.emergency_contact_name2", "emergency2_name", {"kind": "squish"}, {"kind": "max_length", "length": 60}),
        T("contact.emergency_phone2", "emergency2_phone", phone),
        T("contact.guardian_email", None, {"kind": "pick", "fields": ["guardian1_email", "guardian2_email"]},
          {"kind": "lower"}, {"kind": "trim"}),
        T("contact.mother", None, {"kind": "join", "fields": ["guardian1_first_name", "guardian1_last_name"]}),
        T("contact.father", None, {"kind": "join", "fields": ["guardian2_first_name", "guardian2_last_name"]}),
        N("contact.doctor_name"),
        N("contact.doctor_phone"),
        D("contact_info.email", "student_email"),
        T("phones.main.number", "home_phone", phone),
        C("school_enrollment.school_number", "school.school_number", SCHOOLS),
        C("school_enrollment.grade_level", "registration.grade", GRADES),
        T("school_enrollment.entry_date", "requested_start_date", date),
        T("school_enrollment.exit_date", None, {"kind": "value", "value": "2027-06-10"}),
        T("school_enrollment.enroll_status", None, {"kind": "value", "value": "P"}),
        T("school_enrollment.entry_code", None, {"kind": "value", "value": "E1"}),
        N("school_enrollment.exit_code"),
        T("school_enrollment.district_of_residence", None, {"kind": "value", "value": "Riverside Unified"}),
        N("school_enrollment.track"),
        N("school_enrollment.full_time_equivalency.fteid"),
        T("initial_enrollment.district_entry_date", "requested_start_date", date),
        C("initial_enrollment.district_entry_grade_level", "registration.grade", GRADES),
        T("initial_enrollment.school_entry_date", "requested_start_date", date),
        C("initial_enrollment.school_entry_grade_level", "registration.grade", GRADES),
        N("schedule_setup.home_room"),
        C("schedule_setup.next_school", "school.school_number", SCHOOLS),
        N("schedule_setup.sched_next_year_grade"),
        T("_extension_data.u_students_extension.bus_route", "bus_stop", {"kind": "max_length", "length": 20}),
        D("_extension_data.u_students_extension.allergies", "allergies"),
        C("_extension_data.u_students_extension.photo_release", "photo_release", {"Yes": "true", "No": "false"},
          "blank"),
        T("_extension_data.u_students_extension.enrollment_source", None, {"kind": "value", "value": "Enroll"}),
        D("_extension_data.u_studentsuserfields.home_language", "home_language"),
        D("_extension_data.u_studentsuserfields.previous_school", "previous_school_name"),
        N("_extension_data.u_studentsuserfields.siblings_enrolled"),
    ]
    # five more rows an admin typically leaves as Do Not Map after Auto-Map proposed them
    for key in ("contact.doctor_name", "schedule_setup.home_room", "school_enrollment.track",
                "addresses.physical.grid_location", "schedule_setup.sched_next_year_grade"):
        rows.append(N(key))
    assert len(rows) == 60, len(rows)
    return rows


# ----------------------------------------------------------------------------- helpers

def log(msg):
    print(msg, flush=True)


class Env:
    """One app (database + queue) with registrations, a sandbox connection and a mapping."""

    def __init__(self, root: Path, sandbox_url: str, *, database_url=None, queue_url=None, batch_size=100):
        self.root = root
        cfg = {"INSTANCE_PATH": str(root / "instance"), "IN_PROCESS_WORKER": "0", "LOGIN_MAX_ATTEMPTS": "1000"}
        if database_url:
            cfg["DATABASE_URL"] = database_url
        if queue_url:
            cfg["QUEUE_URL"] = queue_url
        self.app = create_app(cfg)
        self.sandbox_url = sandbox_url
        with self.app.app_context(), database.connection_context():
            upgrade()
            _, org = load_demo(self.app.extensions["enroll_sync.plugins"], {"powerschool": sandbox_url},
                               registrations=0)
            self.org_id = org.id
            conn = SyncConnection.get((SyncConnection.organization == org) & (SyncConnection.adapter == "powerschool"))
            conn.settings = {**conn.settings, "server_url": sandbox_url, "batch_size": batch_size}
            conn.updated_at = utcnow()
            conn.save()
            self.conn_id = conn.id
            School.update(sync_connection=conn).where(
                (School.organization == org) & (School.school_number != "901")).execute()
            Mapping.create(connection=conn, kind="export_student", rows=mapping_rows())
        self.next_form_id = 100001
        self.server = None

    def add_registrations(self, n: int):
        with self.app.app_context(), database.connection_context():
            org = Organization.get_by_id(self.org_id)
            schools = list(School.select().where((School.organization == org) & (School.school_number != "901")))
            start = self.next_form_id
            create_registrations(org, schools, n, seed=start, statuses=["Approved"], first_form_id=start,
                                 schoolmint_start=start + 400000, chunk=1000)
            self.next_form_id += n

    def forget_sis_ids(self):
        """So the next sync inserts again (for a fair second run against an empty SIS)."""
        with self.app.app_context(), database.connection_context():
            Registration.update(sync_status="Not Synced").execute()
            SisLink.delete().execute()

    def serve(self):
        self.server = LiveServer(self.app)
        return self.server.url

    def worker_env(self, threads: int) -> dict:
        env = dict(os.environ)
        env.update({"ENROLL_SYNC_INSTANCE_PATH": self.app.config["INSTANCE_PATH"],
                    "ENROLL_SYNC_DATABASE_URL": self.app.config["DATABASE_URL"],
                    "ENROLL_SYNC_QUEUE_URL": self.app.config["QUEUE_URL"],
                    "ENROLL_SYNC_WORKERS": str(threads),
                    "ENROLL_SYNC_JOB_TASKS": str(self.app.config.get("JOB_TASKS") or 4)})
        return env

    def job(self, job_id):
        with self.app.app_context(), database.connection_context():
            return SyncJob.get_by_id(job_id)

    def sent_bodies(self, job_id) -> list[dict]:
        with self.app.app_context(), database.connection_context():
            return [s for (s,) in SyncItem.select(SyncItem.sent).where(SyncItem.job == job_id)
                    .order_by(SyncItem.id).tuples()]

    def close(self):
        if self.server:
            self.server.stop()
        if not database.is_closed():
            database.close()


class Worker:
    def __init__(self, env: Env, threads: int, log_path: Path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([ENROLL_SYNC, "worker", "--workers", str(threads)],
                                     env=env.worker_env(threads), stdout=self.log, stderr=subprocess.STDOUT)
        self.peak_kb = 0
        self.cpu_s = 0.0

    def sample(self):
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        m = re.search(r"VmHWM:\s+(\d+) kB", text)
        if m:
            self.peak_kb = max(self.peak_kb, int(m.group(1)))
        self.cpu_s = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self):
        self.sample()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def sign_in(base_url) -> httpx.Client:
    s = httpx.Client(base_url=base_url, timeout=600, follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', s.get("/login").text).group(1)
    r = s.post("/login", data={"email": "registrar@riverside.example", "password": DEMO_PASSWORD,
                               "csrf_token": token})
    assert r.status_code == 302, r.text[:300]
    page = s.get("/registrations/")
    s.headers["X-CSRFToken"] = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return s


def proceed(session: httpx.Client) -> tuple[int, float, int]:
    """"select all matching (Approved) + Proceed with Sync" over HTTP; returns (job id,
    seconds of the Proceed request, records in the job)."""
    r = session.post("/registrations/sync/confirm", data={"all_matching": "1", "status": "Approved"},
                     headers={"HX-Request": "true"})
    assert r.status_code == 200, r.text[:500]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                        r.text[r.text.index('action="/registrations/sync"'):])
    data: dict[str, list[str]] = {}
    for k, v in fields:
        if k != "csrf_token":
            data.setdefault(k, []).append(v)
    t0 = time.perf_counter()
    r = session.post("/registrations/sync", data=data, headers={"HX-Request": "true"})
    seconds = time.perf_counter() - t0
    assert r.status_code == 200 and "HX-Redirect" in r.headers, (r.status_code, r.text[:500])
    job_id = int(r.headers["HX-Redirect"].rsplit("/", 1)[1])
    return job_id, seconds, 0


def wait_complete(env: Env, job_id: int, workers: list[Worker], timeout: float = 3600) -> float:
    """Seconds until the job is Completed, sampling the workers' peak memory meanwhile."""
    t0 = time.perf_counter()
    while True:
        for w in workers:
            w.sample()
            if w.proc.poll() is not None:
                raise SystemExit(f"a worker exited ({w.proc.returncode}); see {w.log.name}")
        job = env.job(job_id)
        if job.status == "Completed":
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"job {job_id} did not complete in {timeout}s ({job.status})")
        time.sleep(0.1)


def check_all_succeeded(env: Env, job_id: int, sandbox_url: str, expect_in_sis: int):
    with env.app.app_context(), database.connection_context():
        bad = (SyncItem.select(SyncItem.status, SyncItem.reason).where(
            (SyncItem.job == job_id) & (SyncItem.status != "Succeeded")).limit(3).tuples())
        bad = list(bad)
    if bad:
        raise SystemExit(f"job {job_id}: not every record succeeded, e.g. {bad}")
    stored = httpx.get(sandbox_url + "/sandbox/dump", timeout=600).json()["students"]
    ids = [s["local_id"] for s in stored]
    if len(ids) != expect_in_sis or len(set(ids)) != len(ids):
        raise SystemExit(f"the sandbox holds {len(ids)} students ({len(set(ids))} distinct), expected {expect_in_sis}")


SANDBOX_PID = [None]


def _cpu_seconds(pid) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def reset_sandbox(url):
    httpx.post(url + "/sandbox/reset", timeout=60).raise_for_status()


def run_job(env: Env, session, sandbox_url, *, workers: int, threads: int, tag: str, expect_in_sis: int):
    ws = [Worker(env, threads, env.root / f"worker-{tag}-{i}.log") for i in range(workers)]
    time.sleep(1.5)  # let them start (startup is not part of a sync)
    for w in ws:
        w.sample()
    cpu0 = sum(w.cpu_s for w in ws)
    sandbox_cpu0 = _cpu_seconds(SANDBOX_PID[0])
    job_id, proceed_s, _ = proceed(session)
    seconds = wait_complete(env, job_id, ws)
    for w in ws:
        w.sample()
    cpu = sum(w.cpu_s for w in ws) - cpu0
    sandbox_cpu = _cpu_seconds(SANDBOX_PID[0]) - sandbox_cpu0
    for w in ws:
        w.stop()
    total = env.job(job_id).total
    check_all_succeeded(env, job_id, sandbox_url, expect_in_sis)
    return {"job_id": job_id, "records": total, "seconds": seconds, "records_per_s": total / seconds,
            "proceed_s": proceed_s, "peak_mb": max(w.peak_kb for w in ws) / 1024,
            "worker_cpu_ms_per_record": 1000 * cpu / total, "sandbox_cpu_ms_per_record": 1000 * sandbox_cpu / total}


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--big", type=int, default=100000, help="the large job (peak memory, Proceed time)")
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--scale-batch-size", type=int, default=5,
                    help="batch size of the 1-vs-4 worker run, so that SIS latency dominates")
    ap.add_argument("--postgres-url", default=os.environ.get("ENROLL_SYNC_TEST_POSTGRES_URL"))
    ap.add_argument("--redis-url", default=os.environ.get("ENROLL_SYNC_TEST_REDIS_URL"))
    ap.add_argument("--quick", action="store_true", help="skip the 100,000 job")
    ap.add_argument("--only-scale", action="store_true", help="only the PostgreSQL + Redis 1-vs-4 run")
    ap.add_argument("--rounds", type=int, default=3, help="job and bare-loop runs at 10,000; the best counts")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request

    root = Path(tempfile.mkdtemp(prefix="bulk-sync-bench-"))
    figures: dict = {"records": args.records, "latency_ms": args.latency_ms, "batch_size": args.batch_size,
                     "mapping_rows": len(mapping_rows())}
    sandbox, url = start_sandbox_process(latency_ms=args.latency_ms)
    SANDBOX_PID[0] = sandbox.pid
    try:
        # ------------------------------------------------------------ 1. SQLite + SqliteHuey, 10,000
        if not args.only_scale:
            sqlite_phases(args, root, url, figures)
        # ------------------------------------------------------------ 3. PostgreSQL + Redis, 1 vs 4 workers
        scale_phase(args, root, url, figures)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))
    return figures


def _rates(runs) -> str:
    return ", ".join("%.0f" % r["records_per_s"] for r in runs)


def sqlite_phases(args, root, url, figures):
    log(f"== {args.records:,} Approved registrations, 60-row mapping, SQLite + SqliteHuey, "
        f"sandbox at {args.latency_ms} ms")
    env = Env(root / "sqlite", url, batch_size=args.batch_size)
    t0 = time.perf_counter()
    env.add_registrations(args.records)
    log(f"   (made {args.records:,} registrations in {time.perf_counter() - t0:.1f}s)")
    base = env.serve()
    session = sign_in(base)

    from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
    runs, bares, bodies = [], [], None
    for n in range(args.rounds):  # interleaved, best of each: the machine is shared
        env.forget_sis_ids()
        reset_sandbox(url)
        run = run_job(env, session, url, workers=1, threads=2, tag=f"10k-{n}", expect_in_sis=args.records)
        runs.append(run)
        if bodies is None:
            bodies = [{**b, "action": "INSERT"} for b in env.sent_bodies(run["job_id"])]
            for b in bodies:
                b.pop("id", None)
        reset_sandbox(url)
        bare = bare_httpx_post_loop(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, bodies, args.batch_size)
        if bare["succeeded"] != args.records:
            raise SystemExit(f"the bare loop stored {bare['succeeded']} of {args.records}: {bare['statuses']}")
        bares.append(bare)
    one = max(runs, key=lambda r: r["records_per_s"])
    bare = max(bares, key=lambda r: r["records_per_s"])
    log(f"   job + 1 worker (2 threads): {one['records_per_s']:8.1f} records/s  best of "
        f"{_rates(runs)}  (Proceed with Sync "
        f"{one['proceed_s'] * 1000:.0f} ms; worker peak {max(r['peak_mb'] for r in runs):.0f} MB; "
        f"CPU per record: worker {one['worker_cpu_ms_per_record']:.2f} ms, sandbox "
        f"{one['sandbox_cpu_ms_per_record']:.2f} ms)")
    log(f"   bare httpx loop:            {bare['records_per_s']:8.1f} records/s  best of "
        f"{_rates(bares)}  (same bodies, batch {args.batch_size})")

    env.forget_sis_ids()
    reset_sandbox(url)
    single = run_job(env, session, url, workers=1, threads=1, tag="10k-1t", expect_in_sis=args.records)
    log(f"   job + 1 worker (1 thread):  {single['records_per_s']:8.1f} records/s")
    ratio = one["records_per_s"] / bare["records_per_s"]
    log(f"   ratio job/bare: {ratio:.3f} (target >= 0.8); with 1 consumer thread: "
        f"{single['records_per_s'] / bare['records_per_s']:.3f}")
    figures.update({
        "job_records_per_s": round(one["records_per_s"], 1),
        "job_1thread_records_per_s": round(single["records_per_s"], 1),
        "bare_records_per_s": round(bare["records_per_s"], 1),
        "ratio": round(ratio, 3),
        "ratio_1thread": round(single["records_per_s"] / bare["records_per_s"], 3),
        "peak_worker_mb_10k": round(max([r["peak_mb"] for r in runs] + [single["peak_mb"]]), 1),
        "proceed_s_10k": round(one["proceed_s"], 3),
    })

    # ------------------------------------------------------------ 2. 100,000
    if not args.quick and args.big > args.records:
        more = args.big - args.records
        log(f"== {args.big:,} Approved registrations (adding {more:,})")
        t0 = time.perf_counter()
        env.add_registrations(more)
        log(f"   (made them in {time.perf_counter() - t0:.1f}s)")
        env.forget_sis_ids()
        reset_sandbox(url)
        big = run_job(env, session, url, workers=1, threads=2, tag="100k", expect_in_sis=args.big)
        log(f"   select all matching {args.big:,} + Proceed with Sync: {big['proceed_s'] * 1000:.0f} ms "
            f"(target < 2000 ms)")
        log(f"   job + 1 worker: {big['records_per_s']:.1f} records/s ({big['seconds']:.0f}s); "
            f"worker peak {big['peak_mb']:.0f} MB (10k: {figures['peak_worker_mb_10k']:.0f} MB; target < 250)")
        figures.update({"big_records": args.big, "proceed_s_100k": round(big["proceed_s"], 3),
                        "peak_worker_mb_100k": round(big["peak_mb"], 1),
                        "job_records_per_s_100k": round(big["records_per_s"], 1)})
    env.close()


def scale_phase(args, root, url, figures):
    if args.postgres_url and args.redis_url:
        import psycopg2
        schema = "bench_" + uuid.uuid4().hex[:10]
        qname = "bench_" + uuid.uuid4().hex[:10]
        with psycopg2.connect(args.postgres_url) as c, c.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in args.postgres_url else "?"
        db_url = f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}"
        q_url = f"{args.redis_url}{'&' if '?' in args.redis_url else '?'}name={qname}"
        try:
            log(f"== PostgreSQL + Redis, {args.records:,} records, batch size {args.scale_batch_size}: "
                f"1 worker process vs 4")
            env = Env(root / "pg", url, database_url=db_url, queue_url=q_url, batch_size=args.scale_batch_size)
            env.app.config["JOB_TASKS"] = 8
            env.add_registrations(args.records)
            session = sign_in(env.serve())
            reset_sandbox(url)
            w1 = run_job(env, session, url, workers=1, threads=1, tag="pg-1", expect_in_sis=args.records)
            log(f"   1 worker:  {w1['records_per_s']:8.1f} records/s ({w1['seconds']:.1f}s; Proceed "
                f"{w1['proceed_s'] * 1000:.0f} ms; CPU per record: worker {w1['worker_cpu_ms_per_record']:.2f} ms, "
                f"sandbox {w1['sandbox_cpu_ms_per_record']:.2f} ms)")
            env.forget_sis_ids()
            reset_sandbox(url)
            w4 = run_job(env, session, url, workers=4, threads=1, tag="pg-4", expect_in_sis=args.records)
            speedup = w4["records_per_s"] / w1["records_per_s"]
            log(f"   4 workers: {w4['records_per_s']:8.1f} records/s ({w4['seconds']:.1f}s; CPU per record: "
                f"workers {w4['worker_cpu_ms_per_record']:.2f} ms, sandbox {w4['sandbox_cpu_ms_per_record']:.2f} ms)")
            log(f"   speed-up 4 vs 1: {speedup:.2f}x (target >= 3)")
            figures.update({"pg_redis_1_worker_records_per_s": round(w1["records_per_s"], 1),
                            "pg_redis_4_workers_records_per_s": round(w4["records_per_s"], 1),
                            "speedup_4_vs_1": round(speedup, 2),
                            "scale_batch_size": args.scale_batch_size,
                            "proceed_s_10k_postgres": round(w1["proceed_s"], 3)})
            env.close()
        finally:
            c = psycopg2.connect(args.postgres_url)
            c.autocommit = True
            with c.cursor() as cur:
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            c.close()
            import redis
            r = redis.Redis.from_url(args.redis_url)
            for key in r.scan_iter(f"huey.*.{qname}*"):
                r.delete(key)
    else:
        log("== PostgreSQL + Redis skipped (set ENROLL_SYNC_TEST_POSTGRES_URL and ENROLL_SYNC_TEST_REDIS_URL)")


if __name__ == "__main__":
    main()
