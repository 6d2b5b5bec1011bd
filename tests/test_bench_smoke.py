"""The benchmarks stay runnable: `python -m bench floor --json` with tiny sizes prints one JSON object
(the benchmarks themselves are not part of the test suite; see bench/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.procs import ROOT


def test_floor_bench_prints_its_json_result():
    out = subprocess.run(
        [sys.executable, "-m", "bench", "floor", "--json", "--messages", "20", "--throughput", "200", "--long-poll", "5"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout  # --json: the JSON object only
    result = json.loads(lines[0])
    assert result["bench"] == "floor"
    assert {"cpus", "cpu_model", "python", "date"} <= result["machine"].keys()
    r = result["results"]
    assert r["latency_ms"]["n"] == 20 and 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert r["latency_fetch_wait_500_ms"]["n"] == 5
    assert r["produced_per_s"] > 0 and r["consumed_per_s"] > 0
    assert r["payload_bytes"] > 1000  # a market snapshot, not a toy record
