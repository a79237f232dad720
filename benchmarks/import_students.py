"""Benchmark: importing SIS students against a bare paged read of the same API.

The PowerSchool sandbox runs in its own process, seeded with 100,000 realistic students.
Each measured round, in a fresh child process each:

- **import**: a real import job of a fresh Enroll district (the demo district without
  registrations, its PowerSchool connection assigned to the sandbox's schools, an Import
  Student Mapping of 12 rows: names, birth date through a Date step, gender through Match
  Codes, address, phone, doctor, state id, school number through Match Codes) run by
  ``run_import_job`` exactly as a worker runs it: the adapter's paged read of
  ``/ws/v1/district/student`` with its expansions and extension tables, matching, the
  Overwrite rule, and every student created, profiled, linked and reported in the database
  (SQLite) page by page;
- **bare**: one keep-alive httpx client reading the same pages (same page size, expansions
  and extensions, the count first) and parsing their JSON, nothing else: the transport limit.

    .venv/bin/python benchmarks/import_students.py [--students 100000] [--small 10000]
        [--rounds 5] [--warmup 1]

The two alternate within each round (which goes first alternates too), after a warm-up
round that does not count. Every round is printed; the figures are medians, ``ratio`` is
the median of the per-round ratios import/bare (each compares two runs made moments apart)
and ``ratio_min``/``ratio_max`` their spread. Memory: the import child's peak resident
size (``ru_maxrss``) importing ``--small`` and ``--students`` students; reading page by page,
it should not grow with the number of students. Ends with one line of JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIN_ROUNDS = 5
HERE = Path(__file__).resolve()

TO_ENROLL_DATE = [{"kind": "date", "from_format": "YYYY-MM-DD", "to_format": "MM/DD/YYYY"}]
ROWS = [
    {"to": "student_legal_first_name", "type": "direct", "from": "name.first_name"},
    {"to": "student_legal_middle_name", "type": "direct", "from": "name.middle_name", "overwrite": True},
    {"to": "student_legal_last_name", "type": "direct", "from": "name.last_name"},
    {"to": "birth_date", "type": "transformation", "from": "demographics.birth_date", "steps": TO_ENROLL_DATE},
    {"to": "gender", "type": "match_codes", "from": "demographics.gender", "codes": {"F": "Female", "M": "Male"},
     "unmatched": "blank"},
    {"to": "state_student_id", "type": "direct", "from": "state_province_id"},
    {"to": "home_street", "type": "direct", "from": "addresses.physical.street"},
    {"to": "home_city", "type": "direct", "from": "addresses.physical.city"},
    {"to": "home_zip", "type": "direct", "from": "addresses.physical.postal_code"},
    {"to": "home_phone", "type": "direct", "from": "phones.main.number"},
    {"to": "physician_name", "type": "direct", "from": "contact.doctor_name", "overwrite": True},
    {"to": "school.school_number", "type": "match_codes", "from": "school_enrollment.school_number",
     "codes": {"100": "101", "200": "201", "300": "301"}, "unmatched": "blank"},
]
EXPANSIONS = ("demographics,addresses,phones,contact,contact_info,school_enrollment,ethnicity_race,"
              "initial_enrollment,schedule_setup")


def rss_mb() -> float:
    """The current resident size of this process, MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


# --------------------------------------------------------------------------- the children

def child_bare(url: str, expect: int) -> dict:
    import httpx
    from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
    start = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        token = client.post("/oauth/access_token", data={"grant_type": "client_credentials"},
                            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        size = client.get("/ws/v1/metadata", headers=headers).json()["metadata"]["student_max_page_size"]
        tables = client.get("/ws/v1/district/student", params={"pagesize": 1}, headers=headers).json()[
            "students"]["@extensions"]
        total = client.get("/ws/v1/district/student/count", headers=headers).json()["resource"]["count"]
        seen, page = 0, 1
        while (page - 1) * size < total:
            body = client.get("/ws/v1/district/student", headers=headers, params={
                "page": page, "pagesize": size, "expansions": EXPANSIONS, "extensions": tables}).json()
            students = body["students"].get("student", [])
            seen += len(students) if isinstance(students, list) else 1
            page += 1
    seconds = time.perf_counter() - start
    if seen != expect:
        raise SystemExit(f"the bare read saw {seen} students, not {expect}")
    return {"seconds": seconds, "students": seen, "peak_mb": peak_mb()}


def child_import(url: str, expect: int) -> dict:
    from enroll_sync.db import database
    from enroll_sync.models import School, SyncConnection
    from enroll_sync.sync.imports.jobs import import_counts, start_import
    from enroll_sync.sync.imports.runner import run_import_job
    from enroll_sync.testing import close_database, demo_app, save_import_mapping
    with tempfile.TemporaryDirectory() as tmp:
        app = demo_app(Path(tmp), {"powerschool": url}, registrations=0)
        with app.app_context(), database.connection_context():
            conn = SyncConnection.get(SyncConnection.adapter == "powerschool")
            School.update(sync_connection=conn).where(School.school_number.in_(["101", "201", "301"])).execute()
        save_import_mapping(app, conn.id, ROWS)
        before = rss_mb()
        with app.app_context(), database.connection_context():
            start = time.perf_counter()
            job = start_import(app, SyncConnection.get_by_id(conn.id), None, preview=False)
            run_import_job(app, job.id)
            seconds = time.perf_counter() - start
            counts = import_counts(job.id)
        close_database()
    if sum(counts.values()) != expect or counts.get("Failed") or counts.get("Skipped"):
        raise SystemExit(f"the import did not account for every student exactly once: {counts}")
    return {"seconds": seconds, "students": sum(counts.values()), "counts": counts, "rss_before_mb": before,
            "peak_mb": peak_mb()}


def run_child(mode: str, url: str, expect: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE), "--child", mode, "--url", url, "--expect", str(expect)],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"the {mode} child failed:\n{out.stdout}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_sandbox(students: int, page_size: int):
    code = ("from sis_powerschool.cli import powerschool_command as c; "
            f"c(['--port', '0', '--quiet', '--seed-students', '{students}', '--seed', '1', "
            f"'--page-size-max', '{page_size}'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if not line.startswith("PowerSchool sandbox on "):
        proc.kill()
        raise SystemExit("the sandbox did not start: " + line + proc.stderr.read())
    return proc, line.split()[3]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=10_000, help="students of the memory comparison run")
    ap.add_argument("--page-size", type=int, default=500, help="the sandbox's student_max_page_size")
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--child", choices=("bare", "import"), help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        result = (child_bare if args.child == "bare" else child_import)(args.url, args.expect)
        print(json.dumps(result))
        return result
    if args.rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be at least {MIN_ROUNDS} (the median of fewer is noise)")

    print(f"seeding the sandboxes ({args.small:,} and {args.students:,} students)...", flush=True)
    small_proc, small_url = start_sandbox(args.small, args.page_size)
    big_proc, big_url = start_sandbox(args.students, args.page_size)
    try:
        small = run_child("import", small_url, args.small)
        print(f"memory: importing {args.small:,} students peaked at {small['peak_mb']:.0f} MB "
              f"({small['rss_before_mb']:.0f} MB before the import)", flush=True)
        print(f"{args.students:,} students, {args.page_size} per page; {args.rounds} interleaved rounds after "
              f"{args.warmup} warm-up", flush=True)
        imports, bares, ratios, peaks = [], [], [], []
        for i in range(-args.warmup, args.rounds):
            bare_first = i % 2 == 0
            if bare_first:
                bare = run_child("bare", big_url, args.students)
                imp = run_child("import", big_url, args.students)
            else:
                imp = run_child("import", big_url, args.students)
                bare = run_child("bare", big_url, args.students)
            irate, brate = args.students / imp["seconds"], args.students / bare["seconds"]
            label = "warm-up" if i < 0 else f"round {i + 1}"
            print(f"{label:>8}: import {irate:8.0f} students/s, bare read {brate:8.0f} students/s, ratio "
                  f"{irate / brate:.3f}, import peak {imp['peak_mb']:.0f} MB "
                  f"({'bare' if bare_first else 'import'} first) {imp['counts']}", flush=True)
            peaks.append(imp["peak_mb"])
            if i >= 0:
                imports.append(irate)
                bares.append(brate)
                ratios.append(irate / brate)
    finally:
        for proc in (small_proc, big_proc):
            proc.terminate()
            proc.wait(timeout=10)

    irate, brate, ratio = statistics.median(imports), statistics.median(bares), statistics.median(ratios)
    big_peak = max(peaks)
    print(f"import:    {irate:8.0f} students/s (median)")
    print(f"bare read: {brate:8.0f} students/s (median)")
    print(f"ratio import/bare: {ratio:.3f} (median of the per-round ratios, {min(ratios):.3f} to {max(ratios):.3f})")
    print(f"worker peak memory: {small['peak_mb']:.0f} MB at {args.small:,} students, {big_peak:.0f} MB at "
          f"{args.students:,} ({big_peak - small['peak_mb']:+.0f} MB)")
    figures = {"import_students_per_s": round(irate), "bare_read_students_per_s": round(brate),
               "ratio": round(ratio, 3), "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
               "rounds": args.rounds, "students": args.students,
               f"peak_mb_at_{args.small}": round(small["peak_mb"], 1),
               f"peak_mb_at_{args.students}": round(big_peak, 1),
               "peak_growth_mb": round(big_peak - small["peak_mb"], 1)}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
