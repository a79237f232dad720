"""Benchmark: bulk Sync to SIS end to end, against the bare transport at the same concurrency.

Everything runs through the real parts: the web app over HTTP, the huey queue,
``enroll-sync worker`` processes, and the PowerSchool sandbox in its own process with 20 ms
added to every request. The figures are built so that they cannot flatter the job:

1. **Fair ratio** (SQLite + SqliteHuey, the shipped defaults: one worker process with the
   default WORKERS consumer threads, JOB_TASKS, batch size 100, a 60-row Export Student
   Mapping that maps the State Student Number, 10,000 Approved registrations): records per
   second of the job, its span taken from the *Proceed with Sync* request to the last
   status it wrote (``SyncJob.finished_at``), against the bare transport
   (``powerschool_export.bare_post``) POSTing the very bodies the job sent, with the same
   batch size, over as many connections as the job had requests in flight. Both are
   measured in paired rounds whose order alternates; each round checks that the SIS stored
   the same students from both; requests in flight are measured from the sandbox's request
   log for both. The figure is the median of the per-round ratios, with their spread.
2. The worker's peak memory (VmHWM) for the 10,000 job and for a 100,000 job (target: flat,
   under 250 MB), and the "select all matching + confirmation + Proceed with Sync" time at
   100,000 (target < 2 s).
3. **Scaling** (PostgreSQL + Redis, ``--postgres-url``/``--redis-url``, default from
   ENROLL_SYNC_TEST_POSTGRES_URL / ENROLL_SYNC_TEST_REDIS_URL), at the shipped batch size:
   1 worker process vs 4 (one consumer thread each), beside the bare transport's own 1 -> 4
   connection scaling (two cores bound both), in >= 3 paired rounds; target: the job's
   speed-up >= 0.9 of the bare transport's. Then the 100,000 confirmation + Proceed on
   PostgreSQL.

    .venv/bin/python benchmarks/bulk_sync.py [--records 10000] [--big 100000] [--rounds 5]
        [--scale-rounds 3] [--quick] [--only-scale]

The last line is one JSON object: ``ratio``, ``spread``, ``job_in_flight``,
``bare_in_flight`` and every other figure.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
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

from powerschool_export import bare_post, in_flight, paired_summary, start_sandbox_process, stored_students  # noqa: E402

from enroll_sync import create_app  # noqa: E402
from enroll_sync.db import database  # noqa: E402
from enroll_sync.demo import DEMO_PASSWORD, create_registrations, load_demo  # noqa: E402
from enroll_sync.migrations import upgrade  # noqa: E402
from enroll_sync.models import (Mapping, Organization, Registration, School, SisLink, SyncConnection,  # noqa: E402
                                SyncItem, SyncJob, utcnow)
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
        # the State Student Number: mapped, as a district that has one maps it; it is the
        # second key match-before-insert looks students up by
        D("state_province_id", "state_student_id"),
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

    def fresh_district(self):
        """As before any sync: no links, no earlier jobs, every registration Not Synced (each
        round inserts into an empty SIS, as the first)."""
        with self.app.app_context(), database.connection_context():
            SisLink.delete().execute()
            SyncItem.delete().execute()
            SyncJob.delete().execute()
            Registration.update(sync_status="Not Synced", last_synced_at=None, sync_lock=None,
                                sync_lock_at=None).execute()

    def serve(self):
        self.server = LiveServer(self.app)
        return self.server.url

    def worker_env(self, threads: int) -> dict:
        env = dict(os.environ)
        env.update({"ENROLL_SYNC_INSTANCE_PATH": self.app.config["INSTANCE_PATH"],
                    "ENROLL_SYNC_DATABASE_URL": self.app.config["DATABASE_URL"],
                    "ENROLL_SYNC_QUEUE_URL": self.app.config["QUEUE_URL"],
                    "ENROLL_SYNC_WORKERS": str(threads)})
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
        self.log_path = log_path
        self.proc = subprocess.Popen([ENROLL_SYNC, "worker", "--workers", str(threads)],
                                     env=env.worker_env(threads), stdout=self.log, stderr=subprocess.STDOUT)
        self.peak_kb = 0
        self.cpu_s = 0.0

    def ready(self) -> bool:
        return "consumer thread(s)" in self.log_path.read_text(errors="replace")

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


def proceed(session: httpx.Client) -> dict:
    """"select all matching (Approved)", the confirmation, "Proceed with Sync", over HTTP.
    Returns the job id, when the Proceed request began (wall clock) and the seconds of the
    confirmation and of Proceed."""
    t0 = time.perf_counter()
    r = session.post("/registrations/sync/confirm", data={"all_matching": "1", "status": "Approved"},
                     headers={"HX-Request": "true"})
    confirm_s = time.perf_counter() - t0
    assert r.status_code == 200, r.text[:500]
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                        r.text[r.text.index('action="/registrations/sync"'):])
    data: dict[str, list[str]] = {}
    for k, v in fields:
        if k != "csrf_token":
            data.setdefault(k, []).append(v)
    started = time.time()
    t0 = time.perf_counter()
    r = session.post("/registrations/sync", data=data, headers={"HX-Request": "true"})
    seconds = time.perf_counter() - t0
    assert r.status_code == 200 and "HX-Redirect" in r.headers, (r.status_code, r.text[:500])
    return {"job_id": int(r.headers["HX-Redirect"].rsplit("/", 1)[1]), "started": started,
            "confirm_s": confirm_s, "proceed_s": seconds}


def _wall(when: dt.datetime) -> float:
    """A naive UTC timestamp (as the app stores them) as wall-clock seconds."""
    return when.replace(tzinfo=dt.timezone.utc).timestamp()


def wait_complete(env: Env, job_id: int, workers: list[Worker], timeout: float = 3600) -> SyncJob:
    t0 = time.perf_counter()
    while True:
        for w in workers:
            w.sample()
            if w.proc.poll() is not None:
                raise SystemExit(f"a worker exited ({w.proc.returncode}); see {w.log.name}")
        job = env.job(job_id)
        if job.status == "Completed":
            return job
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"job {job_id} did not complete in {timeout}s ({job.status})")
        time.sleep(0.1)


def check_all_succeeded(env: Env, job_id: int, expect_in_sis: int):
    with env.app.app_context(), database.connection_context():
        bad = list(SyncItem.select(SyncItem.status, SyncItem.reason).where(
            (SyncItem.job == job_id) & (SyncItem.status != "Succeeded")).limit(3).tuples())
    if bad:
        raise SystemExit(f"job {job_id}: not every record succeeded, e.g. {bad}")
    stored = httpx.get(env.sandbox_url + "/sandbox/dump", timeout=600).json()["students"]
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


def start_workers(env: Env, n: int, threads: int, tag: str) -> list[Worker]:
    ws = [Worker(env, threads, env.root / f"worker-{tag}-{i}.log") for i in range(n)]
    deadline = time.time() + 60
    while not all(w.ready() for w in ws):  # startup is not part of a sync
        if time.time() > deadline or any(w.proc.poll() is not None for w in ws):
            raise SystemExit(f"workers did not start; see {env.root}")
        time.sleep(0.05)
    return ws


def run_job(env: Env, session, *, workers: int, threads: int, tag: str, expect_in_sis: int) -> dict:
    """A fresh district and an empty SIS; the job from Proceed to its last status."""
    env.fresh_district()
    reset_sandbox(env.sandbox_url)
    ws = start_workers(env, workers, threads, tag)
    for w in ws:
        w.sample()
    cpu0 = sum(w.cpu_s for w in ws)
    sandbox_cpu0 = _cpu_seconds(SANDBOX_PID[0])
    p = proceed(session)
    job = wait_complete(env, p["job_id"], ws)
    for w in ws:
        w.sample()
    cpu = sum(w.cpu_s for w in ws) - cpu0
    sandbox_cpu = _cpu_seconds(SANDBOX_PID[0]) - sandbox_cpu0
    for w in ws:
        w.stop()
    with env.app.app_context(), database.connection_context():
        last = SyncItem.select(SyncItem.finished_at).where(SyncItem.job == job.id).order_by(
            SyncItem.finished_at.desc()).limit(1).scalar()
    ended = max(_wall(job.finished_at), _wall(last) if last else 0.0)
    seconds = ended - p["started"]
    total = job.total
    check_all_succeeded(env, job.id, expect_in_sis)
    fl = in_flight(env.sandbox_url, since=p["started"], until=ended)
    return {"job_id": job.id, "records": total, "seconds": seconds, "records_per_s": total / seconds,
            "proceed_s": p["proceed_s"], "confirm_s": p["confirm_s"], "peak_mb": max(w.peak_kb for w in ws) / 1024,
            "in_flight": fl, "lookups": len([r for r in httpx.get(env.sandbox_url + "/sandbox/requests").json()[
                "requests"] if r["method"] == "GET" and r.get("start", 0) >= p["started"]]),
            "worker_cpu_ms_per_record": 1000 * cpu / total, "sandbox_cpu_ms_per_record": 1000 * sandbox_cpu / total}


def run_bare(url: str, bodies: list[dict], batch_size: int, connections: int) -> dict:
    from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
    reset_sandbox(url)
    bare = bare_post(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, bodies, batch_size, connections=connections)
    if bare["succeeded"] != len(bodies):
        raise SystemExit(f"the bare transport stored {bare['succeeded']} of {len(bodies)}: {bare['statuses']}")
    bare["in_flight"] = in_flight(url, since=bare["started"], until=bare["ended"])
    return bare


def bodies_of(env: Env, job_id: int) -> list[dict]:
    """What the job sent, as the bare transport sends it (the job's own bodies)."""
    return env.sent_bodies(job_id)


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--big", type=int, default=100000, help="the large job (peak memory, Proceed time)")
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=100, help="the adapter's batch size (shipped: 100)")
    ap.add_argument("--threads", type=int, default=None,
                    help="consumer threads of the worker (default: the shipped WORKERS)")
    ap.add_argument("--postgres-url", default=os.environ.get("ENROLL_SYNC_TEST_POSTGRES_URL"))
    ap.add_argument("--redis-url", default=os.environ.get("ENROLL_SYNC_TEST_REDIS_URL"))
    ap.add_argument("--quick", action="store_true", help="skip the 100,000 runs")
    ap.add_argument("--only-scale", action="store_true", help="only the PostgreSQL + Redis phase")
    ap.add_argument("--only-fair", action="store_true", help="only the SQLite phase")
    ap.add_argument("--rounds", type=int, default=5, help="paired rounds of the fair ratio (>= 3)")
    ap.add_argument("--scale-rounds", type=int, default=3, help="paired rounds of the scaling (>= 3)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    if args.rounds < 3 or args.scale_rounds < 3:
        ap.error("at least 3 rounds (the median of fewer is noise)")
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log line per request
    from enroll_sync.config import SETTINGS
    args.threads = args.threads or int(os.environ.get("ENROLL_SYNC_WORKERS") or SETTINGS["WORKERS"][0])

    root = Path(tempfile.mkdtemp(prefix="bulk-sync-bench-"))
    figures: dict = {"records": args.records, "latency_ms": args.latency_ms, "batch_size": args.batch_size,
                     "mapping_rows": len(mapping_rows()), "state_student_number_mapped": True}
    sandbox, url = start_sandbox_process(latency_ms=args.latency_ms)
    SANDBOX_PID[0] = sandbox.pid
    try:
        if not args.only_scale:
            sqlite_phases(args, root, url, figures)
        if not args.only_fair:
            scale_phase(args, root, url, figures)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))
    return figures


def sqlite_phases(args, root, url, figures):
    log(f"== fair ratio: {args.records:,} Approved registrations, 60-row mapping (State Student Number "
        f"mapped), SQLite + SqliteHuey, 1 worker x {args.threads} consumer thread(s), batch {args.batch_size}, "
        f"sandbox at {args.latency_ms} ms; {args.rounds} paired rounds")
    env = Env(root / "sqlite", url, batch_size=args.batch_size)
    t0 = time.perf_counter()
    env.add_registrations(args.records)
    log(f"   (made {args.records:,} registrations in {time.perf_counter() - t0:.1f}s)")
    session = sign_in(env.serve())

    # warm-up (not counted): a job whose bodies the bare transport will send, and the
    # students the SIS must hold after every run of either side
    warm = run_job(env, session, workers=1, threads=args.threads, tag="warm-up", expect_in_sis=args.records)
    bodies, want = bodies_of(env, warm["job_id"]), stored_students(url)
    log(f"    warm-up: job {warm['records_per_s']:7.1f} records/s")
    jobs_, bares, ratios = [], [], []
    for n in range(args.rounds):
        job_first = n % 2 == 1  # alternate: the warm-up ran the job last
        got = {}
        for side in (("job", "bare") if job_first else ("bare", "job")):
            if side == "job":
                got["job"] = run_job(env, session, workers=1, threads=args.threads, tag=f"fair-{n}",
                                     expect_in_sis=args.records)
            else:  # as many connections as the job's consumer threads (its requests in flight)
                got["bare"] = run_bare(url, bodies, args.batch_size, connections=args.threads)
            if stored_students(url) != want:
                raise SystemExit(f"{side}: the SIS stored other students than the warm-up job")
        j, b = got["job"], got["bare"]
        label = f"round {n + 1}"
        log(f"   {label:>8}: job {j['records_per_s']:7.1f} records/s (in flight {j['in_flight']['mean']:.2f}, peak "
            f"{j['in_flight']['peak']}; {j['lookups']} look-ups), bare {b['records_per_s']:7.1f} records/s (in flight "
            f"{b['in_flight']['mean']:.2f}, peak {b['in_flight']['peak']}), ratio {j['records_per_s'] / b['records_per_s']:.3f}"
            f" ({'job' if job_first else 'bare'} first; worker CPU {j['worker_cpu_ms_per_record']:.2f} ms/record, "
            f"sandbox {j['sandbox_cpu_ms_per_record']:.2f})")
        jobs_.append(j)
        bares.append(b)
        ratios.append(j["records_per_s"] / b["records_per_s"])
    summary = paired_summary(ratios)
    job_rps = statistics.median(j["records_per_s"] for j in jobs_)
    bare_rps = statistics.median(b["records_per_s"] for b in bares)
    log(f"   job {job_rps:.1f} records/s, bare {bare_rps:.1f} records/s (medians); fair ratio {summary['ratio']:.3f} "
        f"(median of paired ratios, spread {summary['spread'][0]:.3f} to {summary['spread'][1]:.3f}; target >= 0.8)")
    figures.update({
        **summary,
        "job_in_flight": max(j["in_flight"]["peak"] for j in jobs_),
        "job_in_flight_mean": round(statistics.median(j["in_flight"]["mean"] for j in jobs_), 2),
        "bare_in_flight": max(b["in_flight"]["peak"] for b in bares),
        "bare_in_flight_mean": round(statistics.median(b["in_flight"]["mean"] for b in bares), 2),
        "worker_threads": args.threads,
        "job_records_per_s": round(job_rps, 1), "bare_records_per_s": round(bare_rps, 1),
        "lookups_per_job": int(statistics.median(j["lookups"] for j in jobs_)),
        "worker_cpu_ms_per_record": round(statistics.median(j["worker_cpu_ms_per_record"] for j in jobs_), 3),
        "sandbox_cpu_ms_per_record": round(statistics.median(j["sandbox_cpu_ms_per_record"] for j in jobs_), 3),
        "peak_worker_mb_10k": round(max(j["peak_mb"] for j in jobs_), 1),
        "proceed_s_10k": round(statistics.median(j["proceed_s"] for j in jobs_), 3),
    })

    if not args.quick and args.big > args.records:
        more = args.big - args.records
        log(f"== {args.big:,} Approved registrations (adding {more:,})")
        t0 = time.perf_counter()
        env.add_registrations(more)
        log(f"   (made them in {time.perf_counter() - t0:.1f}s)")
        big = run_job(env, session, workers=1, threads=args.threads, tag="100k", expect_in_sis=args.big)
        log(f"   select all matching {args.big:,}: confirmation {big['confirm_s'] * 1000:.0f} ms + Proceed with Sync "
            f"{big['proceed_s'] * 1000:.0f} ms (target < 2000 ms together)")
        log(f"   job: {big['records_per_s']:.1f} records/s ({big['seconds']:.0f}s); worker peak {big['peak_mb']:.0f} MB "
            f"(10k: {figures['peak_worker_mb_10k']:.0f} MB; target < 250)")
        figures.update({"big_records": args.big, "proceed_s_100k": round(big["proceed_s"], 3),
                        "confirm_s_100k": round(big["confirm_s"], 3),
                        "peak_worker_mb_100k": round(big["peak_mb"], 1),
                        "job_records_per_s_100k": round(big["records_per_s"], 1)})
    env.close()


def scale_phase(args, root, url, figures):
    if not (args.postgres_url and args.redis_url):
        log("== PostgreSQL + Redis skipped (set ENROLL_SYNC_TEST_POSTGRES_URL and ENROLL_SYNC_TEST_REDIS_URL)")
        return
    import psycopg2
    schema = "bench_" + uuid.uuid4().hex[:10]
    qname = "bench_" + uuid.uuid4().hex[:10]
    with psycopg2.connect(args.postgres_url) as c, c.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in args.postgres_url else "?"
    db_url = f"{args.postgres_url}{sep}options=-csearch_path%3D{schema}"
    q_url = f"{args.redis_url}{'&' if '?' in args.redis_url else '?'}name={qname}"
    try:
        log(f"== scaling: PostgreSQL + Redis, {args.records:,} records, batch {args.batch_size}: 1 worker process "
            f"vs 4 (1 consumer thread each), beside the bare transport at 1 vs 4 connections; "
            f"{args.scale_rounds} paired rounds")
        env = Env(root / "pg", url, database_url=db_url, queue_url=q_url, batch_size=args.batch_size)
        env.add_registrations(args.records)
        session = sign_in(env.serve())
        bodies = None
        rows = []
        for n in range(args.scale_rounds):
            order = ["job1", "job4", "bare1", "bare4"]
            if n % 2:
                order.reverse()
            got = {}
            for side in order:
                if side.startswith("job"):
                    k = int(side[-1])
                    got[side] = run_job(env, session, workers=k, threads=1, tag=f"pg-{k}-{n}",
                                        expect_in_sis=args.records)
                    if bodies is None:
                        bodies = bodies_of(env, got[side]["job_id"])
            for side in order:
                if side.startswith("bare"):
                    got[side] = run_bare(url, bodies, args.batch_size, connections=int(side[-1]))
            job_x = got["job4"]["records_per_s"] / got["job1"]["records_per_s"]
            bare_x = got["bare4"]["records_per_s"] / got["bare1"]["records_per_s"]
            rows.append({"job_x": job_x, "bare_x": bare_x, "eff": job_x / bare_x, **got})
            log(f"   round {n + 1}: job 1 -> 4 workers {got['job1']['records_per_s']:7.1f} -> "
                f"{got['job4']['records_per_s']:7.1f} records/s ({job_x:.2f}x; in flight peak "
                f"{got['job1']['in_flight']['peak']} -> {got['job4']['in_flight']['peak']}), bare 1 -> 4 connections "
                f"{got['bare1']['records_per_s']:7.1f} -> {got['bare4']['records_per_s']:7.1f} ({bare_x:.2f}x); "
                f"job/bare speed-up {job_x / bare_x:.3f}")
        effs = [r["eff"] for r in rows]
        med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
        log(f"   speed-up 4 vs 1: job {med('job_x'):.2f}x, bare transport {med('bare_x'):.2f}x; job/bare "
            f"{statistics.median(effs):.3f} (spread {min(effs):.3f} to {max(effs):.3f}; target >= 0.9)")
        figures.update({
            "scale_ratio": round(statistics.median(effs), 3), "scale_spread": [round(min(effs), 3), round(max(effs), 3)],
            "speedup_4_vs_1": round(med("job_x"), 2), "bare_speedup_1_to_4": round(med("bare_x"), 2),
            "pg_redis_1_worker_records_per_s": round(statistics.median(r["job1"]["records_per_s"] for r in rows), 1),
            "pg_redis_4_workers_records_per_s": round(statistics.median(r["job4"]["records_per_s"] for r in rows), 1),
            "scale_job_in_flight": [max(r["job1"]["in_flight"]["peak"] for r in rows),
                                    max(r["job4"]["in_flight"]["peak"] for r in rows)],
            "scale_bare_in_flight": [max(r["bare1"]["in_flight"]["peak"] for r in rows),
                                     max(r["bare4"]["in_flight"]["peak"] for r in rows)],
            "scale_batch_size": args.batch_size,
        })
        if not args.quick and args.big > args.records:
            env.add_registrations(args.big - args.records)
            env.fresh_district()
            p = proceed(session)
            log(f"   select all matching {args.big:,} on PostgreSQL: confirmation {p['confirm_s'] * 1000:.0f} ms + "
                f"Proceed with Sync {p['proceed_s'] * 1000:.0f} ms (target < 2000 ms together)")
            figures.update({"proceed_s_100k_postgres": round(p["proceed_s"], 3),
                            "confirm_s_100k_postgres": round(p["confirm_s"], 3)})
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


if __name__ == "__main__":
    main()
