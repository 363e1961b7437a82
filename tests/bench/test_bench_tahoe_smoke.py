"""``misc/bench.py --smoke --with-tahoe`` measures Tahoe-LAFS 1.20's SFTP frontend end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tahoe import REQUIRES_TAHOE

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "misc" / "bench.py"
pytestmark = REQUIRES_TAHOE


def test_bench_smoke_with_tahoe(tmp_path: Path) -> None:
    """The workloads the issue sets Tahoe targets for get a tahoe row with its CPU and RSS;
    the 1000-entry listing, the large write and sshfs do not run there."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--with-tahoe", "--no-grid", "--no-sshfs",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["targets"] == ["openssh", "gateway", "tahoe"]
    rows = {(row["workload"], row["target"]): row for row in report["results"]}
    on_tahoe = {name for name, target in rows if target == "tahoe"}
    assert on_tahoe == {
        "upload 1 MiB", "download 1 MiB", "random 4 KiB reads x20", "5 x 16 KiB files",
        "mkdir+rename+rmdir x3", "stat x10", "ls -l of 10 entries x5",
    }  # fmt: skip
    for name in on_tahoe:
        row = rows[name, "tahoe"]
        assert row["b2b"]["median"] > 0 and row["b2b"]["peak_rss_mib"] > 0, row
        assert row["b2b"]["cpu_s"] is not None and row["checks"] == [], row
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{name} "))
        assert "openssh" in line, line  # the first of the rows of a figure
    assert not any(t == "tahoe" and "ls -l of 30" in name for name, t in rows)
