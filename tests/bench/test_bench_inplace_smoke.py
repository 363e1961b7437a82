"""``misc/bench_inplace.py --smoke``: the in-place benchmark of issue #16 runs end to end
against OpenSSH and the gateway, and leaves nothing running, mounted or attached."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.leftovers import leftovers

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "misc" / "bench_inplace.py"

pytestmark = pytest.mark.skipif(
    shutil.which("sshfs") is None or not os.path.exists("/dev/fuse"),
    reason="sshfs or FUSE is not available",
)


def test_bench_inplace_smoke(tmp_path: Path) -> None:
    """Every workload (the sustained write+fsync stream and the one in a crowded directory
    too) has a positive median, p90 and rate on OpenSSH and on the gateway, the gateway's
    CPU and peak RSS and the host's steal are reported, every target of the issue is
    evaluated, and afterwards no process, mount, loop device or temp dir of the run is
    left."""
    out = tmp_path / "inplace.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the run's temp dirs: under tmp_path
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["file_create_ms"] > 0  # the filesystem's part, reported beside the figures
    assert f"in the work directory: {report['file_create_ms']} ms" in result.stdout
    assert report["steal"] is None or 0 <= report["steal"] <= 1, report["steal"]
    assert "steal %" in result.stdout
    rows = {(row["workload"], row["target"]): row for row in report["results"]}
    small, big = "2 MiB", "6 MiB"
    workloads = [
        f"{kind} {size}"
        for size in (small, big)
        for kind in ("OPEN r+", "4 KiB write+fsync", "4 KiB append+CLOSE")
    ] + [
        f"4 KiB write+fsync {small}, sustained",
        "4 KiB write+fsync 1 MiB, 20 files beside",  # (the crowded directory's)
        "SQLite transaction",
    ]
    if os.geteuid() == 0 and os.path.exists("/dev/loop-control"):
        workloads += ["ext4 mkfs", "ext4 copy+sync", "ext4 fsck", "ext4 sequence"]
    assert {w for w, _ in rows} == set(workloads), result.stdout
    for workload in workloads:
        assert workload in result.stdout
        for target in ("openssh", "gateway"):
            row = rows[workload, target]
            assert row["ops"] > 0 and row["median_ms"] > 0 and row["p90_ms"] > 0, row
            assert row["ops_per_s"] > 0, row
            assert row["steal"] is None or 0 <= row["steal"] <= 1, row
        ours = rows[workload, "gateway"]
        assert ours["peak_rss_mib"] > 0 and ours["cpu_s"] is not None, ours
        assert ours["cpu_s"] >= 0, ours
        if not any(cheap in workload for cheap in ("OPEN", "fsck", "write+fsync", "append")):
            # (an OPEN, a smoke run's fsck reading kept extents, or its three 4 KiB
            # write+fsyncs or append+CLOSEs, about 2 ms of CPU each, may cost less than one
            # 10 ms clock tick in all; SQLite and ext4 do not)
            assert ours["cpu_s"] > 0 and ours["cpu_ms_per_op"] > 0, ours
    checks = [c for c in report["targets"] if c["target"] == "gateway"]
    assert len(checks) == 9, checks
    assert all(c["value"] is not None and c["value"] > 0 for c in checks), checks
    # Each size check carries OpenSSH's own ratio between the sizes, printed beside it.
    sized = [c for c in checks if "median at" in c["target_text"]]
    assert len(sized) == 2 and all(c["openssh_own"] > 0 for c in sized), sized
    targets = {c["target"] for c in report["targets"]}
    assert result.stdout.count("(OpenSSH's own: ") == 2 * len(targets), result.stdout
    assert leftovers(tmp_path) == []
    assert list(tmp_path.glob("gw-bench-*")) == []
