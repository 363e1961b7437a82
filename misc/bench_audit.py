#!/usr/bin/env python3
"""Measure what the audit log costs (issue #18, item 7).

- ``writer``: the time one ``AuditFile.record`` takes on the reactor thread (a
  typical ``rename`` event: format, scrub, one ``os.write``), over ``--events``
  events, without rotation and with rotation every ``--rotate-size`` bytes;
- ``sftp``: a real gateway node with the audit log off, then on: ``--ops``
  MKDIR+RMDIR pairs over one paramiko session, one request at a time, and the
  time per request (what an interactive client would feel).

    .venv/bin/python misc/bench_audit.py writer
    .venv/bin/python misc/bench_audit.py sftp --ops 500
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paramiko
from twisted.internet.task import Clock

from gateway.audit.events import Client
from gateway.audit.writer import AuditFile
from gateway.logfile import Scrubber

PASSWORD = "bench password"


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[int(len(ordered) * 0.99)]
    return (
        f"mean {statistics.fmean(ordered) * 1e6:.1f} µs, p50 {p50 * 1e6:.1f} µs, "
        f"p99 {p99 * 1e6:.1f} µs, max {ordered[-1] * 1e6:.0f} µs"
    )


def bench_writer(events: int, rotate_size: int) -> None:
    """Time each record() of a typical event."""
    client = Client("alice", "192.0.2.7", 50122, 3)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as scratch:
        for label, max_size in (
            ("no rotation", 0),
            (f"rotating every {rotate_size} B", rotate_size),
        ):
            path = Path(scratch) / f"audit-{max_size}.jsonl"
            writer = AuditFile(
                path, max_size=max_size, keep=3, clock=Clock(), scrub=Scrubber().scrub
            )
            samples = []
            for number in range(events):
                started = time.perf_counter()
                writer.record(
                    "rename",
                    client,
                    **{"from": f"/docs/report-{number}.filepart", "to": f"/docs/report-{number}"},
                    overwrite=True,
                    outcome="ok",
                )
                samples.append(time.perf_counter() - started)
            writer.close()
            print(f"writer, {label}: {events} events, {_percentiles(samples)}")


def _gateway(*args: str | Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=True,
    )
    return done.stdout


def bench_sftp(ops: int) -> None:
    """Time MKDIR and RMDIR over SFTP with the audit log off and on."""
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as scratch:
        for audit in ("false", "true"):
            node = Path(scratch) / f"gw-{audit}"
            _gateway("create", node, "--sftp-port", "0", "--web-port", "0")
            _gateway("account", "add", node, "alice", "--password-stdin", stdin=PASSWORD + "\n")
            config = node / "node.cfg"
            config.write_text(config.read_text().replace("#enabled = false", f"enabled = {audit}"))
            started = _gateway("start", node)
            match = re.search(r"SFTP: sftp -P (\d+)", started)
            assert match, started
            try:
                transport = paramiko.Transport(("127.0.0.1", int(match.group(1))))
                transport.connect(username="alice", password=PASSWORD)
                sftp = paramiko.SFTPClient.from_transport(transport)
                assert sftp is not None
                samples = []
                for number in range(ops):
                    for request in (sftp.mkdir, sftp.rmdir):
                        before = time.perf_counter()
                        request(f"/d{number}")
                        samples.append(time.perf_counter() - before)
                transport.close()
            finally:
                _gateway("stop", node)
            lines = sum(1 for _ in (node / "logs" / "audit.jsonl").open()) if audit == "true" else 0
            print(
                f"sftp, audit {audit}: {2 * ops} requests, {_percentiles(samples)}, {lines} lines"
            )


def main() -> None:
    """Run the measurement named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("writer", "sftp"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rotate-size", type=int, default=1024 * 1024)
    parser.add_argument("--ops", type=int, default=300)
    options = parser.parse_args()
    if options.what == "writer":
        bench_writer(options.events, options.rotate_size)
    else:
        bench_sftp(options.ops)


if __name__ == "__main__":
    main()
