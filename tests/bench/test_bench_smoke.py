"""The SFTP benchmark's smoke mode runs end to end, so the benchmark never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_bench_smoke(tmp_path: Path) -> None:
    """misc/bench.py --smoke measures every workload on OpenSSH and on the gateway."""
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "misc" / "bench.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == 6
    for row in rows:
        assert row["openssh"] > 0 and row["gateway"] > 0, row
        assert row["workload"] in result.stdout
