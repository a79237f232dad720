"""Benchmark: the PowerSchool adapter against the bare transport, on the insert and the
update path.

5,000 mapped records go through ``PowerSchoolAdapter.export`` to the PowerSchool sandbox
(its own process, 20 ms added to every request). The bare transport POSTs the very same
student bodies (``adapter.preview``, checked equal to what the adapter sent) with the same
batch size over one keep-alive connection: no matching, no parsing beyond counting.

- **insert**: an empty SIS; records without a SIS id, so the adapter also pays for its
  match-before-insert look-ups.
- **update**: the SIS holds the students; records carry their SIS id (as the core sends a
  student it has a link for), so both sides send UPDATEs.

Both sides run at the same concurrency (requests in flight, measured from the sandbox's
request log, not assumed), fetch their token inside the timed part, and leave the SIS
holding the same students (compared as the SIS stored them). The two are measured in
paired rounds (which goes first alternates) after a warm-up round that does not count; the
figure is the median of the per-round ratios adapter/bare, with their spread (min, max).

    .venv/bin/python benchmarks/powerschool_export.py [--records 5000] [--latency-ms 20]
        [--rounds 5] [--warmup 1]

The last line is one JSON object: ``{"ratio", "spread", "job_in_flight", "bare_in_flight",
"insert": {...}, "update": {...}}`` (``ratio``: the lower of the two paths' medians).

Helpers the bulk-sync benchmark reuses: ``bare_post`` (the bare transport at N
connections), ``in_flight`` (requests in flight from the request log), ``stored_students``
(what the SIS holds, comparable), ``start_sandbox_process``.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any, Sequence

import httpx

from enroll_sync.adapters import ExportRecord

__all__ = ["bare_post", "bare_httpx_post_loop", "in_flight", "stored_students", "make_records",
           "start_sandbox_process", "paired_summary", "main"]

STUDENT_PATH = "/ws/v1/student"


def bare_post(base_url: str, client_id: str, client_secret: str, students: Sequence[dict],
              batch_size: int, *, connections: int = 1, path: str = STUDENT_PATH,
              timeout: float = 60.0) -> dict[str, Any]:
    """POST ``students`` in batches of ``batch_size`` over ``connections`` keep-alive
    connections (one thread each, each posting one batch at a time; batches are taken in
    order from a shared queue), so exactly ``connections`` requests are in flight.

    No retries, no matching, no parsing beyond counting successes, bodies encoded before the
    clock starts: the transport limit.
    Fetches its token inside the timed part. Returns {"records", "seconds",
    "records_per_s", "succeeded", "statuses", "started", "ended"} (wall-clock times).
    """
    statuses: Counter = Counter()
    counts = [0] * connections
    chunks: queue.Queue = queue.Queue()
    for i in range(0, len(students), batch_size):
        # encoded before the clock starts: the bare side only moves bytes (never slower
        # than a sender that encodes while the previous batch travels)
        chunks.put(json.dumps({"students": {"student": list(students[i:i + batch_size])}},
                              ensure_ascii=False, separators=(",", ":")).encode())
    errors: list[BaseException] = []
    started_wall = time.time()
    start = time.perf_counter()
    clients = [httpx.Client(base_url=base_url, timeout=timeout) for _ in range(connections)]
    try:
        token = clients[0].post("/oauth/access_token", data={"grant_type": "client_credentials"},
                                auth=(client_id, client_secret)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "Content-Type": "application/json"}

        def run(n: int) -> None:
            client = clients[n]
            try:
                while True:
                    try:
                        chunk = chunks.get_nowait()
                    except queue.Empty:
                        return
                    r = client.post(path, content=chunk, headers=headers)
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        result = r.json()["results"].get("result", [])
                        result = result if isinstance(result, list) else [result]
                        counts[n] += sum(1 for x in result if x.get("status") == "SUCCESS")
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for c in clients:
            c.close()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"records": len(students), "seconds": seconds,
            "records_per_s": len(students) / seconds if seconds else 0.0,
            "succeeded": sum(counts), "statuses": dict(statuses),
            "started": started_wall, "ended": started_wall + seconds}


def bare_httpx_post_loop(base_url: str, client_id: str, client_secret: str,
                         students: Sequence[dict], batch_size: int, **kw) -> dict[str, Any]:
    """``bare_post`` over one connection (the name older scripts import)."""
    return bare_post(base_url, client_id, client_secret, students, batch_size, **kw)


def in_flight(base_url: str, *, method: str = "POST", path: str = STUDENT_PATH,
              since: float | None = None, until: float | None = None) -> dict[str, float]:
    """How many ``method path`` requests the sandbox was serving at once, from its request
    log: ``peak`` and ``mean`` (time-weighted over the span from the first start to the
    last end). Only requests that began within [since, until] count."""
    log = httpx.get(base_url + "/sandbox/requests", timeout=60).json()["requests"]
    spans = [(r["start"], r["end"]) for r in log
             if r.get("method") == method and r.get("path") == path and r.get("start")
             and (since is None or r["start"] >= since) and (until is None or r["start"] <= until)]
    if not spans:
        return {"peak": 0, "mean": 0.0, "requests": 0}
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
            "requests": len(spans)}


def stored_students(base_url: str) -> dict[str, dict]:
    """What the SIS holds, by Student Number, without the ids it assigned (so what one run
    stored can be compared with another's)."""
    out = {}
    for s in httpx.get(base_url + "/sandbox/dump", timeout=600).json()["students"]:
        s = dict(s)
        s.pop("id", None)
        out[str(s.get("local_id"))] = s
    return out


def paired_summary(ratios: list[float]) -> dict[str, Any]:
    return {"ratio": round(statistics.median(ratios), 3),
            "spread": [round(min(ratios), 3), round(max(ratios), 3)]}


def make_records(n: int, *, start_local_id: int = 700001) -> list[ExportRecord]:
    """``n`` mapped records as the mapping engine produces them (flat, dotted keys); a
    third carry a State Student Number (the second matching key)."""
    firsts = ["Ana", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana"]
    out = []
    for i in range(n):
        lid = start_local_id + i
        out.append(ExportRecord(record_id=f"reg-{lid}", payload={
            "local_id": str(lid),
            "state_province_id": str(4000000000 + lid * 7919 % 999999937) if i % 3 == 0 else None,
            "name.first_name": firsts[i % len(firsts)],
            "name.middle_name": "Lee" if i % 3 == 0 else None,
            "name.last_name": f"Student{lid}",
            "demographics.gender": "MF"[i % 2],
            "demographics.birth_date": f"201{i % 8}-0{1 + i % 9}-1{i % 10}",
            "addresses.physical.street": f"{100 + i % 900} Main St",
            "addresses.physical.city": "Fresno",
            "addresses.physical.state_province": "CA",
            "addresses.physical.postal_code": "93701",
            "contact.emergency_contact_name1": "Pat Parent",
            "contact.emergency_phone1": "559-555-0101",
            "contact_info.email": f"s{lid}@example.org",
            "school_enrollment.school_number": "100",
            "school_enrollment.grade_level": str(i % 6),
            "school_enrollment.entry_date": "2025-08-20",
            "school_enrollment.exit_date": "2026-06-10",
            "school_enrollment.enroll_status": "A",
            "school_enrollment.entry_code": "E1",
            "_extension_data.u_students_extension.bus_route": f"R{i % 12}",
        }))
    return out


def start_sandbox_process(*, latency_ms: int, page_size_max: int = 500):
    """Run the sandbox in its own process (so it does not share our GIL)."""
    code = ("from sis_powerschool.cli import powerschool_command as c; "
            f"c(['--port', '0', '--quiet', '--latency-ms', '{latency_ms}', "
            f"'--page-size-max', '{page_size_max}'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if not line.startswith("PowerSchool sandbox on "):
        proc.kill()
        raise SystemExit("the sandbox did not start: " + line + proc.stderr.read())
    return proc, line.split()[3]


MIN_ROUNDS = 5


def main(argv: Sequence[str] | None = None) -> dict:
    from sis_powerschool.adapter import PowerSchoolAdapter
    from sis_powerschool.sandbox import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=MIN_ROUNDS,
                    help=f"measured paired rounds per path, interleaved; the median counts "
                         f"(at least {MIN_ROUNDS})")
    ap.add_argument("--warmup", type=int, default=1, help="rounds of each run first, not counted")
    ap.add_argument("--paths", default="insert,update")
    args = ap.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be at least {MIN_ROUNDS} (the median of fewer is noise)")

    proc, url = start_sandbox_process(latency_ms=args.latency_ms)
    figures: dict[str, Any] = {"records": args.records, "latency_ms": args.latency_ms,
                               "batch_size": args.batch_size, "rounds": args.rounds}
    try:
        settings = {"server_url": url, "client_id": DEFAULT_CLIENT_ID,
                    "client_secret": DEFAULT_CLIENT_SECRET, "batch_size": args.batch_size,
                    "match_existing": True}
        records = make_records(args.records)

        def reset():
            httpx.post(url + "/sandbox/reset").raise_for_status()

        def seed_and_ids() -> dict[str, str]:
            """The SIS holding every student (untimed); record id -> SIS id."""
            reset()
            with PowerSchoolAdapter(settings) as a:
                bodies = [a.preview(r) for r in records]
            bare_post(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, bodies, 500)
            by_local = {str(s["local_id"]): str(s["id"]) for s in
                        httpx.get(url + "/sandbox/dump", timeout=60).json()["students"]}
            return {r.record_id: by_local[str(int(r.payload["local_id"]))] for r in records}

        def run_path(path: str) -> dict:
            if path == "insert":
                batch = records
                prepare = reset
            else:
                ids = seed_and_ids()
                batch = [ExportRecord(r.record_id, r.payload, ids[r.record_id]) for r in records]
                prepare = lambda: None  # noqa: E731  (updates leave the SIS as it was)
            with PowerSchoolAdapter(settings) as a:
                bodies = [a.preview(r) for r in batch]  # what the adapter sends
            sent_by_adapter: list = []

            def run_bare() -> tuple[float, dict]:
                prepare()
                bare = bare_post(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, bodies,
                                 args.batch_size, connections=1)
                if bare["succeeded"] != args.records:
                    raise SystemExit(f"the bare transport did not store every record: {bare}")
                fl = in_flight(url, since=bare["started"], until=bare["ended"])
                return bare["records_per_s"], fl

            def run_adapter() -> tuple[float, dict]:
                prepare()
                t_wall = time.time()
                start = time.perf_counter()
                with PowerSchoolAdapter(settings) as adapter:  # a fresh connection: token included
                    results = adapter.export(batch)
                seconds = time.perf_counter() - start
                ok = [r for r in results if r.ok]
                if len(ok) != args.records:
                    bad = next((r for r in results if not r.ok), None)
                    raise SystemExit(f"the adapter did not store every record ({len(ok)} ok): "
                                     f"{bad.message if bad else ''}")
                if not sent_by_adapter:
                    sent_by_adapter.extend(r.sent for r in results)
                    if sent_by_adapter != bodies:
                        raise SystemExit("the adapter sent other bodies than the bare transport")
                fl = in_flight(url, since=t_wall, until=t_wall + seconds)
                return args.records / seconds, fl

            print(f"-- {path}: {args.records} records, batch size {args.batch_size}, "
                  f"{args.latency_ms} ms added latency; {args.rounds} paired rounds after "
                  f"{args.warmup} warm-up", flush=True)
            adapter_runs, bare_runs, ratios, flights = [], [], [], {"job": [], "bare": []}
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
                    raise SystemExit(f"{path}: the SIS stored other students from the adapter "
                                     f"than from the bare transport")
                (adapter_rps, afl), (bare_rps, bfl) = got["adapter"], got["bare"]
                label = "warm-up" if i < 0 else f"round {i + 1}"
                print(f"{label:>8}: adapter {adapter_rps:7.1f} records/s, bare {bare_rps:7.1f} "
                      f"records/s, ratio {adapter_rps / bare_rps:.3f} ({order[0]} first; "
                      f"in flight adapter {afl['mean']:.2f} (peak {afl['peak']}), bare "
                      f"{bfl['mean']:.2f} (peak {bfl['peak']}))", flush=True)
                if i >= 0:
                    adapter_runs.append(adapter_rps)
                    bare_runs.append(bare_rps)
                    ratios.append(adapter_rps / bare_rps)
                    flights["job"].append(afl["peak"])
                    flights["bare"].append(bfl["peak"])
            out = {"adapter_records_per_s": round(statistics.median(adapter_runs), 1),
                   "bare_records_per_s": round(statistics.median(bare_runs), 1),
                   **paired_summary(ratios),
                   "job_in_flight": max(flights["job"]), "bare_in_flight": max(flights["bare"])}
            print(f"   {path}: adapter {out['adapter_records_per_s']:.1f} records/s, bare "
                  f"{out['bare_records_per_s']:.1f} records/s (medians); ratio {out['ratio']:.3f} "
                  f"(paired, spread {out['spread'][0]:.3f} to {out['spread'][1]:.3f}; target "
                  f">= 0.9)", flush=True)
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
