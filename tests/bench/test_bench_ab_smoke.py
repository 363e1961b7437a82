"""``misc/bench_ab.py``: two gateways (here the same build twice) run every workload with
their operations interleaved, each figure is reported for both, and nothing of the run is
left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.bench.leftovers import leftovers

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "misc" / "bench_ab.py"
WORKLOADS = ["stat", "ls10", "mkdir", "rename", "rmdir", "create", "fsync"]


def test_bench_ab_smoke(tmp_path: Path) -> None:
    """Every workload has, for both builds, positive latencies (median <= p90) and a CPU
    figure, a positive median ratio and a count of pairs won within the operations; the
    printed table names them; no gateway or temp dir of the run is left."""
    out = tmp_path / "ab.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(BENCH), "--other", sys.executable, "--ops", "4", "--size", "1M",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())["results"]
    assert [r["workload"] for r in report] == WORKLOADS
    for row in report:
        assert row["ops"] == 4 and 0 <= row["this_faster"] <= 4 and row["median_ratio"] > 0
        for build in ("this", "other"):
            figures = row[build]
            assert 0 < figures["median_ms"] <= figures["p90_ms"], row
            assert figures["mean_ms"] > 0 and figures["cpu_ms_per_op"] >= 0, row
            assert f"{row['workload']:10s} {build:6s}" in result.stdout
    assert leftovers(tmp_path) == []
    assert list(tmp_path.glob("bench-ab-*")) == []
