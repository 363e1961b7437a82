"""``misc/bench_storage.py --smoke`` still runs end to end, so the benchmark never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tahoe import REQUIRES_TAHOE

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "misc" / "bench_storage.py"
pytestmark = REQUIRES_TAHOE


def test_bench_storage_smoke(tmp_path: Path) -> None:
    """The smoke run prints a table with a row for our server and one for Tahoe's, and JSON."""
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("server"))
    assert "write MB/s" in lines[header] and "read MB/s" in lines[header]
    rows = {line.split()[0]: line.split() for line in lines[header + 1 :] if line.strip()}
    assert set(rows) == {"ours", "tahoe-lafs-1.20"}, proc.stdout
    for row in rows.values():
        assert float(row[1]) > 0 and float(row[2]) > 0, row
    assert rows["tahoe-lafs-1.20"][-1].startswith("tahoe-lafs/1.20")
    report = json.loads(out_json.read_text())
    assert set(report["servers"]) == {"ours", "tahoe-lafs-1.20"}
