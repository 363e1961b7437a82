"""``misc/bench.py``'s report: a ratio to Tahoe-LAFS says how far the client itself allows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MISC = Path(__file__).resolve().parents[2] / "misc"
if str(MISC) not in sys.path:
    sys.path.insert(0, str(MISC))

from bench_probe import Usage  # noqa: E402
from bench_report import Results, misses, print_table, rows  # noqa: E402
from bench_workloads import Figure  # noqa: E402


def listing(target: str, rate: float, client: float | None) -> Figure:
    """One run's ``ls -l`` figure on a target, with the in-process client's CPU share."""
    usage = Usage(cpu=1.0, rss=50.0, steal=0.0, client=client)
    return Figure("ls -l of 10 entries x100", "metadata", rate, "ops/s", usage)


def test_a_ratio_to_tahoe_reports_the_most_the_client_allows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """grid5 lists 40 times as fast as Tahoe while the client itself uses 80 % of each
    listing's time: no server could show more than 50x against that figure of Tahoe's, and
    the check and the summary line say so."""
    results = Results()
    results.add("openssh", "b2b", listing("openssh", 1800.0, 0.7), (0, 0))
    results.add("grid5", "b2b", listing("grid5", 2000.0, 0.8), (0, 0))
    results.add("tahoe", "b2b", listing("tahoe", 50.0, None), (0, 0))
    table = rows(results)
    grid5 = next(row for row in table if row["target"] == "grid5")
    assert grid5["b2b"]["client_share"] == 0.8
    by_goal = {check["goal"]: check for check in grid5["checks"]}
    tahoe = by_goal[">= 50x tahoe"]
    assert tahoe["value"] == pytest.approx(40.0) and tahoe["met"] is False
    assert tahoe["client_ceiling"] == pytest.approx(50.0)
    assert "client_ceiling" not in by_goal[">= 0.5x openssh"]  # (only against Tahoe)
    assert misses(table) == [
        "grid5 ls -l of 10 entries x100 40.00 (>= 50x tahoe, the client allows 50x)"
    ]
    print_table(table, 1, False)
    out = capsys.readouterr().out
    assert "40.00x >= 50x tahoe     MISSED (the client's own CPU allows 50x)" in out, out


def test_without_a_client_share_no_ceiling_is_claimed() -> None:
    """A figure whose client runs in another process (``sftp -b``) gets no ceiling."""
    results = Results()
    results.add("openssh", "b2b", listing("openssh", 1800.0, None), (0, 0))
    results.add("grid5", "b2b", listing("grid5", 2000.0, None), (0, 0))
    results.add("tahoe", "b2b", listing("tahoe", 50.0, None), (0, 0))
    grid5 = next(row for row in rows(results) if row["target"] == "grid5")
    assert all("client_ceiling" not in check for check in grid5["checks"])
    assert grid5["b2b"]["client_share"] is None
