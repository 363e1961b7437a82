#!/usr/bin/env python3
"""Two builds of the gateway side by side, operations interleaved one by one.

On a machine whose speed moves by tens of percent from one minute to the next
(a shared VM: steal time, a busy disk), a change worth a few percent cannot be
seen by running one build's benchmark and then the other's. This starts two
gateways on their embedded grids in one run: "this" (the build installed for
this Python) and "other" (the build installed for ``--other``, another virtualenv's
Python, e.g. one with the commit before a change installed), and runs each workload
on both at once, one operation on one, then the same operation on the other, the
order swapped every time. Whatever the machine does meanwhile reaches both alike.

Per workload and build: median, mean and 90th percentile of the operations'
latency and the gateway's CPU per operation (``/proc/PID/stat`` before and after the
workload, so its background work counts too; for mkdir, rename and rmdir, per whole
cycle); then the median of this/other over the pairs, and how many pairs this build
won. Workloads (``--only`` picks some, comma-separated):

- ``stat``: STAT of one of ten 1 KiB files;
- ``ls10``: ``ls -l`` (paramiko ``listdir_attr``) of a directory of ten files;
- ``mkdir``, ``rename``, ``rmdir``: a directory made, renamed and removed, each
  timed on its own;
- ``create``: OPEN (create), WRITE of 4 KiB, CLOSE of a new file;
- ``fsync``: a 4 KiB WRITE at a random aligned offset of a ``--size`` file and
  ``fsync@openssh.com`` on one open handle.

Both gateways are stopped by pid at the end, also on an error. To make the other
build: ``python -m venv /tmp/old && /tmp/old/bin/pip install <a wheel built at the
other commit>`` (see docs/performance.rst, "Two builds side by side").

    .venv/bin/python misc/bench_ab.py --other /tmp/old/bin/python [--ops 400]
        [--only stat,fsync] [--size 256M] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from bench_inplace import create_file, fsync, parse_size
from bench_probe import cpu_seconds
from bench_targets import Target, drain, gateway_target

WORKLOADS = ("stat", "ls10", "mkdir", "rename", "rmdir", "create", "fsync")
BUILDS = ("this", "other")

Step = Callable[[int], None]
"""One operation on one gateway, given its number."""


def _setup(name: str, sftp: paramiko.SFTPClient, size: int) -> Callable[[int], list[Step]]:
    """What a workload needs on one gateway; then, per operation number, its steps (each
    timed on its own)."""
    if name in ("stat", "ls10"):
        directory = f"ab-{name}"
        sftp.mkdir(directory)
        for i in range(10):
            with sftp.open(f"{directory}/f{i}", "wb") as f:
                f.write(os.urandom(1024))

        def stat(i: int) -> None:
            sftp.stat(f"{directory}/f{i % 10}")

        def listing(_: int) -> None:
            if len(sftp.listdir_attr(directory)) != 10:
                raise RuntimeError(f"ls -l of {directory} lost entries")

        return lambda i: [stat if name == "stat" else listing]
    if name in ("mkdir", "rename", "rmdir"):
        steps: dict[str, Callable[[int], Step]] = {
            "mkdir": lambda i: lambda _: sftp.mkdir(f"ab-{name}-m{i}"),
            "rename": lambda i: lambda _: sftp.rename(f"ab-{name}-m{i}", f"ab-{name}-n{i}"),
            "rmdir": lambda i: lambda _: sftp.rmdir(f"ab-{name}-n{i}"),
        }
        # Only the named one is timed (the others set it up and clean up after it).
        return lambda i: [steps[k](i) for k in ("mkdir", "rename", "rmdir")]
    if name == "create":
        data = os.urandom(4096)

        def create(i: int) -> None:
            with sftp.open(f"ab-c{i}", "wb") as f:
                f.write(data)

        return lambda i: [create]
    if name == "fsync":
        create_file(sftp, "ab-big", size)
        handle = sftp.open("ab-big", "r+")
        rng = random.Random(size)

        def write_fsync(_: int) -> None:
            handle.seek(rng.randrange(size // 4096) * 4096)
            handle.write(os.urandom(4096))
            handle.flush()
            fsync(sftp, handle.handle)

        return lambda i: [write_fsync]
    raise ValueError(f"no workload named {name!r}")


def run_workload(
    name: str, targets: list[Target], sessions: list[paramiko.SFTPClient], ops: int, size: int
) -> dict[str, Any]:
    """``ops`` operations of one workload on both gateways, interleaved; the figures."""
    plans = [_setup(name, sftp, size) for sftp in sessions]
    for target in targets:
        drain(target)
    timed = ("mkdir", "rename", "rmdir").index(name) if name in ("mkdir", "rename", "rmdir") else 0
    seconds: list[list[float]] = [[], []]
    pids = [t.pid for t in targets]
    assert None not in pids
    before = [cpu_seconds(pid) for pid in pids if pid is not None]
    for i in range(ops):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            for at, step in enumerate(plans[side](i)):
                if at != timed:
                    step(i)
                    continue
                started = time.perf_counter()
                step(i)
                seconds[side].append(time.perf_counter() - started)
    # Each gateway's CPU over the whole interleaved run (its background work included):
    # /proc counts in ticks of 10 ms, too coarse to read around each operation.
    cpu = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True) if pid is not None]
    result: dict[str, Any] = {"workload": name, "ops": ops}
    for side, build in enumerate(BUILDS):
        ms = sorted(1000 * s for s in seconds[side])
        result[build] = {
            "median_ms": statistics.median(ms),
            "mean_ms": statistics.fmean(ms),
            "p90_ms": ms[min(len(ms) - 1, int(0.9 * len(ms)))],
            "cpu_ms_per_op": 1000 * cpu[side] / ops,
        }
    ratios = [a / b for a, b in zip(seconds[0], seconds[1], strict=True) if b > 0]
    result["median_ratio"] = statistics.median(ratios)  # this / other, per pair
    result["this_faster"] = sum(r < 1 for r in ratios)
    return result


def report(results: list[dict[str, Any]]) -> None:
    """Print one line per workload and build, then the pairs' verdict."""
    print(f"{'workload':10s} {'build':6s} {'median ms':>10s} {'mean ms':>9s} {'p90 ms':>8s} "
          f"{'CPU ms/op':>10s}")  # fmt: skip
    for r in results:
        for build in BUILDS:
            f = r[build]
            print(f"{r['workload']:10s} {build:6s} {f['median_ms']:10.3f} {f['mean_ms']:9.3f} "
                  f"{f['p90_ms']:8.3f} {f['cpu_ms_per_op']:10.3f}")  # fmt: skip
        print(f"{'':10s} this/other per pair: median {r['median_ratio']:.3f}, this faster in "
              f"{r['this_faster']} of {r['ops']}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, start both gateways, run, report; 0 once done."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", required=True, help="the Python of the other build's venv")
    parser.add_argument("--ops", type=int, default=400, help="operations per workload (400)")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"),
                        help="the fsync workload's file (256M)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"no workload named {', '.join(unknown)}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        key = work / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                       check=True)  # fmt: skip
        targets = [
            stack.enter_context(gateway_target(work, key, "this")),
            stack.enter_context(gateway_target(work, key, "other", python=args.other)),
        ]
        for name in chosen:
            print(f"bench_ab: {name}", file=sys.stderr, flush=True)
            with ExitStack() as sessions_stack:
                sessions = [sessions_stack.enter_context(t.paramiko()) for t in targets]
                results.append(run_workload(name, targets, sessions, args.ops, args.size))
    report(results)
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
