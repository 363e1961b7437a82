"""``misc/bench.py --smoke --with-tahoe`` measures Tahoe-LAFS 1.20's SFTP frontend end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tahoe import REQUIRES_TAHOE

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "misc" / "bench.py"
pytestmark = REQUIRES_TAHOE


def test_bench_smoke_with_tahoe(tmp_path: Path) -> None:
    """Every workload but the 1000-entry listing gets a figure in the tahoe column, and JSON."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--with-tahoe", "--no-grid", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    header = result.stdout.splitlines()[0].split()
    assert header[:4] == ["workload", "openssh", "gateway", "tahoe"], result.stdout
    report = json.loads(out.read_text())
    assert report["targets"] == ["openssh", "gateway", "tahoe"]
    rows = {row["workload"]: row for row in report["results"]}
    assert len(rows) == 6, result.stdout
    for name, row in rows.items():
        assert row["openssh"] > 0 and row["gateway"] > 0, row
        if name.startswith("ls -l"):
            assert "tahoe" not in row, row  # too slow on Tahoe at full size: not measured there
        else:
            assert row["tahoe"] > 0, row
            line = next(line for line in result.stdout.splitlines() if line.startswith(name))
            assert float(line[len(name) :].split()[2]) == pytest.approx(row["tahoe"], abs=0.06)
