#!/usr/bin/env python3
"""Share write/read throughput over HTTPS: our storage node against a Tahoe-LAFS 1.20 node.

One run, all on loopback: start one of OUR storage nodes (``gateway create-storage``
+ ``gateway start``) and one unmodified Tahoe-LAFS 1.20 storage node (from
``.venv-tahoe``), then measure both with the same client, our
:class:`gateway.grid.http_client.HttpStorageClient`:

* write: allocate one immutable share of ``--size`` bytes under a fresh storage
  index and upload it in ``--chunk``-byte ``PATCH`` requests, ``--in-flight`` at once;
* read: read it back in ``--chunk``-byte ranges, ``--in-flight`` at once, checking
  every byte against what was written.

Each measurement is repeated ``--repeat`` times (servers alternate, so drift hits
both alike) and the median is reported in MB/s (10**6 bytes per second). Both
servers, the client and the encryption all share this machine's CPUs, so the
numbers compare the two servers; they are not network figures.

    .venv/bin/python misc/bench_storage.py                # 64 MiB share, 1 MiB chunks, 3 runs
    .venv/bin/python misc/bench_storage.py --json out.json
    .venv/bin/python misc/bench_storage.py --shares 64 --in-flight 8   # 64 shares of 1 MiB
    .venv/bin/python misc/bench_storage.py --smoke        # tiny and quick (the test suite runs it)

Every process started is stopped by its pid and every temporary directory removed,
also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from attrs import frozen
from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from gateway.grid.http_client import HttpStorageClient  # noqa: E402
from storage import wire  # noqa: E402
from storage.tls import load_tls_credentials  # noqa: E402

TAHOE = ROOT / ".venv-tahoe" / "bin" / "tahoe"
MiB = 2**20
START_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM ``pid``, then SIGKILL it if it is still there after ``timeout`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
            except (FileNotFoundError, IndexError):
                return
            if state == "Z":
                return
            time.sleep(0.1)


@contextmanager
def our_storage_node(root: Path) -> Iterator[str]:
    """Run one of our storage nodes (a ``gateway`` process); yield its NURL."""
    node_dir = root / "ours"
    gateway = [sys.executable, "-m", "gateway"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> str:
        proc = subprocess.run(
            [*gateway, *args], capture_output=True, text=True, timeout=START_TIMEOUT, env=env
        )
        if proc.returncode != 0:
            raise RuntimeError(f"gateway {args[0]} failed: {proc.stderr.strip()}")
        return proc.stdout

    run("create-storage", str(node_dir), "--nickname", "bench", "--reserved-space", "0")
    try:
        run("start", str(node_dir))
        yield (node_dir / "private" / "nurl").read_text().strip()
    finally:
        pid_text = (
            (node_dir / "node.pid").read_text().strip() if (node_dir / "node.pid").exists() else ""
        )
        if pid_text.isdigit():
            _stop_pid(int(pid_text))


def tahoe_nurl(node_dir: Path, port: int) -> str:
    """The HTTP storage NURL of a Tahoe 1.20 node: pin of node.pem, swissnum of storage.furl.

    Tahoe 1.20 writes no NURL file; this builds it as its ``build_nurl`` does (same
    function as in ``tests/grid_e2e/processes.py``).
    """
    pem = (node_dir / "private" / "node.pem").read_bytes()
    furl = (node_dir / "private" / "storage.furl").read_text().strip()
    swissnum = furl.rsplit("/", 1)[1].encode("ascii")
    spki_hash = load_tls_credentials(pem, pem).spki_hash
    return wire.format_nurl(spki_hash, "127.0.0.1", port, swissnum)


@contextmanager
def tahoe_storage_node(root: Path) -> Iterator[str]:
    """Run an unmodified Tahoe-LAFS 1.20 storage node (``tahoe run``); yield its NURL."""
    node_dir = root / "tahoe"
    port = _free_port()
    subprocess.run(
        [
            str(TAHOE), "create-node",
            f"--port=tcp:{port}:interface=127.0.0.1",
            f"--location=tcp:127.0.0.1:{port}",
            "--webport=none", "--nickname=bench", str(node_dir),
        ],
        check=True, capture_output=True, timeout=START_TIMEOUT,
    )  # fmt: skip
    config = node_dir / "tahoe.cfg"
    config.write_text(config.read_text().replace("reserved_space = 1G", "reserved_space = 0"))
    with open(root / "tahoe-run.log", "wb") as log:
        process = subprocess.Popen(
            [str(TAHOE), "run", "--allow-stdin-close", str(node_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            furl = node_dir / "private" / "storage.furl"
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"tahoe run exited with {process.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError("the Tahoe node did not start listening in time")
                if furl.exists():
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        pass
                time.sleep(0.2)
            yield tahoe_nurl(node_dir, port)
        finally:
            _stop_pid(process.pid)
            process.wait(timeout=30)


@frozen
class Settings:
    """What one benchmark run measures."""

    size: int
    chunk: int
    in_flight: int
    repeat: int
    shares: int = 1


@frozen
class Result:
    """Throughputs (MB/s) of every repetition against one server."""

    server: str
    version: str
    write: list[float]
    read: list[float]


async def _pipelined(jobs: list[Callable[[], Awaitable[None]]], in_flight: int) -> None:
    """Run ``jobs`` in order with at most ``in_flight`` of them outstanding."""
    queue = iter(jobs)

    async def worker() -> None:
        for job in queue:
            await job()

    workers = [defer.Deferred.fromCoroutine(worker()) for _ in range(in_flight)]
    await defer.gatherResults(workers, consumeErrors=True)


async def measure_once(
    reactor: Any, client: HttpStorageClient, data: bytes, s: Settings
) -> tuple[float, float]:
    """Write ``data`` as ``s.shares`` shares (one storage index each) and read them back;
    the (write, read) MB/s. Allocations are made before the clock starts."""
    share_size = len(data) // s.shares
    shares = []
    for number in range(s.shares):
        si = os.urandom(16)
        upload, renew, cancel = os.urandom(32), os.urandom(32), os.urandom(32)
        allocated = await client.allocate_buckets(
            si, frozenset({0}), share_size, upload, renew, cancel
        )
        assert allocated.allocated == frozenset({0}), allocated
        shares.append((si, upload, number * share_size))
    view = memoryview(data)

    def write_job(
        si: bytes, upload: bytes, base: int, offset: int
    ) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            end = min(offset + s.chunk, share_size)
            await client.write_immutable(si, 0, upload, offset, data[base + offset : base + end])

        return job

    def read_job(si: bytes, base: int, offset: int) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            got = await client.read_immutable(si, 0, offset, s.chunk)
            end = min(offset + s.chunk, share_size)
            if got != view[base + offset : base + end]:
                raise AssertionError(f"read at {offset} returned other bytes")

        return job

    offsets = range(0, share_size, s.chunk)
    started = reactor.seconds()
    writes = [write_job(si, up, base, o) for si, up, base in shares for o in offsets]
    await _pipelined(writes, s.in_flight)
    wrote = reactor.seconds() - started
    for si, _, _ in shares:
        assert await client.list_immutable(si) == frozenset({0}), "share not complete"
    started = reactor.seconds()
    await _pipelined(
        [read_job(si, base, o) for si, _, base in shares for o in offsets], s.in_flight
    )
    read = reactor.seconds() - started
    total = share_size * s.shares
    return total / wrote / 1e6, total / read / 1e6


async def benchmark(reactor: Any, nurls: dict[str, str], s: Settings) -> list[Result]:
    """Measure every server ``s.repeat`` times, alternating between servers."""
    data = os.urandom(s.size)
    clients = {name: HttpStorageClient.from_nurl(reactor, nurl) for name, nurl in nurls.items()}
    results: dict[str, Result] = {}
    try:
        for name, client in clients.items():
            version = await client.get_version()
            if version.maximum_immutable_share_size < s.size:
                raise RuntimeError(f"{name} accepts shares of at most {s.size} bytes")
            app = version.application_version.decode("utf-8", "replace")
            results[name] = Result(name, app, [], [])
        for _ in range(s.repeat):
            for name, client in clients.items():
                write, read = await measure_once(reactor, client, data, s)
                results[name].write.append(write)
                results[name].read.append(read)
    finally:
        for client in clients.values():
            await client.close()
    return list(results.values())


def table(results: list[Result], s: Settings) -> str:
    """The results as a plain-text table of medians (with the spread of the runs)."""
    what = (
        f"share {s.size / MiB:g} MiB"
        if s.shares == 1
        else (f"{s.shares} shares of {s.size / s.shares / MiB:g} MiB")
    )
    lines = [
        f"{what}, chunks {s.chunk / MiB:g} MiB, {s.in_flight} in flight, "
        f"median of {s.repeat} run(s), MB/s = 10**6 B/s, HTTPS on 127.0.0.1",
        f"{'server':<16} {'write MB/s':>10} {'read MB/s':>10}   "
        f"{'runs (write / read)':<30} version",
    ]
    for r in results:
        runs = " ".join(f"{w:.0f}" for w in r.write) + " / " + " ".join(f"{x:.0f}" for x in r.read)
        lines.append(
            f"{r.server:<16} {statistics.median(r.write):>10.1f} "
            f"{statistics.median(r.read):>10.1f}   {runs:<30} {r.version}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> tuple[Settings, Path | None]:
    """Command-line options; ``--smoke`` overrides the sizes with tiny ones and one run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=float, default=64, help="share size in MiB (default 64)")
    p.add_argument("--chunk-kib", type=int, default=1024, help="request size in KiB (default 1024)")
    p.add_argument("--in-flight", type=int, default=4, help="concurrent requests (default 4)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions per server (default 3)")
    p.add_argument(
        "--shares",
        type=int,
        default=1,
        help="split the size into this many shares, each under its own storage index "
        "(default 1; many small shares measure share completion, as chunk trees make)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write JSON here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one run: does it all work?")
    args = p.parse_args(argv)
    if args.smoke:
        settings = Settings(size=256 * 1024, chunk=64 * 1024, in_flight=2, repeat=1)
    else:
        settings = Settings(
            size=int(args.size_mib * MiB),
            chunk=args.chunk_kib * 1024,
            in_flight=args.in_flight,
            repeat=args.repeat,
            shares=args.shares,
        )
    if (
        settings.size <= 0
        or settings.chunk <= 0
        or settings.in_flight <= 0
        or settings.repeat <= 0
        or settings.shares <= 0
    ):
        p.error("sizes, --in-flight and --repeat must be positive")
    return settings, args.json


def main(argv: list[str] | None = None) -> int:
    """Start both servers, benchmark them, print the table (and JSON), stop everything."""
    settings, json_path = parse_args(argv)
    if not os.access(TAHOE, os.X_OK):
        print(f"bench_storage: {TAHOE} is missing (misc/test installs it)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
    root = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        with ExitStack() as stack:
            nurls = {
                "ours": stack.enter_context(our_storage_node(root)),
                "tahoe-lafs-1.20": stack.enter_context(tahoe_storage_node(root)),
            }
            outcome: list[list[Result]] = []

            async def run(reactor: Any) -> None:
                outcome.append(await benchmark(reactor, nurls, settings))

            try:
                task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
            except SystemExit as e:  # react() always exits; keep going to the cleanups
                if e.code not in (0, None) or not outcome:
                    print("bench_storage: the benchmark failed (see above)", file=sys.stderr)
                    return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results = outcome[0]
    print(table(results, settings))
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {
                    "settings": {
                        "size": settings.size,
                        "chunk": settings.chunk,
                        "in_flight": settings.in_flight,
                        "repeat": settings.repeat,
                        "shares": settings.shares,
                    },
                    "unit": "MB/s (10**6 bytes per second)",
                    "servers": {
                        r.server: {
                            "version": r.version,
                            "write": r.write,
                            "read": r.read,
                            "write_median": statistics.median(r.write),
                            "read_median": statistics.median(r.read),
                        }
                        for r in results
                    },
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
