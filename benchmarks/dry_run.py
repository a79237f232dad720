"""Benchmark: the Dry run of 10,000 Approved registrations against the same work done bare.

The Dry run (Bulk Actions > Sync to SIS > Dry run) plans the selection, loads every
eligible registration in chunks, reads each student's SIS link on the target
connection and maps the record with the connection's compiled mapping, writing
nothing. The baseline does the same work with nothing around it: one plain query for
the same registrations, one query for their links, and the same compiled mapping
applied to each. Both run on the same SQLite file, in paired rounds whose order
alternates; the figure is the median of the per-round ratios baseline/dry run (1.0:
the Dry run costs nothing beyond the mapping itself) with its spread.

    .venv/bin/python benchmarks/dry_run.py [--registrations 10000] [--rounds 5]

It ends with one line of JSON: {"benchmark": "dry_run", "ratio": ..., "spread": ..., ...}.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bulk_sync import Env  # noqa: E402
from powerschool_export import start_sandbox_process  # noqa: E402

from enroll_sync.catalog import source_values  # noqa: E402
from enroll_sync.db import database  # noqa: E402
from enroll_sync.models import APPROVED, Registration, School, SisLink, Student, SyncConnection  # noqa: E402
from enroll_sync.sync.dry_run import dry_run  # noqa: E402
from enroll_sync.sync.export_rule import ExportContexts  # noqa: E402
from enroll_sync.sync.mappings import check_connection  # noqa: E402
from enroll_sync.sync.selection import RegistrationFilter, Selection  # noqa: E402

SELECTION = Selection(filter=RegistrationFilter(status=APPROVED), all_matching=True)


def bare(env) -> tuple[int, float]:
    """The same registrations, their links and the same compiled mapping, nothing else."""
    started = time.perf_counter()
    app = env.app
    with app.app_context(), database.connection_context():
        conn = SyncConnection.get_by_id(env.conn_id)
        compiled = check_connection(conn, app).compiled
        contexts = ExportContexts.for_day()
        links = dict(SisLink.select(SisLink.student, SisLink.sis_id).where(SisLink.connection == conn.id).tuples())
        rows = (Registration.select(Registration, Student, School)
                .join(Student).switch(Registration).join(School)
                .where((Registration.organization == env.org_id) & (Registration.status == APPROVED)
                       & (School.sync_connection == conn.id)))
        n = 0
        for reg in rows.iterator():
            sis_id = links.get(reg.student_id)
            compiled(source_values(reg, reg.school, reg.student, sis_id),
                     contexts.update if sis_id else contexts.insert)
            n += 1
    return n, time.perf_counter() - started


def ours(env) -> tuple[int, float]:
    started = time.perf_counter()
    with env.app.app_context(), database.connection_context():
        result = dry_run(env.app, env.org_id, SELECTION, limit=10 ** 6, seconds=10 ** 6)
    return result.checked, time.perf_counter() - started


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--registrations", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    proc, url = start_sandbox_process(latency_ms=0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = Env(Path(tmp), url)
            env.add_registrations(args.registrations)
            ours(env)
            bare(env)  # warm-up: the mapping compiled, the fields cached, the file in the page cache
            ratios, times_ours, times_bare = [], [], []
            for i in range(max(3, args.rounds)):
                pair = {}
                for side in (("ours", "bare") if i % 2 == 0 else ("bare", "ours")):
                    n, took = (ours if side == "ours" else bare)(env)
                    pair[side] = (n, took)
                assert pair["ours"][0] == pair["bare"][0] >= args.registrations, pair
                times_ours.append(pair["ours"][1])
                times_bare.append(pair["bare"][1])
                ratios.append(pair["bare"][1] / pair["ours"][1])
                print(f"round {i + 1}: dry run {pair['ours'][1]:.2f} s, bare {pair['bare'][1]:.2f} s, "
                      f"ratio {ratios[-1]:.2f}", flush=True)
    finally:
        proc.terminate()
    out = {"benchmark": "dry_run", "registrations": args.registrations, "rounds": len(ratios),
           "dry_run_s": round(statistics.median(times_ours), 3), "bare_s": round(statistics.median(times_bare), 3),
           "dry_run_per_s": round(args.registrations / statistics.median(times_ours)),
           "ratio": round(statistics.median(ratios), 3), "spread": round(max(ratios) - min(ratios), 3)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
