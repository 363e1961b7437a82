#!/usr/bin/env python3
"""In-place changes (issue #16), side by side with OpenSSH's own sftp-server.

One run on loopback starts OpenSSH (internal-sftp), our gateway on the embedded
grid and (unless ``--no-grid``) a gateway on five of our storage nodes (3/5/5,
"grid5"), all with ``misc/bench_targets.py``'s targets, and runs on each, workload by
workload, back to back, each operation timed on its own:

- OPEN read+write (paramiko ``r+``; the OPEN alone is timed) of a 256 MiB and a
  ``--big`` (4 GiB) file;
- a 4 KiB write at a random 4 KiB-aligned offset + ``fsync@openssh.com`` (an
  extended request paramiko has no call for) on one handle, on both files; then,
  on the 256 MiB file, the same stream kept up (``--sustained``, 1,900 more, as a
  database or a VM image does: every extent it touches gathers patches);
- a 4 KiB append + CLOSE (OPEN, WRITE at the end, CLOSE: what ``>>`` does) on both;
- the 4 KiB write + fsync again, on a 16 MiB file in a directory of 2,000 other
  (empty) files: every fsync publishes the file's directory, so this shows what the
  directory's size adds to it (reported, not one of the issue's targets);
- SQLite transactions on an sshfs mount (``synchronous=FULL``, rollback
  journal; each an INSERT and an UPDATE of a random row of a 16 MiB database);
- ext4 on a loop device on an image file on an sshfs mount: ``mkfs.ext4``, then
  mount + ``cp -r`` of a source tree + ``sync -f`` + umount, then ``fsck.ext4 -n
  -f`` (root only; skipped, with the reason, otherwise).

Creating the files (and the database's first rows) is setup: written once per
target, then the upload queue drained, before anything is timed. Before a target's
turn at a workload, the other targets finish their background work (their storage
catching up on the one machine would run beside it); its own still overlaps it. Per operation:
median and p90 latency, ops/s, our gateways' CPU per operation (``/proc/PID/stat``
from the first operation until the upload queue drained after the last) and peak
RSS (``VmHWM``); then the issue's targets, met or not. ``--profile DIR``: ``py-spy
record -f raw`` of every gateway workload. Everything is stopped by pid and undone.
See docs/performance.rst, "In-place changes (issue #16)".

    .venv/bin/python misc/bench_inplace.py [--big 4G] [--smoke] [--no-grid] [--ops N]
        [--sustained N] [--json FILE] [--profile DIR]
    .venv/bin/python misc/bench.py --only inplace     # the same, from misc/bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paramiko
from bench_probe import (
    cpu_seconds,
    file_create_ms,
    machine_cpu,
    profiled,
    reset_hwm,
    steal_share,
    vm_hwm_kib,
)
from bench_targets import (
    MiB,
    Target,
    drain,
    gateway_target,
    grid_gateway_target,
    openssh_target,
    sshfs_mount,
)
from bench_workloads import make_tree

CHANGE = 4096
OPEN_OPS_FACTOR = 4
"""OPENs timed per size, in units of ``--ops``."""
CROWD_FILES = 2000
"""Files beside the one the crowded-directory write+fsync changes."""
SUSTAINED_OPS = 1900
"""write+fsyncs timed after the first ``--ops`` on the 256 MiB file, on the same handle."""
OTHERS_QUIET_TIMEOUT = 120.0
"""Seconds to wait for the other targets' background work before a target's workload."""
Op = Callable[[int], float]
"""One operation (given its number); the seconds it took."""


def parse_size(text: str) -> int:
    """``4G``, ``256M``, ``64K`` or a number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def label(size: int) -> str:
    """``4 GiB``, ``256 MiB``."""
    return (
        f"{size >> 30} GiB" if size >= 1 << 30 and size % (1 << 30) == 0 else f"{size // MiB} MiB"
    )


class Row:
    """One workload's figures on one target."""

    def __init__(self, workload: str, target: str, latencies: list[float]) -> None:
        self.workload = workload
        self.target = target
        self.latencies = latencies  # seconds, one per operation
        self.cpu: float | None = None  # gateway CPU seconds over the workload (and its drain)
        self.rss: float | None = None  # gateway peak RSS in MiB during the workload
        self.steal: float | None = None  # share of the machine's CPU the host took meanwhile

    def figures(self) -> dict[str, Any]:
        """The row as printed: latencies in ms, rates per second."""
        ms = sorted(1000 * s for s in self.latencies)
        p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
        count = len(ms)
        return {
            "workload": self.workload,
            "target": self.target,
            "ops": count,
            "median_ms": statistics.median(ms),
            "p90_ms": p90,
            "ops_per_s": count / (sum(ms) / 1000),
            "cpu_ms_per_op": None if self.cpu is None else 1000 * self.cpu / count,
            "cpu_s": self.cpu,
            "peak_rss_mib": self.rss,
            "steal": self.steal,
        }


def measure(
    target: Target, name: str, count: int, op: Op, profile: Path | None, wait: bool = True
) -> Row:
    """Run ``op`` ``count`` times back to back; with our gateway's CPU (up to the upload
    queue's drain after the last one, unless ``wait`` is false) and peak RSS."""
    pid = target.pid
    if pid is not None:
        reset_hwm(pid)
        before = cpu_seconds(pid)
    machine = machine_cpu()
    with profiled(target.pid, f"{target.name}-{name}", profile):
        row = Row(name, target.name, [op(i) for i in range(count)])
        row.steal = steal_share(machine, machine_cpu())
        if wait:
            drain(target)
    if pid is not None:
        row.cpu = cpu_seconds(pid) - before
        row.rss = vm_hwm_kib(pid) / 1024
    return row


def quiet_others(targets: list[Target], target: Target) -> None:
    """Wait until every target but ``target`` has finished its background work (see
    ``Target.quiesce``): on one machine, another server's storage catching up after its
    own workload would otherwise run beside this one's. ``target``'s own background work
    from its workloads before still overlaps its next one, as it would for a user."""
    for other in targets:
        if other is not target:
            other.quiesce(timeout=OTHERS_QUIET_TIMEOUT)


def fsync(sftp: paramiko.SFTPClient, handle: bytes) -> None:
    """``fsync@openssh.com`` on an open handle (raises IOError on a failure status)."""
    sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", handle)


def create_file(sftp: paramiko.SFTPClient, path: str, size: int) -> None:
    """Setup: a file of ``size`` random bytes (distinct in every MiB), written pipelined."""
    with sftp.open(path, "wb") as f:
        f.set_pipelined(True)
        for offset in range(0, size, MiB):
            f.write(os.urandom(min(MiB, size - offset)))


def open_rw(sftp: paramiko.SFTPClient, path: str) -> Op:
    """OPEN for reading and writing (timed alone), then CLOSE."""

    def op(_: int) -> float:
        started = time.perf_counter()
        f = sftp.open(path, "r+")
        seconds = time.perf_counter() - started
        f.close()
        return seconds

    return op


def write_fsync(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile, size: int, seed: int) -> Op:
    """A 4 KiB WRITE at a random aligned offset below ``size``, then fsync."""
    rng = random.Random(seed)

    def op(_: int) -> float:
        offset = rng.randrange(size // CHANGE) * CHANGE
        data = os.urandom(CHANGE)
        started = time.perf_counter()
        f.seek(offset)
        f.write(data)
        f.flush()
        fsync(sftp, f.handle)
        return time.perf_counter() - started

    return op


def append_close(sftp: paramiko.SFTPClient, path: str, size: int) -> Op:
    """OPEN, a 4 KiB WRITE at the end (the file is ``size`` bytes before the first), CLOSE."""

    def op(i: int) -> float:
        data = os.urandom(CHANGE)
        started = time.perf_counter()
        with sftp.open(path, "r+") as f:
            f.seek(size + i * CHANGE)
            f.write(data)
        return time.perf_counter() - started

    return op


def sqlite_workload(
    target: Target, mount: Path, count: int, rows: int, profile: Path | None
) -> Row:
    """Setup: a database of ``rows`` rows of 4 KiB (one transaction, drained); then
    ``count`` transactions of an INSERT and an UPDATE of a random row each."""
    db = sqlite3.connect(mount / "bench.db", isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v BLOB)")
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, randomblob(4096))", ((i,) for i in range(rows)))
        db.execute("COMMIT")
        drain(target)
        rng = random.Random(2)

        def op(i: int) -> float:
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, randomblob(300))", (rows + i,))
            db.execute("UPDATE t SET v = randomblob(300) WHERE i = ?", (rng.randrange(rows),))
            db.execute("COMMIT")
            return time.perf_counter() - started

        return measure(target, "SQLite transaction", count, op, profile)
    finally:
        db.close()


def run(*argv: str | Path, timeout: float = 1800) -> str:
    """Run a command that must succeed; its stdout."""
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr[-1000:]}")
    return result.stdout


def ext4_possible() -> bool:
    """Whether ext4 on a loop device can run here (as root, with loop devices)."""
    return os.geteuid() == 0 and os.path.exists("/dev/loop-control")


def ext4_workload(
    target: Target, mount: Path, work: Path, image_size: int, tree: Path, profile: Path | None
) -> list[Row]:
    """mkfs / copy+sync / fsck of an ext4 image on the mount, back to back, each a row; and
    the whole sequence (its CPU counted until the upload queue drained)."""
    image = mount / "fs.img"
    fs = work / f"ext4-{target.name}"
    fs.mkdir()
    device: list[str] = []  # attached loop device, while attached
    mounted: list[Path] = []

    def mkfs(_: int) -> float:
        started = time.perf_counter()
        with open(image, "wb") as f:
            f.truncate(image_size)
        device.append(run("losetup", "--find", "--show", image).strip())
        run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", device[0])
        return time.perf_counter() - started

    def copy_sync(_: int) -> float:
        started = time.perf_counter()
        run("mount", device[0], fs)
        mounted.append(fs)
        run("cp", "-r", tree, fs / "tree")
        run("sync", "-f", fs)
        run("umount", mounted.pop())
        # (check=False: a device another process detached by mistake is gone all the same)
        subprocess.run(["losetup", "-d", device.pop()], check=False, timeout=60)
        return time.perf_counter() - started

    def fsck(_: int) -> float:
        started = time.perf_counter()
        run("fsck.ext4", "-n", "-f", image)
        return time.perf_counter() - started

    pid = target.pid
    before = cpu_seconds(pid) if pid is not None else 0.0
    machine = machine_cpu()
    try:
        steps = [
            measure(target, f"ext4 {name}", 1, step, profile, wait=False)
            for name, step in (("mkfs", mkfs), ("copy+sync", copy_sync), ("fsck", fsck))
        ]
    finally:
        for point in mounted:
            subprocess.run(["umount", "-l", str(point)], check=False, timeout=60)
        for dev in device:
            subprocess.run(["losetup", "-d", dev], check=False, timeout=60)
    drain(target)
    total = Row("ext4 sequence", target.name, [sum(s.latencies[0] for s in steps)])
    total.steal = steal_share(machine, machine_cpu())
    if pid is not None:
        total.cpu = cpu_seconds(pid) - before
        total.rss = max([vm_hwm_kib(pid) / 1024] + [s.rss for s in steps if s.rss is not None])
    return [*steps, total]


class Config:
    """What one run measures: sizes, counts, which targets."""

    def __init__(
        self, smoke: bool, big: int, grid: bool, ops: int | None, sustained: int | None = None
    ) -> None:
        self.smoke = smoke
        self.sizes = [2 * MiB, min(big, 6 * MiB)] if smoke else [256 * MiB, big]
        self.ops = ops or (3 if smoke else 100)
        self.sustained = SUSTAINED_OPS if sustained is None and not smoke else sustained or 5
        self.transactions = 5 if smoke else 200
        self.db_rows = 64 if smoke else 4096  # of 4 KiB: 16 MiB in a full run
        self.image = 16 * MiB if smoke else 256 * MiB
        self.tree_files = 20 if smoke else 500
        self.crowd = 20 if smoke else CROWD_FILES
        self.crowd_size = MiB if smoke else 16 * MiB
        self.grid = grid and not smoke


def measure_all(
    targets: list[Target], work: Path, config: Config, profile: Path | None
) -> list[Row]:
    """Every workload, each on every target in turn."""
    rows: list[Row] = []
    with ExitStack() as stack:
        sessions = [stack.enter_context(t.paramiko()) for t in targets]
        paths = {(t.name, s): f"{t.root}/inplace-{s}.bin" for t in targets for s in config.sizes}
        for target, sftp in zip(targets, sessions, strict=True):
            for size in config.sizes:  # setup, not a figure
                create_file(sftp, paths[target.name, size], size)
            os.sync()
            drain(target)
        for size in config.sizes:
            both = list(zip(targets, sessions, strict=True))
            name = label(size)
            for target, sftp in both:
                quiet_others(targets, target)
                op = open_rw(sftp, paths[target.name, size])
                # A fraction of a millisecond each: four times as many, so that the
                # median at 4 GiB against the one at 256 MiB is not a matter of noise.
                count = OPEN_OPS_FACTOR * config.ops
                rows.append(measure(target, f"OPEN r+ {name}", count, op, profile))
            for target, sftp in both:
                quiet_others(targets, target)
                with sftp.open(paths[target.name, size], "r+") as f:
                    op = write_fsync(sftp, f, size, seed=size)
                    rows.append(
                        measure(target, f"4 KiB write+fsync {name}", config.ops, op, profile)
                    )
                    if size == config.sizes[0] and config.sustained:
                        label_ = f"4 KiB write+fsync {name}, sustained"
                        op = write_fsync(sftp, f, size, seed=size + 1)
                        rows.append(measure(target, label_, config.sustained, op, profile))
            for target, sftp in both:
                quiet_others(targets, target)
                op = append_close(sftp, paths[target.name, size], size)
                rows.append(measure(target, f"4 KiB append+CLOSE {name}", config.ops, op, profile))
        rows += crowded_workload(list(zip(targets, sessions, strict=True)), config, profile)
    tree = work / "inplace-tree"
    make_tree(tree, config.tree_files)
    if not ext4_possible():
        print("bench_inplace: ext4 on a loop device skipped: needs root", file=sys.stderr)
    for target in targets:
        quiet_others(targets, target)
        with sshfs_mount(target, work / f"mnt-inplace-{target.name}") as mount:
            rows.append(
                sqlite_workload(target, mount, config.transactions, config.db_rows, profile)
            )
    for target in targets if ext4_possible() else []:
        quiet_others(targets, target)
        with sshfs_mount(target, work / f"mnt-ext4-{target.name}") as mount:
            rows += ext4_workload(target, mount, work, config.image, tree, profile)
    return rows


def crowded_workload(
    both: list[tuple[Target, paramiko.SFTPClient]], config: Config, profile: Path | None
) -> list[Row]:
    """4 KiB write+fsync on a file with ``config.crowd`` other files in its directory."""
    rows: list[Row] = []
    paths = {}
    for target, sftp in both:  # setup, not a figure
        folder = paths[target.name] = f"{target.root}/crowded"
        sftp.mkdir(folder)
        for n in range(config.crowd):
            sftp.open(f"{folder}/neighbour-{n:05d}.txt", "wb").close()
        create_file(sftp, f"{folder}/changed.bin", config.crowd_size)
        os.sync()
        drain(target)
    workload = f"4 KiB write+fsync {label(config.crowd_size)}, {config.crowd:,} files beside"
    for target, sftp in both:
        quiet_others([t for t, _ in both], target)
        with sftp.open(f"{paths[target.name]}/changed.bin", "r+") as f:
            op = write_fsync(sftp, f, config.crowd_size, seed=config.crowd)
            rows.append(measure(target, workload, config.ops, op, profile))
    return rows


def verdicts(rows: list[dict[str, Any]], config: Config) -> list[dict[str, Any]]:
    """The issue's targets for each of our gateways: the figures and whether each is met."""
    by = {(r["workload"], r["target"]): r for r in rows}
    small, big = (label(s) for s in config.sizes)
    found: list[dict[str, Any]] = []

    def fig(workload: str, key: str, who: str) -> float | None:
        row = by.get((workload, who))
        return None if row is None else row[key]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a and b else None

    def size_ratio(kind: str, who: str) -> float | None:
        return ratio(
            fig(f"{kind} {big}", "median_ms", who), fig(f"{kind} {small}", "median_ms", who)
        )

    sized = {
        kind: f"{kind}: median at {big} / at {small} <= 1.5"
        for kind in ("OPEN r+", "4 KiB write+fsync")
    }
    # OpenSSH's own ratio between the sizes, beside each size check: the two sizes are
    # measured minutes apart, and a machine whose speed moved meanwhile moves it too.
    own = {text: size_ratio(kind, "openssh") for kind, text in sized.items()}
    for target in sorted({r["target"] for r in rows} - {"openssh"}):
        checks: list[tuple[str, float | None, float]] = []  # (text, value, limit); < 0: at least
        for kind, text in sized.items():
            checks.append((text, size_ratio(kind, target), 1.5))
        for workload in (
            f"4 KiB write+fsync {small}",
            f"4 KiB write+fsync {small}, sustained",
            f"4 KiB write+fsync {big}",
            "SQLite transaction",
        ):
            value = ratio(fig(workload, "ops_per_s", target), fig(workload, "ops_per_s", "openssh"))
            checks.append((f"{workload}: ops/s >= 0.2x OpenSSH", value, -0.2))
        value = ratio(
            fig("ext4 sequence", "median_ms", target), fig("ext4 sequence", "median_ms", "openssh")
        )
        checks.append(("ext4 mkfs+copy+sync+fsck: time <= 5x OpenSSH", value, 5.0))
        changes = [f"4 KiB {k} {n}" for k in ("write+fsync", "append+CLOSE") for n in (small, big)]
        changes.append(f"4 KiB write+fsync {small}, sustained")
        cpu = [c for c in (fig(w, "cpu_ms_per_op", target) for w in changes) if c is not None]
        checks.append(
            ("CPU per 4 KiB change, worst of the five, <= 20 ms", max(cpu, default=None), 20.0)
        )
        rss = [r["peak_rss_mib"] for r in rows if r["target"] == target and r["peak_rss_mib"]]
        checks.append(
            ("peak RSS, largest of every workload, <= 200 MiB", max(rss, default=None), 200.0)
        )
        for text, value, limit in checks:
            met = None if value is None else value >= -limit if limit < 0 else value <= limit
            found.append({"target": target, "target_text": text, "value": value, "met": met})
            if own.get(text) is not None:
                found[-1]["openssh_own"] = own[text]
    return found


def report(
    rows: list[dict[str, Any]],
    checks: list[dict[str, Any]],
    config: Config,
    steal: float | None = None,
) -> None:
    """Print the table and the targets (``steal``: the run's, see bench_probe)."""
    stolen = "" if steal is None else f"; host steal {100 * steal:.1f} %"
    print(
        f"in-place changes (issue #16): files of {' and '.join(label(s) for s in config.sizes)}"
        f", {config.ops} ops each (OPEN {OPEN_OPS_FACTOR * config.ops}), back to back;"
        f" load average {os.getloadavg()[0]:.1f}{stolen}"
    )
    wide = max([len("workload"), *(len(r["workload"]) for r in rows)]) + 2
    print(
        f"{'workload':<{wide}}{'target':<9}{'ops':>5}{'median ms':>11}{'p90 ms':>10}{'ops/s':>10}"
        f"{'CPU ms/op':>11}{'RSS MiB':>9}{'steal %':>9}{'vs openssh':>12}"
    )
    base = {r["workload"]: r for r in rows if r["target"] == "openssh"}

    def cell(value: float | None, width: int, digits: int = 1) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for r in rows:
        theirs = base.get(r["workload"])
        ratio = r["ops_per_s"] / theirs["ops_per_s"] if theirs and r is not theirs else None
        print(
            f"{r['workload']:<{wide}}{r['target']:<9}{r['ops']:>5}{cell(r['median_ms'], 11, 2)}"
            f"{cell(r['p90_ms'], 10, 2)}{cell(r['ops_per_s'], 10)}"
            f"{cell(r['cpu_ms_per_op'], 11)}{cell(r['peak_rss_mib'], 9)}"
            f"{cell(None if r['steal'] is None else 100 * r['steal'], 9)}"
            + (f"{ratio:>11.3g}x" if ratio is not None else f"{'':>12}")
        )
    print("targets (issue #16):")
    for c in checks:
        met = {True: "met", False: "NOT met", None: "no figure"}[c["met"]]
        value = "-" if c["value"] is None else f"{c['value']:.3g}"
        theirs = c.get("openssh_own")
        beside = "" if theirs is None else f" (OpenSSH's own: {theirs:.3g})"
        print(f"  {c['target']:<8} {c['target_text']:<62} {value:>8}  {met}{beside}")


def run_inplace(
    *,
    smoke: bool,
    big: int,
    grid: bool,
    ops: int | None = None,
    profile: Path | None = None,
    sustained: int | None = None,
) -> dict[str, Any]:
    """Start the targets in a temp dir, measure, print; the JSON-ready results."""
    config = Config(smoke, big, grid, ops, sustained)
    with tempfile.TemporaryDirectory(prefix="gw-bench-inplace-") as tmp:
        work = Path(tmp)
        create_ms = file_create_ms(work)
        key = work / "client_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
        with ExitStack() as stack:
            targets = [
                stack.enter_context(openssh_target(work, key)),
                stack.enter_context(gateway_target(work, key)),
            ]
            if config.grid:
                targets.append(stack.enter_context(grid_gateway_target(work, key)))
            machine = machine_cpu()
            rows = [r.figures() for r in measure_all(targets, work, config, profile)]
            steal = steal_share(machine, machine_cpu())
    checks = verdicts(rows, config)
    report(rows, checks, config, steal)
    print(f"creating a directory and a file in the work directory: {create_ms} ms (median)")
    load = os.getloadavg()
    return {"sizes": config.sizes, "ops": config.ops, "load_average": load, "results": rows,
            "targets": checks, "file_create_ms": create_ms, "steal": steal}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, run, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big", default="4G", help="the big file's size (default 4G)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and counts (a test)")
    parser.add_argument("--no-grid", action="store_true", help="skip the 5-node grid gateway")
    parser.add_argument(
        "--ops", type=int, help="operations per workload (default 100; OPEN four times as many)"
    )
    parser.add_argument(
        "--sustained", type=int, help=f"write+fsyncs kept up on the 256 MiB file ({SUSTAINED_OPS})"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy each gateway workload")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
    big, grid = parse_size(args.big), not args.no_grid
    results = run_inplace(
        smoke=args.smoke,
        big=big,
        grid=grid,
        ops=args.ops,
        profile=args.profile,
        sustained=args.sustained,
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
