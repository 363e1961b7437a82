#!/usr/bin/env python3
"""Benchmark the gateway's SFTP server side by side with OpenSSH's own sftp-server.

One run on loopback starts an OpenSSH sshd (internal-sftp on a temp directory,
its own config, host key and authorized key under a temp dir), our gateway with
the embedded default grid and (unless ``--no-grid``) a gateway on five of our
storage nodes (3/5/5, "grid5"), then runs the same workloads against each with
real clients (OpenSSH ``sftp`` in batch mode, paramiko, sshfs), back to back as
users work: each workload right after the previous one, the download right
after the upload, background uploads of earlier files still running.
``--quiesce`` adds a second pass per target that waits for the server to go
idle before each workload, printed as a second column ("idle"), never instead.
After each target's series (not between its workloads) the run waits for that
target's background work to finish, so that it does not run during the next
target's series (targets share the machine's CPUs and disk); how long that
took is printed and kept in the JSON (``drained``).

Per figure and target: the median over the runs, the server's CPU seconds
and peak RSS (``misc/bench_probe.py``), the ratio to OpenSSH's figure and
whether it meets issue #17's target; then a summary line of the misses. A
workload that sees the server misbehave (``tar`` or ``diff`` through sshfs
reporting a problem, downloaded bytes that differ) stops the run with exit
status 1 and the message. Nothing leaves 127.0.0.1; every process started is
stopped by pid, every mount unmounted and the temp dir removed, also on
failure, SIGTERM or Ctrl-C.

    .venv/bin/python misc/bench.py [--runs 3] [--quiesce] [--json FILE] [--smoke]
        [--only TEXT] [--no-large] [--no-sshfs] [--no-grid] [--with-tahoe]
        [--inplace [--big 4G]] [--profile DIR]

``--with-tahoe`` adds Tahoe-LAFS 1.20's own SFTP frontend on a 5-node 3/5/5
grid of Tahoe storage nodes ("tahoe", ``misc/bench_tahoe.py``); ``--inplace``
adds the in-place group of issue #16 (``misc/bench_inplace.py``), ``--only
inplace`` runs it alone. ``--profile DIR`` records each of our servers' workloads
with ``py-spy record -f raw`` into DIR (a file per target, pass, run and workload).
Modules: ``bench_targets`` (the servers), ``bench_workloads``, ``bench_probe`` (CPU,
RSS and profiles), ``bench_report`` (table).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

import attrs
import bench_workloads as w
from bench_probe import file_create_ms, machine_cpu, profiled, steal_share
from bench_report import TARGETS, Results, misses, print_table, rows
from bench_targets import (
    BenchFailure,
    MiB,
    Target,
    gateway_target,
    grid_gateway_target,
    openssh_target,
)


@attrs.frozen
class Workload:
    """A workload and the targets it runs on."""

    label: str  # what ``--only`` matches
    run: Callable[[Target, Path], list[w.Figure]]
    on: frozenset[str] = frozenset(TARGETS)


def plan(args: argparse.Namespace) -> list[Workload]:
    """The workloads of this run, in order. grid5 and Tahoe get the ones the issue sets
    targets for (not the 1000-entry listing: creating it would take Tahoe minutes), and
    only our gateways the 1 GiB write."""
    smoke = args.smoke
    big = 1 * MiB if smoke else 64 * MiB
    reads, small, many, cycles, stats = (20, 5, 30, 3, 10) if smoke else (500, 200, 1000, 50, 200)
    every = frozenset(TARGETS)
    local = frozenset({"openssh", "gateway", "grid5"})
    found = [
        Workload(f"upload {big // MiB} MiB", lambda t, d: w.upload(t, d, big), every),
        Workload(f"download {big // MiB} MiB", lambda t, d: w.download(t, d, big), every),
        Workload(f"random reads x{reads}", lambda t, d: w.random_reads(t, d, reads), every),
        Workload(f"{small} x 16 KiB files", lambda t, d: w.small_files(t, d, small), every),
        Workload(f"mkdir+rename+rmdir x{cycles}", lambda t, d: w.metadata_ops(t, d, cycles), every),
        Workload(f"stat x{stats}, ls -l", lambda t, d: w.stat_and_list(t, d, stats), every),
        Workload(f"ls -l of {many} entries, changes among them",
                 lambda t, d: w.list_many(t, d, many), frozenset({"openssh", "gateway"})),
    ]  # fmt: skip
    if not args.no_large:
        large = 4 * MiB if smoke else 1024 * MiB
        found.append(
            Workload(f"CLOSE after writing {large // MiB} MiB",
                     lambda t, d: w.close_after_large_write(t, d, large),
                     frozenset({"openssh", "gateway"}))
        )  # fmt: skip
    if not args.no_sshfs and shutil.which("sshfs") and os.path.exists("/dev/fuse"):
        files = 20 if smoke else 500
        found.append(Workload(f"sshfs cp+tar+diff {files} files",
                              lambda t, d: w.sshfs_tree(t, d, files), local))  # fmt: skip
    if args.only:  # the download and the reads need the upload's file
        found = [x for x in found if args.only in x.label or x.label.startswith("upload")]
    return found


def measure(targets: list[Target], work: Path, runs: int, passes: tuple[str, ...],
            workloads: list[Workload], profile: Path | None = None) -> Results:  # fmt: skip
    """Every workload on every target, ``runs`` times, in each pass ("b2b", "idle");
    with ``profile``, py-spy samples our servers during each workload into that DIR."""
    results = Results()
    for run in range(runs):
        for target in targets:
            for mode in passes:
                for place, workload in enumerate(workloads):
                    if target.name not in workload.on:
                        continue
                    print(f"bench: run {run + 1}, {target.name}, {mode}: {workload.label}",
                          file=sys.stderr, flush=True)  # fmt: skip
                    if mode == "idle":
                        target.quiesce()
                    name = f"{target.name}-{mode}-{run + 1}-{workload.label}"
                    with target.measuring() as usage, profiled(target.pid, name, profile):
                        figures = workload.run(target, work)
                        if mode == "idle":  # its CPU: until its background work is done
                            target.quiesce()
                    for index, figure in enumerate(figures):
                        figure.usage = figure.usage or usage
                        results.add(target.name, mode, figure, (place, index))
            # The next target's series must not run beside this one's background work.
            started = time.monotonic()
            target.quiesce()
            took = time.monotonic() - started
            results.drained.setdefault(target.name, []).append(round(took, 2))
            print(f"bench: {target.name} finished its background work {took:.1f} s after its"
                  " series", file=sys.stderr, flush=True)  # fmt: skip
    return results


def run_targets(args: argparse.Namespace, workloads: list[Workload]) -> Results:
    """Start the targets in a temp dir, measure, stop them (by pid) and remove the dir."""
    runs = 1 if args.smoke else args.runs
    passes = ("b2b", "idle") if args.quiesce else ("b2b",)
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        create_ms = file_create_ms(work)
        key = work / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        with ExitStack() as stack:
            targets = [
                stack.enter_context(openssh_target(work, key)),
                stack.enter_context(gateway_target(work, key)),
            ]
            if not args.smoke and not args.no_grid:
                targets.append(stack.enter_context(grid_gateway_target(work, key)))
            if args.with_tahoe:
                from bench_tahoe import tahoe_target

                targets.append(stack.enter_context(tahoe_target(work, key)))
            results = measure(targets, work, runs, passes, workloads, args.profile)
            results.file_create_ms = create_ms
            return results


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: unwind (every cleanup runs); a second SIGTERM must not cut the cleanups short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(143)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--only", metavar="TEXT", help="run only workloads whose name has TEXT")
    parser.add_argument("--no-large", action="store_true", help="skip the 1 GiB write")
    parser.add_argument("--no-sshfs", action="store_true", help="skip the sshfs tree copy")
    parser.add_argument("--no-grid", action="store_true", help="skip the 5-node grid target")
    parser.add_argument(
        "--quiesce",
        action="store_true",
        help="also measure each workload after waiting for the server to go idle (2nd column)",
    )
    parser.add_argument(
        "--with-tahoe",
        action="store_true",
        help="also measure Tahoe-LAFS 1.20's SFTP frontend on a 5-node 3/5/5 Tahoe grid",
    )
    parser.add_argument("--inplace", action="store_true", help="add the in-place group (#16)")
    parser.add_argument("--big", default="4G", help="the in-place group's big file (4G)")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy our servers during each workload"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every workload on every target; print the table; write JSON."""
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    if args.inplace or args.only == "inplace":
        from bench_inplace import parse_size, run_inplace

        def inplace() -> dict[str, object]:
            return run_inplace(smoke=args.smoke, big=parse_size(args.big), grid=not args.no_grid)

        if args.only == "inplace":
            figures = inplace()
            if args.json:
                args.json.write_text(json.dumps({"inplace": figures}, indent=1))
            return 0
    if args.with_tahoe:
        from bench_tahoe import tahoe_available

        if not tahoe_available():
            print("bench: --with-tahoe needs .venv-tahoe (misc/test installs it)", file=sys.stderr)
            return 2
    load = os.getloadavg()
    machine = machine_cpu()
    try:
        results = run_targets(args, plan(args))
    except BenchFailure as failure:
        print(f"bench: FAILED: {failure}", file=sys.stderr)
        return 1
    steal = steal_share(machine, machine_cpu())
    runs = 1 if args.smoke else args.runs
    table = rows(results)
    stolen = "" if steal is None else f"host steal during the run: {100 * steal:.1f} %; "
    print(f"load average before the run: {load[0]:.1f}, after: {os.getloadavg()[0]:.1f}; "
          f"{stolen}creating a directory and a file in the work directory: "
          f"{results.file_create_ms} ms (median)")  # fmt: skip
    print_table(table, runs, args.quiesce)
    if args.json:
        report = {"runs": runs, "quiesce": args.quiesce, "targets": results.targets(),
                  "drained": results.drained,
                  "load_average": [load, os.getloadavg()], "steal": steal,
                  "file_create_ms": results.file_create_ms, "results": table,
                  "missed": misses(table)}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=1))
    if args.inplace:
        figures = inplace()
        if args.json:
            saved = json.loads(args.json.read_text())
            args.json.write_text(json.dumps({**saved, "inplace": figures}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
