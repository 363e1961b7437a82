"""``misc/bench_objects.py --smoke --no-tahoe`` runs end to end, so the benchmark never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "misc" / "bench_objects.py"


def test_bench_objects_smoke(tmp_path: Path) -> None:
    """The smoke run prints put and get rows for our object layer, and writes matching JSON."""
    out_json = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--no-tahoe", "--json", str(out_json)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("system"))
    assert lines[header].split()[:4] == ["system", "op", "MB/s", "seconds"], lines[header]
    rows: dict[tuple[str, str], tuple[float, float, float]] = {}
    for line in lines[header + 1 :]:
        if not line.startswith("ours"):
            break
        system, op, *numbers = line.split()
        rows[(system, op)] = (float(numbers[0]), float(numbers[1]), float(numbers[2]))
    assert set(rows) == {("ours", "put"), ("ours", "get")}, proc.stdout
    for mbps, seconds, rss in rows.values():
        assert mbps > 0 and seconds > 0 and 0 < rss < 1024
    report = json.loads(out_json.read_text())
    assert [(r["op"], r["size"]) for r in report["rows"]] == [
        ("put", 3 * 2**20 + 1),
        ("get", 3 * 2**20 + 1),
    ]
    assert report["encoding"] == {"k": 3, "happy": 5, "n": 5}
