"""The table ``misc/bench.py`` prints and writes as JSON: figures, ratios and issue #17's targets.

One row per figure and target: the median over the runs back to back (each
workload right after the previous one, as users work), with ``--quiesce`` the
median after waiting for the server to go idle as a second column, the
server's CPU seconds and peak RSS for each, the ratio to OpenSSH's figure, and
each target set for it, met or missed. A summary line lists the misses.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import attrs
from bench_workloads import Figure

LOWER_IS_BETTER = {"ms", "s", "MiB"}
TARGETS = ("openssh", "gateway", "grid5", "tahoe")
MODES = ("b2b", "idle")


@attrs.frozen
class Goal:
    """A target of issue #17: a ratio to ``base``'s figure of at least ``limit`` (better is
    above 1 for every unit), or with no ``base`` a value of at most ``limit``."""

    limit: float
    base: str | None = "openssh"

    def text(self, unit: str) -> str:
        """How the goal reads in the table."""
        if self.base is None:
            return f"<= {self.limit:g} {unit}"
        return f">= {self.limit:g}x {self.base}"


_OURS = ("gateway", "grid5")
GOALS: dict[str, dict[str, list[Goal]]] = {
    # kind -> target -> goals. grid5: >= 0.5x OpenSSH on all of them (no stricter than the
    # embedded gateway's), and >= 50x Tahoe on small files and metadata.
    "upload": {"gateway": [Goal(1.0)], "grid5": [Goal(0.5)]},
    "download": {"gateway": [Goal(0.8)], "grid5": [Goal(0.5)]},
    "reads": {"gateway": [Goal(0.8)], "grid5": [Goal(0.5)]},
    "small files": {"gateway": [Goal(0.8)], "grid5": [Goal(0.5), Goal(50, "tahoe")]},
    "metadata": {"gateway": [Goal(0.8)], "grid5": [Goal(0.5), Goal(50, "tahoe")]},
    "sshfs": {t: [Goal(0.5)] for t in _OURS},
    "sshfs part": {t: [Goal(0.33)] for t in _OURS},
    "rss": {t: [Goal(200, None)] for t in _OURS},
}


@attrs.define
class Cell:
    """One figure on one target in one mode: every run's value and the server's usage."""

    values: list[float] = attrs.Factory(list)
    cpu: list[float | None] = attrs.Factory(list)
    rss: list[float | None] = attrs.Factory(list)
    steal: list[float | None] = attrs.Factory(list)
    client: list[float | None] = attrs.Factory(list)

    def add(self, figure: Figure) -> None:
        """Record one run's figure."""
        self.values.append(figure.value)
        self.cpu.append(figure.usage.cpu if figure.usage else None)
        self.rss.append(figure.usage.rss if figure.usage else None)
        self.steal.append(figure.usage.steal if figure.usage else None)
        self.client.append(figure.usage.client if figure.usage else None)

    def summary(self) -> dict[str, Any]:
        """Median value and CPU (of the runs that have one), highest peak RSS and host
        steal (bench_probe: what the host took of the machine while it was measured), and
        the in-process client's median CPU share, where measured."""
        cpu = [c for c in self.cpu if c is not None]
        rss = [r for r in self.rss if r is not None]
        steal = [s for s in self.steal if s is not None]
        client = [c for c in self.client if c is not None]
        return {
            "median": statistics.median(self.values),
            "runs": self.values,
            "cpu_s": statistics.median(cpu) if cpu else None,
            "peak_rss_mib": max(rss) if rss else None,
            "steal": max(steal) if steal else None,
            "client_share": statistics.median(client) if client else None,
        }


class Results:
    """Every figure of a benchmark run, by figure name, target and mode."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str, str], Cell] = {}
        self.places: dict[str, tuple[int, int]] = {}  # figure name -> (workload, figure) index
        self.kinds: dict[str, tuple[str, str]] = {}  # figure name -> (kind, unit)
        #: By target, the seconds its background work took to finish after each series.
        self.drained: dict[str, list[float]] = {}
        #: Median ms to create a directory and a file in the run's work directory.
        self.file_create_ms: float | None = None

    def add(self, target: str, mode: str, figure: Figure, place: tuple[int, int]) -> None:
        """Record one run's figure on a target, back to back or after idle; ``place``: the
        index of its workload in the plan and its own among the workload's figures."""
        self.places.setdefault(figure.name, place)
        self.kinds[figure.name] = (figure.kind, figure.unit)
        self.cells.setdefault((figure.name, target, mode), Cell()).add(figure)

    @property
    def order(self) -> list[str]:
        """Figure names in the order of the plan."""
        return sorted(self.places, key=self.places.__getitem__)

    def targets(self) -> list[str]:
        """The targets measured, in table order."""
        return [t for t in TARGETS if any(key[1] == t for key in self.cells)]

    def median(self, name: str, target: str, mode: str = "b2b") -> float | None:
        """A figure's median, if measured."""
        cell = self.cells.get((name, target, mode))
        return statistics.median(cell.values) if cell else None


def ratio(ours: float | None, base: float | None, unit: str) -> float | None:
    """How ``ours`` compares with ``base``, above 1 meaning better (None without both)."""
    if not ours or not base:
        return None
    return base / ours if unit in LOWER_IS_BETTER else ours / base


def rows(results: Results) -> list[dict[str, Any]]:
    """The table as JSON-ready rows, each with its checks against the issue's targets."""
    table: list[dict[str, Any]] = []
    measured = results.targets()
    for name in results.order:
        kind, unit = results.kinds[name]
        for target in measured:
            if (name, target, "b2b") not in results.cells:
                continue
            row: dict[str, Any] = {"workload": name, "target": target, "kind": kind, "unit": unit}
            for mode in MODES:
                cell = results.cells.get((name, target, mode))
                row[mode] = cell.summary() if cell else None
                base = results.median(name, "openssh", mode)
                mine = row[mode]["median"] if cell else None
                row[f"ratio_{mode}"] = ratio(mine, base, unit) if target != "openssh" else None
            row["checks"] = []
            for goal in GOALS.get(kind, {}).get(target, []):
                if goal.base is not None and goal.base not in measured:
                    continue  # e.g. the Tahoe goals in a run without --with-tahoe
                value = row["b2b"]["median"]
                if goal.base is not None:
                    value = ratio(value, results.median(name, goal.base), unit)
                met = None if value is None else (
                    value >= goal.limit if goal.base is not None else value <= goal.limit
                )  # fmt: skip
                check = {"goal": goal.text(unit), "value": value, "met": met}
                share = row["b2b"]["client_share"]
                if goal.base == "tahoe" and value is not None and share:
                    # Each operation takes at least the client's CPU time for it: the most
                    # any server could reach against this figure of Tahoe's.
                    check["client_ceiling"] = value / share
                row["checks"].append(check)
            table.append(row)
    return table


def _num(value: float | None, width: int, digits: int | None = None) -> str:
    """A figure in ``width`` columns with ``digits`` decimals (default: as many as are worth
    reading)."""
    if value is None:
        return f"{'-':>{width}}"
    if digits is None:
        size = abs(value)
        digits = 0 if size >= 100 else 1 if size >= 10 else 2 if size >= 0.1 else 3
    return f"{value:>{width}.{digits}f}"


def _verdict(check: dict[str, Any]) -> str:
    met = {True: "met", False: "MISSED", None: "no figure"}[check["met"]]
    value = check["value"]
    shown = "-" if value is None else f"{value:.2f}" + ("" if "x" not in check["goal"] else "x")
    ceiling = check.get("client_ceiling")
    bound = "" if ceiling is None else f" (the client's own CPU allows {ceiling:.0f}x)"
    return f"{shown:>8} {check['goal']:<16} {met}{bound}"


def misses(table: Sequence[dict[str, Any]]) -> list[str]:
    """Every check not met, as text."""
    found = []
    for row in table:
        for check in row["checks"]:
            if check["met"] is False:
                ceiling = check.get("client_ceiling")
                bound = "" if ceiling is None else f", the client allows {ceiling:.0f}x"
                found.append(
                    f"{row['target']} {row['workload']} {check['value']:.2f}"
                    f" ({check['goal']}{bound})"
                )
    return found


def print_table(table: Sequence[dict[str, Any]], runs: int, quiesce: bool) -> None:
    """Print the rows, then the summary line of the targets."""
    modes = MODES if quiesce else MODES[:1]
    head = "".join(f"{m:>10}{'CPU s':>8}{'RSS MiB':>9}{'steal %':>8}" for m in modes)
    print(f"{'workload':<32}{'target':<9}{head}  {'unit':<10}{'ratio':>8} {'goal':<16} verdict")
    for row in table:
        cells = ""
        for mode in modes:
            figures = row[mode] or {}
            cells += _num(figures.get("median"), 10) + _num(figures.get("cpu_s"), 8, 2)
            cells += _num(figures.get("peak_rss_mib"), 9, 1)
            steal = figures.get("steal")
            cells += _num(None if steal is None else 100 * steal, 8, 1)
        line = f"{row['workload']:<32}{row['target']:<9}{cells}  {row['unit']:<10}"
        checks = row["checks"]
        if checks:
            print(line + _verdict(checks[0]))
            for check in checks[1:]:
                print(f"{'':<{len(line)}}{_verdict(check)}")
        else:
            ratio_vs = row["ratio_b2b"]
            print(line + (f"{ratio_vs:>7.2f}x" if ratio_vs is not None else ""))
    legend = "b2b = back to back, idle = after waiting for idle, " if quiesce else "back to back, "
    print(
        f"(median of {runs} run{'s' * (runs > 1)}, {legend}CPU s and RSS MiB the server's:\n"
        " OpenSSH's session processes' CPU, RSS unknown; steal % the most the host took of\n"
        " the machine's CPU time in a run of the figure; ratio = target/openssh on the\n"
        " back-to-back figures, for s, ms and MiB the inverse, so that above 1 is better)"
    )
    checks = [c for row in table for c in row["checks"]]
    missed = misses(table)
    met = sum(1 for c in checks if c["met"])
    unknown = sum(1 for c in checks if c["met"] is None)
    line = f"targets (issue #17): {met} of {len(checks)} met"
    if unknown:
        line += f", {unknown} without a figure"
    print(line + (f"; MISSED: {'; '.join(missed)}" if missed else ""))
