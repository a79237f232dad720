"""The benchmark's hand-written function must keep producing the engine's payloads."""
from __future__ import annotations

import importlib.util
import json
import pathlib

BENCH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "mapping.py"


def test_benchmark_runs_and_the_engine_matches_the_hand_written_function(capsys):
    spec = importlib.util.spec_from_file_location("enroll_sync_benchmark_mapping", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--records", "400", "--repeat", "1"])  # SystemExit if any payload differs
    out = capsys.readouterr().out.strip().splitlines()
    assert "payloads equal to the hand-written function: 400/400" in out[1]
    figures = json.loads(out[-1])
    assert set(figures) == {"records_per_s", "baseline_records_per_s", "ratio"}
    assert figures["records_per_s"] > 0 and figures["ratio"] > 0
