"""Benchmark: the Aeries adapter against the bare transport, on the insert and the update
path.

Mapped records go through ``AeriesAdapter.export`` in batches of the connection's batch
size (as a sync job hands them over) to the Aeries sandbox, run in its own process with
``--latency-ms`` added to every request and ``--existing`` students already enrolled. The
bare transport POSTs the very same bodies (``adapter.preview``: request line and body,
checked equal to what the adapter sent) to the same URLs through one ``httpx.Client``,
bodies encoded before the clock starts: no year check, no roster reads, no comparison of
what Aeries answered, no parsing beyond the status. (The sandbox's server, werkzeug, closes
every connection after its answer, so both sides connect once per request alike.)

Aeries takes one student per request and documents no rate limit, so the adapter sends one
request at a time; the bare loop does the same (one request in flight, measured on both
sides from the sandbox's request log, not assumed).

- **insert**: the SIS holds only the existing students; records without a StudentID. The
  adapter pays, per batch, for the year check (``systeminfo``) and for reading every
  school's roster of the target year to match before inserting (Aeries has no duplicate
  check), so the ratio falls as the district grows and rises with the batch size.
- **update**: the SIS holds the students; records carry their StudentID (as the core
  sends a student it has a link for): both sides send ``UpdateStudent``; the adapter also
  checks each link against the roster and compares each answer with what it sent (the
  fields Aeries ignored).

Each run is timed whole (adapter construction, connection, every batch). The two sides are
measured in paired rounds after a warm-up round that does not count, which side goes first
alternating; after each run the students the SIS holds are compared, as the SIS stored
them, with what the other side left. The figure is the median of the per-round ratios
adapter/bare, with their spread (min, max).

    .venv/bin/python benchmarks/aeries_export.py [--records 600] [--latency-ms 10]
        [--batch-size 100] [--existing 1000] [--rounds 5] [--warmup 1] [--paths insert,update]

The last line is one JSON object: ``{"ratio", "spread", "job_in_flight", "bare_in_flight",
"insert": {...}, "update": {...}, ...}`` (``ratio``: the lower of the two paths' medians).
Not part of ``make test``; ``make bench`` runs it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import httpx

from enroll_sync import ExportRecord

MIN_ROUNDS = 5
YEAR = 2025
#: Aeries schools of the sandbox and the grades each teaches
SCHOOLS = ((990, range(0, 6)), (991, range(6, 9)), (994, range(9, 13)))
#: the fields Aeries stamps itself: not part of what was sent
STAMPED = ("RecordAddedDateTime",)


def make_records(n: int) -> list[ExportRecord]:
    """``n`` mapped records as the mapping engine produces them (Aeries write names), new
    students spread over the three schools, names no seeded student has."""
    firsts = ["Ana", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana"]
    out = []
    for i in range(n):
        school, grades = SCHOOLS[i % len(SCHOOLS)]
        grade = grades[i // len(SCHOOLS) % len(grades)]
        out.append(ExportRecord(record_id=f"reg-{i}", payload={
            "FirstName": firsts[i % len(firsts)], "LastName": f"Bench{i:06d}",
            "MiddleName": "Lee" if i % 3 == 0 else None,
            "BirthDate": f"{YEAR - 6 - grade}-0{1 + i % 9}-1{i % 10}",
            "Gender": "MF"[i % 2], "SchoolCode": str(school), "Grade": str(grade),
            "HomePhone": f"(559) 555-{i % 10000:04d}", "HomeLanguageCode": ("00", "01")[i % 2],
            "EthnicityCode": "YN"[i % 2], "Race1Code": "700", "ParentGuardianName": "Pat Parent",
            "SchoolEnterDate": f"{YEAR}-08-20", "MailingAddress": f"{100 + i % 900} Main St",
            "MailingAddressCity": "Eagle Rock", "MailingAddressState": "CA",
            "MailingAddressZipCode": "99999",
        }))
    return out


def start_sandbox_process(*, latency_ms: int, existing: int):
    """The Aeries sandbox in its own process (so it does not share our GIL)."""
    code = ("from sis_aeries.cli import aeries_command as c; "
            f"c(['--port', '0', '--quiet', '--latency-ms', '{latency_ms}', "
            f"'--seed-students', '{existing}', '--seed', '11'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if not line.startswith("Aeries sandbox on "):
        proc.kill()
        raise SystemExit("the sandbox did not start: " + line + proc.stderr.read())
    return proc, line.split()[3]


def bare_send(base_url: str, cert: str, requests: Sequence[dict]) -> dict[str, Any]:
    """POST each ``{"request": "POST /path?query", "body": {...}}`` in order through one
    client, one at a time: the transport limit. Bodies are encoded before
    the clock starts; nothing is parsed beyond the status. Returns {"records", "seconds",
    "records_per_s", "succeeded", "started", "ended"} (wall-clock times)."""
    prepared = []
    for r in requests:
        method, target = r["request"].split(" ", 1)
        prepared.append((method, target, json.dumps(r["body"], ensure_ascii=False,
                                                    separators=(",", ":")).encode()))
    headers = {"AERIES-CERT": cert, "Accept": "application/json", "Content-Type": "application/json"}
    succeeded = 0
    started_wall = time.time()
    start = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=60, headers=headers) as client:
        for method, target, content in prepared:
            response = client.request(method, target, content=content)
            succeeded += response.status_code == 200
    seconds = time.perf_counter() - start
    return {"records": len(prepared), "seconds": seconds, "records_per_s": len(prepared) / seconds,
            "succeeded": succeeded, "started": started_wall, "ended": started_wall + seconds}


def is_write(entry: dict) -> bool:
    path = entry.get("path") or ""
    return entry.get("method") == "POST" and (path.endswith("/InsertStudent") or "/UpdateStudent/" in path)


def in_flight(base_url: str, since: float, until: float,
              which: Callable[[dict], bool] = is_write) -> dict[str, Any]:
    """How many writes the sandbox was serving at once, from its request log: ``peak`` and
    ``mean`` (time-weighted over the span of those writes), and how many requests of any
    kind it served in [since, until]."""
    log = httpx.get(base_url + "/sandbox/requests", timeout=120).json()["requests"]
    window = [r for r in log if r.get("start") and since <= r["start"] <= until]
    spans = [(r["start"], r["end"]) for r in window if which(r)]
    if not spans:
        return {"peak": 0, "mean": 0.0, "writes": 0, "requests": len(window)}
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    level = peak = 0
    busy = 0.0
    last = events[0][0]
    for t, d in events:
        busy += level * (t - last)
        last = t
        level += d
        peak = max(peak, level)
    span = events[-1][0] - events[0][0]
    return {"peak": peak, "mean": round(busy / span, 2) if span > 0 else float(peak),
            "writes": len(spans), "requests": len(window)}


def stored_students(base_url: str) -> dict[tuple, dict]:
    """Every student record of the target year as the SIS stored it, by (StudentID,
    SchoolCode), without what Aeries stamps itself."""
    dump = httpx.get(base_url + "/sandbox/dump", timeout=600).json()
    out = {}
    for s in dump["years"].get(str(YEAR), {}).get("students", []):
        s = {k: v for k, v in s.items() if k not in STAMPED}
        out[(s["StudentID"], s["SchoolCode"])] = s
    return out


def paired_summary(ratios: list[float]) -> dict[str, Any]:
    return {"ratio": round(statistics.median(ratios), 3),
            "spread": [round(min(ratios), 3), round(max(ratios), 3)]}


def main(argv: Sequence[str] | None = None) -> dict:
    from sis_aeries.adapter import AeriesAdapter
    from sis_aeries.sandbox import DEFAULT_CERT

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=600)
    ap.add_argument("--latency-ms", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--existing", type=int, default=1000,
                    help="students the district already has (the rosters the adapter reads)")
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                    help=f"measured paired rounds per path, interleaved; the median counts "
                         f"(at least {MIN_ROUNDS})")
    ap.add_argument("--warmup", type=int, default=1, help="rounds of each run first, not counted")
    ap.add_argument("--paths", default="insert,update")
    args = ap.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be at least {MIN_ROUNDS} (the median of fewer is noise)")

    proc, url = start_sandbox_process(latency_ms=args.latency_ms, existing=args.existing)
    figures: dict[str, Any] = {"records": args.records, "latency_ms": args.latency_ms,
                               "batch_size": args.batch_size, "existing": args.existing,
                               "rounds": args.rounds}
    settings = {"server_url": url, "certificate": DEFAULT_CERT, "school_year": YEAR,
                "batch_size": args.batch_size, "timeout_s": 60}
    records = make_records(args.records)
    batches = [records[i:i + args.batch_size] for i in range(0, len(records), args.batch_size)]

    def reset():
        httpx.post(url + "/sandbox/reset", timeout=120).raise_for_status()

    try:
        def run_path(path: str) -> dict:
            if path == "insert":
                batch_records = batches
                prepare = reset
            else:
                reset()  # the SIS holding every student (untimed): the bare loop inserts them
                with AeriesAdapter(settings) as a:
                    bare_send(url, DEFAULT_CERT, [a.preview(r) for r in records])
                ids = {(s["LastName"]): str(s["StudentID"]) for s in stored_students(url).values()}
                batch_records = [[ExportRecord(r.record_id, r.payload, ids[r.payload["LastName"]]) for r in b]
                                 for b in batches]
                prepare = lambda: None  # noqa: E731  (updates leave the SIS as it was)
            with AeriesAdapter(settings) as a:
                requests = [a.preview(r) for b in batch_records for r in b]  # what the adapter sends
            sent_by_adapter: list = []

            def run_bare() -> tuple[float, dict]:
                prepare()
                bare = bare_send(url, DEFAULT_CERT, requests)
                if bare["succeeded"] != args.records:
                    raise SystemExit(f"the bare transport did not store every record: {bare}")
                return bare["records_per_s"], in_flight(url, bare["started"], bare["ended"])

            def run_adapter() -> tuple[float, dict]:
                prepare()
                t_wall = time.time()
                start = time.perf_counter()
                with AeriesAdapter(settings) as adapter:  # a fresh connection, systeminfo included
                    results = [r for b in batch_records for r in adapter.export(b)]
                seconds = time.perf_counter() - start
                ok = [r for r in results if r.outcome.value == "succeeded"]
                if len(ok) != args.records:
                    bad = next((r for r in results if r.outcome.value != "succeeded"), None)
                    raise SystemExit(f"the adapter did not store every record ({len(ok)} succeeded): "
                                     f"{bad.message if bad else ''}")
                if not sent_by_adapter:
                    sent_by_adapter.extend(r.sent for r in results)
                    if sent_by_adapter != requests:
                        raise SystemExit("the adapter sent other requests than the bare transport")
                return args.records / seconds, in_flight(url, t_wall, t_wall + seconds)

            print(f"-- {path}: {args.records} records, batch size {args.batch_size}, {args.existing} "
                  f"students already in Aeries, {args.latency_ms} ms added latency; {args.rounds} "
                  f"paired rounds after {args.warmup} warm-up", flush=True)
            adapter_runs, bare_runs, ratios = [], [], []
            flights: dict[str, list] = {"job": [], "bare": [], "job_requests": [], "bare_requests": []}
            stored: dict[str, Any] = {}
            for i in range(-args.warmup, args.rounds):
                bare_first = i % 2 == 0  # alternate, so neither always runs on a warmer sandbox
                order = ("bare", "adapter") if bare_first else ("adapter", "bare")
                got = {}
                for side in order:
                    got[side] = run_bare() if side == "bare" else run_adapter()
                    snapshot = stored_students(url)
                    if side in stored and stored[side] != snapshot:
                        raise SystemExit(f"{side}: the SIS holds other students than last round")
                    stored[side] = snapshot
                if stored.get("bare") != stored.get("adapter"):
                    raise SystemExit(f"{path}: the SIS stored other students from the adapter than from "
                                     f"the bare transport")
                (adapter_rps, afl), (bare_rps, bfl) = got["adapter"], got["bare"]
                label = "warm-up" if i < 0 else f"round {i + 1}"
                print(f"{label:>8}: adapter {adapter_rps:6.1f} records/s, bare {bare_rps:6.1f} records/s, "
                      f"ratio {adapter_rps / bare_rps:.3f} ({order[0]} first; writes in flight adapter "
                      f"{afl['mean']:.2f} (peak {afl['peak']}), bare {bfl['mean']:.2f} (peak {bfl['peak']}); "
                      f"requests adapter {afl['requests']}, bare {bfl['requests']})", flush=True)
                if i >= 0:
                    adapter_runs.append(adapter_rps)
                    bare_runs.append(bare_rps)
                    ratios.append(adapter_rps / bare_rps)
                    flights["job"].append(afl["peak"])
                    flights["bare"].append(bfl["peak"])
                    flights["job_requests"].append(afl["requests"])
                    flights["bare_requests"].append(bfl["requests"])
            out = {"adapter_records_per_s": round(statistics.median(adapter_runs), 1),
                   "bare_records_per_s": round(statistics.median(bare_runs), 1),
                   **paired_summary(ratios),
                   "job_in_flight": max(flights["job"]), "bare_in_flight": max(flights["bare"]),
                   "job_requests": max(flights["job_requests"]),
                   "bare_requests": max(flights["bare_requests"])}
            print(f"   {path}: adapter {out['adapter_records_per_s']:.1f} records/s, bare "
                  f"{out['bare_records_per_s']:.1f} records/s (medians); ratio {out['ratio']:.3f} "
                  f"(paired, spread {out['spread'][0]:.3f} to {out['spread'][1]:.3f})", flush=True)
            return out

        for path in args.paths.split(","):
            figures[path] = run_path(path)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    paths = [p for p in ("insert", "update") if p in figures]
    worst = min(paths, key=lambda p: figures[p]["ratio"])
    figures.update({"ratio": figures[worst]["ratio"], "spread": figures[worst]["spread"],
                    "ratio_of": worst,
                    "job_in_flight": max(figures[p]["job_in_flight"] for p in paths),
                    "bare_in_flight": max(figures[p]["bare_in_flight"] for p in paths)})
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
