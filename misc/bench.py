#!/usr/bin/env python3
"""Benchmark the gateway's SFTP server side by side with OpenSSH's own sftp-server.

One run on loopback starts an OpenSSH sshd (internal-sftp on a temp directory,
its own config, host key and authorized key under a temp dir) and our gateway
with the embedded default grid, then runs the same workloads against each with
real clients (OpenSSH ``sftp`` in batch mode, paramiko) and prints each
figure's median and its ratio to OpenSSH's. Nothing leaves 127.0.0.1; every
process started is stopped by pid and the temp dir removed.

    .venv/bin/python misc/bench.py [--runs 3] [--json FILE] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko

MiB = 1024 * 1024


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Target:
    """An SFTP server under test: where it listens and how to log in."""

    def __init__(self, name: str, port: int, user: str, key: Path, root: str):
        self.name = name
        self.port = port
        self.user = user
        self.key = key
        self.root = root  # remote directory the workloads use

    def batch(self, commands: str, work: Path) -> float:
        """Run an OpenSSH ``sftp -b`` batch; return its wall time in seconds."""
        script = work / "batch.txt"
        script.write_text(commands)
        started = time.perf_counter()
        result = subprocess.run(
            [
                "sftp",
                "-q",
                "-b",
                str(script),
                "-P",
                str(self.port),
                "-i",
                str(self.key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                f"{self.user}@127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{self.name}: sftp batch failed: {result.stderr.strip()[:500]}")
        return elapsed

    @contextmanager
    def paramiko(self) -> Iterator[paramiko.SFTPClient]:
        """A paramiko SFTP session authenticated with the key."""
        transport = paramiko.Transport(("127.0.0.1", self.port))
        try:
            transport.connect(
                username=self.user, pkey=paramiko.Ed25519Key.from_private_key_file(str(self.key))
            )
            client = paramiko.SFTPClient.from_transport(transport)
            assert client is not None
            yield client
        finally:
            transport.close()


@contextmanager
def openssh_target(work: Path, key: Path) -> Iterator[Target]:
    """sshd with internal-sftp, chrooted by ``-d`` to a temp directory."""
    home = work / "openssh-root"
    home.mkdir()
    host_key = work / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = work / "authorized_keys"
    shutil.copy(f"{key}.pub", authorized)
    authorized.chmod(0o600)
    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        f"StrictModes no\nPidFile {work / 'sshd.pid'}\n"
        f"Subsystem sftp internal-sftp -d {home}\nForceCommand internal-sftp -d {home}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "sshd.log", "w"),
    )
    try:
        _wait_for_port(port, proc)
        yield Target("openssh", port, os.environ.get("USER") or "root", key, str(home))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@contextmanager
def gateway_target(work: Path, key: Path, name: str = "gateway") -> Iterator[Target]:
    """Our gateway with the embedded grid, one account authorized by the key."""
    node = work / name
    gateway = [sys.executable, "-m", "gateway"]
    port = free_port()
    subprocess.run(
        [*gateway, "create", str(node), "--sftp-port", str(port), "--web-port", "0"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*gateway, "account", "add", str(node), "bench", "--ssh-key", f"{key}.pub"],
        check=True,
        capture_output=True,
    )
    subprocess.run([*gateway, "start", str(node)], check=True, capture_output=True)
    try:
        yield Target(name, port, "bench", key, "/")
    finally:
        stopped = subprocess.run([*gateway, "stop", str(node)], capture_output=True)
        if stopped.returncode not in (0, 3):
            pid = (node / "node.pid").read_text().strip()
            os.kill(int(pid), signal.SIGKILL)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("sshd exited; see its log")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # an external daemon: nothing to await but the port
    raise RuntimeError("sshd did not start listening")


# --- workloads: each returns (value, unit), higher is better ---------------------------


def upload(target: Target, work: Path, size: int) -> tuple[float, str]:
    """One big file up with ``put``."""
    source = work / "big.bin"
    if not source.exists() or source.stat().st_size != size:
        source.write_bytes(os.urandom(size))
    seconds = target.batch(f"put {source} {target.root}/big.bin\n", work)
    return size / seconds / 1e6, "MB/s"


def download(target: Target, work: Path, size: int) -> tuple[float, str]:
    """The same file down with ``get`` (after ``upload``)."""
    seconds = target.batch(f"get {target.root}/big.bin {work / 'back.bin'}\n", work)
    if (work / "back.bin").read_bytes() != (work / "big.bin").read_bytes():
        raise RuntimeError(f"{target.name}: downloaded bytes differ")
    return size / seconds / 1e6, "MB/s"


def small_files(target: Target, work: Path, count: int) -> tuple[float, str]:
    """``count`` files of 16 KiB in one session."""
    source = work / "small.bin"
    source.write_bytes(os.urandom(16 * 1024))
    directory = f"{target.root}/small-{random.randrange(10**9)}"
    commands = f"mkdir {directory}\n" + "".join(
        f"put {source} {directory}/f{i}\n" for i in range(count)
    )
    seconds = target.batch(commands, work)
    return count / seconds, "files/s"


def list_many(target: Target, work: Path, count: int) -> tuple[float, str]:
    """Create ``count`` empty files, then time ``ls -l`` of the directory."""
    directory = f"{target.root}/many-{random.randrange(10**9)}"
    empty = work / "empty"
    empty.write_bytes(b"")
    target.batch(
        f"mkdir {directory}\n" + "".join(f"put {empty} {directory}/e{i}\n" for i in range(count)),
        work,
    )
    seconds = target.batch(f"ls -l {directory}\n", work)
    return count / seconds, "entries/s"


def metadata_ops(target: Target, work: Path, cycles: int) -> tuple[float, str]:
    """mkdir + rename + rmdir cycles."""
    base = f"{target.root}/meta-{random.randrange(10**9)}"
    commands = "".join(
        f"mkdir {base}-{i}\nrename {base}-{i} {base}-{i}-r\nrmdir {base}-{i}-r\n"
        for i in range(cycles)
    )
    seconds = target.batch(commands, work)
    return 3 * cycles / seconds, "ops/s"


def random_reads(target: Target, work: Path, count: int) -> tuple[float, str]:
    """``count`` random 4 KiB reads of the big file with paramiko."""
    size = (work / "big.bin").stat().st_size
    rng = random.Random(1)
    with target.paramiko() as sftp, sftp.open(f"{target.root}/big.bin", "rb") as f:
        started = time.perf_counter()
        for _ in range(count):
            f.seek(rng.randrange(0, max(1, size - 4096)))
            f.read(4096)
        seconds = time.perf_counter() - started
    return count / seconds, "reads/s"


def main(argv: list[str] | None = None) -> int:
    """Run every workload on every target; print the table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--only", metavar="TEXT", help="run only workloads whose name has TEXT")
    args = parser.parse_args(argv)
    runs = 1 if args.smoke else args.runs
    big = 1 * MiB if args.smoke else 64 * MiB
    n_small, n_list, n_meta, n_reads = (5, 10, 3, 20) if args.smoke else (200, 1000, 50, 500)
    workloads: list[tuple[str, Callable[[Target, Path], tuple[float, str]]]] = [
        (f"upload {big // MiB} MiB", lambda t, w: upload(t, w, big)),
        (f"download {big // MiB} MiB", lambda t, w: download(t, w, big)),
        (f"random 4 KiB reads x{n_reads}", lambda t, w: random_reads(t, w, n_reads)),
        (f"{n_small} x 16 KiB files", lambda t, w: small_files(t, w, n_small)),
        (f"ls -l of {n_list} entries", lambda t, w: list_many(t, w, n_list)),
        (f"mkdir+rename+rmdir x{n_meta}", lambda t, w: metadata_ops(t, w, n_meta)),
    ]
    if args.only:
        workloads = [w for w in workloads if args.only in w[0] or w[0].startswith("upload")]
    results: dict[str, dict[str, list[float]]] = {}
    units: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        key = work / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        with openssh_target(work, key) as openssh, gateway_target(work, key) as ours:
            for _ in range(runs):
                for target in (openssh, ours):
                    for name, workload in workloads:
                        value, unit = workload(target, work)
                        units[name] = unit
                        results.setdefault(name, {}).setdefault(target.name, []).append(value)
    print(
        f"{'workload':<32} {'openssh':>12} {'gateway':>12} {'ratio':>7}  unit   (median of {runs})"
    )
    table = []
    for name, _ in workloads:
        medians = {t: statistics.median(v) for t, v in results[name].items()}
        ratio = medians["gateway"] / medians["openssh"] if medians["openssh"] else 0.0
        table.append(
            {
                "workload": name,
                "unit": units[name],
                "ratio": ratio,
                **medians,
                "runs": results[name],
            }
        )
        print(
            f"{name:<32} {medians['openssh']:>12.1f} {medians['gateway']:>12.1f} "
            f"{ratio:>6.2f}x  {units[name]}"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "results": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
