#!/usr/bin/env python3
"""Whole-file put/get throughput and peak memory: our object layer against Tahoe-LAFS 1.20.

One run, all on loopback:

* OUR grid: five ``gateway`` storage nodes (``create-storage`` + ``start``);
  our object layer (:class:`ImmutableUploader` / :class:`ImmutableReader` over
  :class:`HttpStorageClient`, encoding 3/5/5) runs in a child process, once
  for ``put`` (stream the source file up) and once for ``get`` (stream it down
  into a file); each child reports its own time and peak RSS
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).
* TAHOE grid (``--with-tahoe``, the default when ``.venv-tahoe`` exists): five
  Tahoe-LAFS 1.20 storage nodes and one Tahoe client node (3/5/5, HTTP storage
  protocol, servers listed in ``private/servers.yaml``); ``tahoe put`` and
  ``tahoe get`` are timed, and the peak RSS is the client node process's
  ``VmHWM`` (reset before each operation through ``/proc/<pid>/clear_refs``).

Every download is checked byte for byte (SHA-256) against the source. MB/s is
10**6 bytes per second of file data. Storage nodes, client and encryption all
share this machine's CPUs, so the figures compare the two implementations; they
are not network figures.

    .venv/bin/python misc/bench_objects.py                  # 1 GiB file, both grids
    .venv/bin/python misc/bench_objects.py --size 256M --json out.json
    .venv/bin/python misc/bench_objects.py --smoke --no-tahoe   # a few MiB (the test suite)

``chunks`` measures chunk trees instead, in this process on an embedded 1-of-1
grid (a storage core on disk, as ``gateway start`` without a grid runs it): a new
file uploaded as one object and as a chunk tree (wall time, MB/s), and the
object-layer CPU of storing a 4 KiB change and a 4 KiB append, for each chunk
size::

    .venv/bin/python misc/bench_objects.py chunks                       # 256 MiB
    .venv/bin/python misc/bench_objects.py chunks --big 4G --chunk-sizes 1M

Every process started is stopped by its pid and every temporary directory
removed, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from attrs import asdict, frozen

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from tests.grid_e2e.processes import (  # noqa: E402
    TAHOE,
    StorageNode,
    TahoeStorageNode,
    free_port,
    start_our_grid,
    start_tahoe_grid,
    stop_all,
    stop_pid,
)

MiB = 2**20
SERVERS = 5
K, HAPPY, N = 3, 5, 5
CONNECT_TIMEOUT = 90.0


# --- the object-layer worker (runs in a child process) ------------------------------


def _worker(argv: list[str]) -> int:
    """``bench_objects.py _worker put|get NURLS_FILE FILE [CAP_FILE]``: one timed operation.

    Prints one JSON line: seconds, bytes, peak RSS (KiB) and, for put, the cap.
    """
    from twisted.internet import defer, task

    from gateway.grid.http_client import HttpStorageClient
    from gateway.objects.caps import ImmutableReadCap, parse
    from gateway.objects.crypto import GatewaySecrets
    from gateway.objects.immutable import ImmutableReader
    from gateway.objects.immutable_format import EncodingParams
    from gateway.objects.upload import ImmutableUploader

    op, nurls_file, path = argv[0], Path(argv[1]), Path(argv[2])
    nurls = json.loads(nurls_file.read_text())
    params = EncodingParams(k=K, happy=HAPPY, n=N)
    outcome: dict[str, Any] = {}

    async def run(reactor: Any) -> None:
        clients = [HttpStorageClient.from_nurl(reactor, nurl) for nurl in nurls]
        try:
            started = time.perf_counter()
            if op == "put":
                uploader = ImmutableUploader(clients, GatewaySecrets.generate(), params)
                with open(path, "rb") as f:
                    cap = await uploader.upload(f)
                outcome["cap"] = cap.to_string()
                outcome["bytes"] = cap.size
            else:
                read_cap = parse(sys.stdin.read().strip())
                assert isinstance(read_cap, ImmutableReadCap)
                total = 0
                with open(path, "wb") as f:
                    reader = ImmutableReader(read_cap, clients)
                    async for piece in reader.iter_range(0, read_cap.size):
                        f.write(piece)
                        total += len(piece)
                outcome["bytes"] = total
            outcome["seconds"] = time.perf_counter() - started
        finally:
            for client in clients:
                await client.close()

    try:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        if e.code not in (0, None) or "seconds" not in outcome:
            return 1
    outcome["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(outcome))
    return 0


# --- measurements --------------------------------------------------------------------


@frozen
class Row:
    """One measured operation."""

    system: str
    op: str
    size: int
    seconds: float
    peak_rss_kib: int | None
    rss_of: str

    @property
    def mb_per_s(self) -> float:
        """Throughput in 10**6 bytes per second."""
        return self.size / self.seconds / 1e6


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def make_source(path: Path, size: int) -> str:
    """A file of ``size`` random bytes; its SHA-256."""
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = os.urandom(min(4 * MiB, left))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


def _vm_hwm_kib(pid: int) -> int | None:
    """A process's peak resident set size (``VmHWM``) in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else None


def _reset_hwm(pid: int) -> None:
    """Reset a process's ``VmHWM`` (Linux ≥ 4.0); harmless where unsupported."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def bench_ours(root: Path, nodes: list[StorageNode], source: Path, digest: str) -> list[Row]:
    """Put and get the source through our object layer in child processes."""
    nurls_file = root / "nurls.json"
    nurls_file.write_text(json.dumps([node.nurl for node in nodes]))
    out = root / "ours-get.out"

    def child(op: str, path: Path, stdin: str = "") -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "_worker", op, str(nurls_file),
             str(path)],
            input=stdin, capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"object-layer {op} failed:\n{proc.stdout}{proc.stderr}")
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    put = child("put", source)
    get = child("get", out, stdin=put["cap"])
    if get["bytes"] != put["bytes"] or _sha256(out) != digest:
        raise RuntimeError("our object layer returned other bytes than were put")
    out.unlink()
    name, rss_of = f"ours {K}/{HAPPY}/{N}", "object-layer process"
    return [
        Row(name, "put", put["bytes"], put["seconds"], put["peak_rss_kib"], rss_of),
        Row(name, "get", get["bytes"], get["seconds"], get["peak_rss_kib"], rss_of),
    ]


def _b32(data: bytes) -> str:
    return base64.b32encode(data).rstrip(b"=").decode("ascii").lower()


def write_tahoe_servers_yaml(client_dir: Path, nodes: list[TahoeStorageNode]) -> None:
    """List the Tahoe storage nodes (FURL and NURL: HTTP storage protocol) in servers.yaml."""
    from storage import wire

    storage = {}
    for node in nodes:
        digest = wire.parse_nurl(node.nurl).spki_digest
        furl = (node.node_dir / "private" / "storage.furl").read_text().strip()
        storage["v0-" + _b32(digest)] = {
            "ann": {
                "nickname": node.nickname,
                "anonymous-storage-FURL": furl,
                "anonymous-storage-NURLs": [node.nurl],
                "permutation-seed-base32": _b32(digest),
            }
        }
    path = client_dir / "private" / "servers.yaml"
    path.write_text(json.dumps({"storage": storage}, indent=2) + "\n")  # JSON is YAML
    path.chmod(0o600)


@contextmanager
def tahoe_client(root: Path, nodes: list[TahoeStorageNode]) -> Iterator[tuple[Path, int]]:
    """A running Tahoe 1.20 client node (3/5/5) connected to ``nodes``: (node dir, pid)."""
    client_dir = root / "tahoe-client"
    web_port = free_port()
    subprocess.run(
        [str(TAHOE), "create-client", f"--webport=tcp:{web_port}:interface=127.0.0.1",
         f"--shares-needed={K}", f"--shares-happy={HAPPY}", f"--shares-total={N}",
         "--nickname=bench-client", str(client_dir)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    write_tahoe_servers_yaml(client_dir, nodes)
    with open(root / "tahoe-client.log", "wb") as log:
        process = subprocess.Popen(
            [str(TAHOE), "run", "--allow-stdin-close", str(client_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the Tahoe client exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the Tahoe client did not connect to its storage nodes")
            try:
                url = f"http://127.0.0.1:{web_port}/?t=json"
                with urllib.request.urlopen(url, timeout=5) as response:
                    page = json.loads(response.read())
                up = [s for s in page["servers"] if s["connection_status"] == "connected"]
                if len(up) == len(nodes):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        yield client_dir, process.pid
    finally:
        stop_pid(process.pid)
        process.wait(timeout=30)


def bench_tahoe(root: Path, nodes: list[TahoeStorageNode], source: Path, digest: str) -> list[Row]:
    """``tahoe put`` and ``tahoe get`` of the source through a Tahoe client node."""
    with tahoe_client(root, nodes) as (client_dir, pid):

        def tahoe(*args: str) -> tuple[str, float]:
            started = time.perf_counter()
            proc = subprocess.run(
                [str(TAHOE), "-d", str(client_dir), *args], capture_output=True, text=True
            )
            elapsed = time.perf_counter() - started
            if proc.returncode != 0:
                raise RuntimeError(f"tahoe {args[0]} failed:\n{proc.stdout}{proc.stderr}")
            return proc.stdout, elapsed

        size = source.stat().st_size
        _reset_hwm(pid)
        out, put_seconds = tahoe("put", str(source))
        put_rss = _vm_hwm_kib(pid)
        cap = out.strip().splitlines()[-1]
        target = root / "tahoe-get.out"
        _reset_hwm(pid)
        _, get_seconds = tahoe("get", cap, str(target))
        get_rss = _vm_hwm_kib(pid)
        if _sha256(target) != digest:
            raise RuntimeError("tahoe get returned other bytes than were put")
        target.unlink()
    name, rss_of = f"tahoe-1.20 {K}/{HAPPY}/{N}", "tahoe client node"
    return [
        Row(name, "put", size, put_seconds, put_rss, rss_of),
        Row(name, "get", size, get_seconds, get_rss, rss_of),
    ]


def table(rows: list[Row], size: int) -> str:
    """The rows as a plain-text table."""
    lines = [
        f"file {size / MiB:g} MiB, {SERVERS} storage nodes, k/happy/n {K}/{HAPPY}/{N}, "
        "HTTPS on 127.0.0.1, MB/s = 10**6 B/s",
        f"{'system':<18} {'op':<4} {'MB/s':>8} {'seconds':>8} {'peak RSS MiB':>12}  rss of",
    ]
    for r in rows:
        rss = f"{r.peak_rss_kib / 1024:.0f}" if r.peak_rss_kib is not None else "?"
        lines.append(
            f"{r.system.split()[0]:<18} {r.op:<4} {r.mb_per_s:>8.1f} {r.seconds:>8.2f} "
            f"{rss:>12}  {r.rss_of}"
        )
    return "\n".join(lines)


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``4096K`` or a plain number of bytes (binary multiples)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMG]?)i?B?", text.strip(), re.I)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    factor = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2).upper()]
    return int(float(match.group(1)) * factor)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=2**30, help="file size (default 1G)")
    p.add_argument("--smoke", action="store_true", help="a 3 MiB file: does it all work?")
    tahoe = p.add_mutually_exclusive_group()
    tahoe.add_argument("--with-tahoe", dest="tahoe", action="store_true", default=None)
    tahoe.add_argument("--no-tahoe", dest="tahoe", action="store_false")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write JSON here")
    args = p.parse_args(argv)
    if args.smoke:
        args.size = 3 * MiB + 1
    if args.tahoe is None:
        args.tahoe = os.access(TAHOE, os.X_OK)
    if args.size <= 0:
        p.error("--size must be positive")
    return args


def _chunks(argv: list[str]) -> int:
    """The ``chunks`` measurement (see the module docstring)."""
    import random
    import statistics

    from twisted.internet import task
    from twisted.internet.defer import Deferred

    from gateway.grid.local import LocalStorageClient
    from gateway.objects.crypto import GatewaySecrets
    from gateway.objects.immutable_format import EncodingParams
    from gateway.objects.store import ObjectStore
    from gateway.threads import reactor_threads
    from storage.disk import DiskBackend
    from storage.server import StorageServer

    p = argparse.ArgumentParser(prog="bench_objects.py chunks")
    p.add_argument("--chunk-sizes", default="256K,512K,1M")
    p.add_argument("--size", type=parse_size, default=256 * MiB)
    p.add_argument("--big", type=parse_size, default=None, help="a synthetic file (e.g. 4G)")
    p.add_argument("--changes", type=int, default=20)
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="bench-chunks-"))

    def synthetic(offset: int, length: int) -> bytes:
        out = bytearray(length)  # zeros with each 4 KiB block's number: no two chunks equal
        for block in range(-(-offset // 4096) * 4096, offset + length, 4096):
            out[block - offset : block - offset + 8] = block.to_bytes(8, "big")[:length]
        return bytes(out[:length])

    async def figures(reactor: Any) -> None:
        # As the gateway runs it: completions' flushes in the reactor's threads.
        server = StorageServer(DiskBackend(root / "storage", reactor_threads(reactor)), reactor)
        grid = [LocalStorageClient(server, nickname="embedded", clock=reactor)]
        source = root / "source"
        make_source(source, args.size)
        fd = os.open(source, os.O_RDONLY)
        for chunk in [parse_size(c) for c in args.chunk_sizes.split(",")]:
            store = ObjectStore(
                lambda: grid,
                GatewaySecrets.generate(),
                EncodingParams(1, 1, 1),
                reactor,
                chunk_size=chunk,
            )
            t0, c0 = time.monotonic(), time.process_time()
            with open(source, "rb") as f:
                await store.upload(f)
            single = time.monotonic() - t0, time.process_time() - c0

            async def from_file(offset: int, length: int) -> bytes:
                return os.pread(fd, length, offset)

            files = [(args.size, from_file)]
            if args.big:
                files.append((args.big, lambda o, n: _ready(synthetic(o, n))))
            for size, read in files:
                t0, c0 = time.monotonic(), time.process_time()
                cap = await store.update_file(None, size, [(0, size)], read)
                new = time.monotonic() - t0, time.process_time() - c0
                rng, cpu, append = random.Random(1), [], []
                for _ in range(args.changes):
                    at = rng.randrange(size // 4096) * 4096
                    c0 = time.process_time()
                    cap = await store.update_file(cap, size, [(at, at + 4096)], read)
                    cpu.append(time.process_time() - c0)
                for _ in range(args.changes):
                    c0 = time.process_time()
                    grown = cap.size + 4096
                    cap = await store.update_file(
                        cap, grown, [], lambda o, n: _ready(synthetic(o, n))
                    )
                    append.append(time.process_time() - c0)
                line = f"chunk {chunk >> 10} KiB, file {size / MiB:.0f} MiB: new"
                if size == args.size:
                    line += (
                        f" {size / new[0] / 1e6:.0f} MB/s ({new[1]:.1f} s CPU) against one"
                        f" object {size / single[0] / 1e6:.0f} MB/s ({single[1]:.1f} s CPU);"
                    )
                else:
                    line += f" {size / new[0] / 1e6:.0f} MB/s;"
                print(
                    f"{line} 4 KiB change CPU median {statistics.median(cpu) * 1e3:.1f} ms"
                    f" (max {max(cpu) * 1e3:.1f}); 4 KiB append CPU median"
                    f" {statistics.median(append) * 1e3:.1f} ms (max {max(append) * 1e3:.1f})",
                    flush=True,
                )
        os.close(fd)

    try:
        task.react(lambda reactor: Deferred.fromCoroutine(figures(reactor)))
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


async def _ready(data: bytes) -> bytes:
    return data


def main(argv: list[str] | None = None) -> int:
    """Start the grids, measure, print the table (and JSON), stop everything."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return _worker(argv[1:])
    if argv[:1] == ["chunks"]:
        return _chunks(argv[1:])
    args = parse_args(argv)
    if args.tahoe and not os.access(TAHOE, os.X_OK):
        print(f"bench_objects: {TAHOE} is missing (misc/test installs it)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
    root = Path(tempfile.mkdtemp(prefix="bench-objects-"))
    rows: list[Row] = []
    servers_rss: dict[str, int | None] = {}
    try:
        source = root / "source"
        digest = make_source(source, args.size)
        with ExitStack() as stack:
            ours = start_our_grid(root / "ours", SERVERS, reserved_space="0")
            stack.callback(stop_all, ours)
            rows += bench_ours(root, list(ours), source, digest)
            servers_rss["ours"] = max((_vm_hwm_kib(n.pid or 0) or 0) for n in ours)
            stop_all(ours)
            if args.tahoe:
                tahoes = start_tahoe_grid(root / "tahoe", SERVERS)
                stack.callback(stop_all, tahoes)
                rows += bench_tahoe(root, tahoes, source, digest)
                servers_rss["tahoe"] = max((_vm_hwm_kib(n.pid or 0) or 0) for n in tahoes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(table(rows, args.size))
    print(
        "storage node peak RSS MiB (max of 5): "
        + ", ".join(f"{k} {v / 1024:.0f}" for k, v in servers_rss.items() if v)
    )
    if args.json is not None:
        report = {
            "size": args.size,
            "servers": SERVERS,
            "encoding": {"k": K, "happy": HAPPY, "n": N},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "date": time.strftime("%Y-%m-%d"),
            "unit": "MB/s (10**6 bytes per second); RSS in KiB",
            "rows": [{**asdict(r), "mb_per_s": r.mb_per_s} for r in rows],
            "storage_node_peak_rss_kib": servers_rss,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
