"""Benchmark: the PowerSchool adapter against a bare httpx loop (the transport limit).

5,000 mapped records go through ``PowerSchoolAdapter.export`` to the PowerSchool
sandbox with 20 ms added to every request; the same student bodies (taken from
``adapter.preview``) are POSTed by a bare httpx loop with the same batch size.
The sandbox is emptied before each run, so both insert the same students. Both
authenticate inside the timed part. The adapter also pays for its duplicate check
(match-before-insert): that is part of what is measured.

    .venv/bin/python benchmarks/powerschool_export.py [--records 5000] [--latency-ms 20]
        [--rounds 5] [--warmup 1]

The two are measured in interleaved rounds (which goes first alternates), after one
warm-up round that does not count, so a change in the machine's load hits both
alike. Every round is printed. The figures are medians over the rounds (at least 5):
records per second of each, and ``ratio``, the median of the per-round ratios
adapter/bare (each compares two runs made moments apart). It ends with one line of
JSON: {"adapter_records_per_s": ..., "baseline_records_per_s": ..., "ratio": ..., ...}.

``bare_httpx_post_loop`` is importable (the bulk-sync benchmark reuses it)::

    sys.path.insert(0, "benchmarks"); from powerschool_export import bare_httpx_post_loop
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Sequence

import httpx

from enroll_sync.adapters import ExportRecord

__all__ = ["bare_httpx_post_loop", "make_records", "start_sandbox_process", "main"]


def bare_httpx_post_loop(base_url: str, client_id: str, client_secret: str,
                         students: Sequence[dict], batch_size: int, *,
                         path: str = "/ws/v1/student", timeout: float = 60.0) -> dict[str, Any]:
    """POST ``students`` to PowerSchool in batches with one keep-alive httpx client.

    No retries, no matching, no parsing beyond counting successes: the transport
    limit an adapter is measured against. Fetches its own token (timed).
    Returns {"records", "seconds", "records_per_s", "succeeded", "statuses"}.
    """
    statuses: Counter = Counter()
    succeeded = 0
    start = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=timeout) as client:
        token = client.post("/oauth/access_token", data={"grant_type": "client_credentials"},
                            auth=(client_id, client_secret)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "Content-Type": "application/json"}
        for i in range(0, len(students), batch_size):
            chunk = list(students[i:i + batch_size])
            r = client.post(path, json={"students": {"student": chunk}}, headers=headers)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                result = r.json()["results"].get("result", [])
                result = result if isinstance(result, list) else [result]
                succeeded += sum(1 for x in result if x.get("status") == "SUCCESS")
    seconds = time.perf_counter() - start
    return {"records": len(students), "seconds": seconds,
            "records_per_s": len(students) / seconds if seconds else 0.0,
            "succeeded": succeeded, "statuses": dict(statuses)}


def make_records(n: int, *, start_local_id: int = 700001) -> list[ExportRecord]:
    """``n`` mapped records as the mapping engine produces them (flat, dotted keys)."""
    firsts = ["Ana", "Ben", "Chloe", "Diego", "Emma", "Farah", "Gus", "Hana"]
    out = []
    for i in range(n):
        lid = start_local_id + i
        out.append(ExportRecord(record_id=f"reg-{lid}", payload={
            "local_id": str(lid),
            "state_province_id": None,
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
                    help=f"measured rounds of each, interleaved; the median counts "
                         f"(at least {MIN_ROUNDS})")
    ap.add_argument("--warmup", type=int, default=1, help="rounds of each run first, not counted")
    args = ap.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        ap.error(f"--rounds must be at least {MIN_ROUNDS} (the median of fewer is noise)")

    proc, url = start_sandbox_process(latency_ms=args.latency_ms)
    try:
        settings = {"server_url": url, "client_id": DEFAULT_CLIENT_ID,
                    "client_secret": DEFAULT_CLIENT_SECRET, "batch_size": args.batch_size,
                    "match_existing": True}
        records = make_records(args.records)
        with PowerSchoolAdapter(settings) as a:
            bodies = [a.preview(r) for r in records]  # the very bodies the adapter sends

        def reset():
            httpx.post(url + "/sandbox/reset").raise_for_status()

        def stored() -> int:
            return len(httpx.get(url + "/sandbox/dump", timeout=60).json()["students"])

        def run_bare() -> float:
            reset()
            bare = bare_httpx_post_loop(url, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, bodies,
                                        args.batch_size)
            if bare["succeeded"] != args.records or stored() != args.records:
                raise SystemExit(f"the bare loop did not store every record: {bare}")
            return bare["records_per_s"]

        def run_adapter() -> float:
            reset()
            start = time.perf_counter()
            with PowerSchoolAdapter(settings) as adapter:  # a fresh connection: token included
                results = adapter.export(records)
            seconds = time.perf_counter() - start
            ok = sum(1 for r in results if r.ok)
            if ok != args.records or stored() != args.records:
                bad = next((r for r in results if not r.ok), None)
                raise SystemExit(f"the adapter did not store every record ({ok} ok): "
                                 f"{bad.message if bad else ''}")
            return args.records / seconds

        print(f"{args.records} records, batch size {args.batch_size}, {args.latency_ms} ms added "
              f"latency; {args.rounds} interleaved rounds after {args.warmup} warm-up", flush=True)
        adapter_runs, bare_runs, ratios = [], [], []
        for i in range(-args.warmup, args.rounds):
            bare_first = i % 2 == 0  # alternate, so neither always runs on a warmer sandbox
            if bare_first:
                bare_rps = run_bare()
                adapter_rps = run_adapter()
            else:
                adapter_rps = run_adapter()
                bare_rps = run_bare()
            label = "warm-up" if i < 0 else f"round {i + 1}"
            print(f"{label:>8}: adapter {adapter_rps:7.1f} records/s, bare {bare_rps:7.1f} "
                  f"records/s, ratio {adapter_rps / bare_rps:.3f} "
                  f"({'bare' if bare_first else 'adapter'} first)", flush=True)
            if i >= 0:
                adapter_runs.append(adapter_rps)
                bare_runs.append(bare_rps)
                ratios.append(adapter_rps / bare_rps)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    adapter_rps, bare_rps = statistics.median(adapter_runs), statistics.median(bare_runs)
    ratio = statistics.median(ratios)
    print(f"adapter (match-before-insert on): {adapter_rps:8.1f} records/s  (median)")
    print(f"bare httpx loop:                  {bare_rps:8.1f} records/s  (median)")
    print(f"ratio adapter/bare: {ratio:.3f} (median of the per-round ratios, "
          f"{min(ratios):.3f} to {max(ratios):.3f}; target >= 0.9)")
    figures = {"adapter_records_per_s": round(adapter_rps, 1),
               "baseline_records_per_s": round(bare_rps, 1), "ratio": round(ratio, 3),
               "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3),
               "rounds": args.rounds}
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
