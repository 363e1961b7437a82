#!/usr/bin/env python3
"""Benchmark the gateway's SFTP server side by side with OpenSSH's own sftp-server.

One run on loopback starts an OpenSSH sshd (internal-sftp on a temp directory,
its own config, host key and authorized key under a temp dir) and our gateway
with the embedded default grid, then runs the same workloads against each with
real clients (OpenSSH ``sftp`` in batch mode, paramiko) and prints each
figure's median and its ratio to OpenSSH's. Nothing leaves 127.0.0.1; every
process started is stopped by pid and the temp dir removed.

    .venv/bin/python misc/bench.py [--runs 3] [--json FILE] [--smoke] [--only TEXT]
        [--no-large] [--no-sshfs] [--no-grid] [--no-quiesce] [--with-tahoe] [--inplace [--big 4G]]

Besides the embedded-grid gateway, a full run measures a gateway on a grid of
five of our storage nodes (3/5/5, HTTPS on loopback) for the bulk transfers,
small files and metadata operations ("grid5" column), the latency of CLOSE
after writing 1 GiB and the gateway's peak RSS while writing it, and an sshfs
copy / tar / diff of a ~500-file tree. ``--with-tahoe`` adds Tahoe-LAFS 1.20's
own SFTP frontend on a 5-node 3/5/5 grid of Tahoe storage nodes ("tahoe"
column, see ``misc/bench_tahoe.py``) for the bulk transfers, random reads,
small files and metadata operations, and a "grid5/tahoe" ratio. ``--inplace`` adds the
in-place group of issue #16 (``misc/bench_inplace.py``); ``--only inplace`` runs it alone.
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
from contextlib import ExitStack, contextmanager
from pathlib import Path

import paramiko

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))
# Run as a script this module is __main__; misc/bench_tahoe.py imports it as ``bench`` and must
# get this very module (its Target), not a second copy.
sys.modules.setdefault("bench", sys.modules[__name__])

MiB = 1024 * 1024
SIDE_FIGURES: dict[str, dict[str, list[float]]] = {}
"""Figures a workload measures on the side (e.g. peak RSS while writing), by name and target."""


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
        self.pid: int | None = None  # the server process, when it is ours
        self.staging: Path | None = None  # our gateway's staging directory
        self.env: dict[str, str] | None = None  # the environment of ``sftp`` (None: ours)
        self.web_url: str | None = None  # our gateway's status page

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
            env=self.env,
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
            transport.connect(username=self.user, pkey=paramiko.PKey.from_path(self.key))
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
def gateway_target(
    work: Path, key: Path, name: str = "gateway", storage: list[str] | None = None
) -> Iterator[Target]:
    """Our gateway, one account authorized by the key: the embedded grid, or ``storage`` NURLs
    with 3/5/5 encoding."""
    node = work / name
    gateway = [sys.executable, "-m", "gateway"]
    port = free_port()
    grid: list[str] = []
    for nurl in storage or []:
        grid += ["--storage", nurl]
    if storage:
        grid += ["--shares", "3/5/5"]
    subprocess.run(
        [*gateway, "create", str(node), "--sftp-port", str(port), "--web-port", "0", *grid],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*gateway, "account", "add", str(node), "bench", "--ssh-key", f"{key}.pub"],
        check=True,
        capture_output=True,
    )
    started = subprocess.run(
        [*gateway, "start", str(node)], check=True, capture_output=True, text=True
    )
    try:
        target = Target(name, port, "bench", key, "/")
        web = [w for w in started.stdout.split() if w.startswith("http://")]
        target.web_url = web[0] if web else None
        target.pid = int((node / "node.pid").read_text().split()[0])
        target.staging = node / "staging"
        yield target
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiesce(target: Target, timeout: float = 300.0) -> None:
    """Wait until our server is idle: background uploads of earlier workloads' files (the
    gateway acknowledges a CLOSE before the grid upload) would otherwise be measured as part
    of the next workload (and a download would be served from staging, not the grid).

    Idle means: no staged file left (every upload finished; a staged file is removed once
    its upload is linked) and no CPU used for a quarter of a second."""
    if target.pid is None:
        return
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(target.pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)  # sampling another process's state: nothing to await
        now = _cpu_seconds(target.pid)
        staged = target.staging is not None and any(target.staging.glob("*.staged"))
        if now - before < 0.02 and not staged:
            return
        before = now


def _vm_hwm_kib(pid: int) -> int:
    """A process's peak resident set size (``VmHWM``) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_hwm(pid: int) -> None:
    """Reset a process's ``VmHWM`` to its current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def close_after_large_write(target: Target, work: Path, size: int) -> tuple[float, str]:
    """Write ``size`` bytes with paramiko (pipelined), then time the CLOSE alone.

    For our gateway, the peak RSS of its process during the write is recorded
    as a side figure."""
    block = os.urandom(MiB)
    if target.pid is not None:
        _reset_hwm(target.pid)
    with target.paramiko() as sftp:
        f = sftp.open(f"{target.root}/large-{random.randrange(10**9)}.bin", "wb")
        f.set_pipelined(True)
        for _ in range(size // MiB):
            f.write(block)
        f.flush()
        started = time.perf_counter()
        f.close()
        seconds = time.perf_counter() - started
    if target.pid is not None:
        rss = _vm_hwm_kib(target.pid) / 1024
        name = f"peak RSS writing {size // MiB} MiB"
        SIDE_FIGURES.setdefault(name, {}).setdefault(target.name, []).append(rss)
    return seconds * 1000, "ms"


def make_tree(path: Path, files: int) -> int:
    """A copy of a real source tree: the first ``files`` files of Twisted, sorted; its bytes."""
    import twisted

    source = Path(twisted.__file__).parent
    chosen = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    total = 0
    for p in chosen[:files]:
        dest = path / p.relative_to(source.parent)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
        total += p.stat().st_size
    return total


def sshfs_tree(target: Target, work: Path, files: int) -> tuple[float, str]:
    """Through sshfs: ``cp -r`` a source tree in, ``tar c`` it back out, ``diff -r`` it."""
    tree = work / "tree"
    if not tree.exists():
        make_tree(tree, files)
    with sshfs_mount(target, work / f"mnt-{target.name}") as mount:
        remote = mount / f"tree-{random.randrange(10**9)}"
        started = time.perf_counter()
        subprocess.run(["cp", "-r", str(tree), str(remote)], check=True, timeout=1800)
        subprocess.run(f"tar cf - -C {remote} . > /dev/null", shell=True, check=True, timeout=1800)
        subprocess.run(["diff", "-r", str(tree), str(remote)], check=True, timeout=1800)
        seconds = time.perf_counter() - started
    return files / seconds, "files/s"


@contextmanager
def sshfs_mount(target: Target, mount: Path) -> Iterator[Path]:
    """The target's root mounted with sshfs (run in the foreground, so we hold its pid) at
    ``mount``; unmounted after, and the sshfs process gone."""
    mount.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [
            "sshfs",
            "-f",
            f"{target.user}@127.0.0.1:{target.root}",
            str(mount),
            "-p",
            str(target.port),
            "-o",
            f"IdentityFile={target.key},IdentitiesOnly=yes,StrictHostKeyChecking=no,"
            "UserKnownHostsFile=/dev/null,LogLevel=ERROR",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not os.path.ismount(mount):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target.name}: sshfs did not mount")
            time.sleep(0.05)  # another process's mount: nothing to await but the mount table
        yield mount
    finally:
        if subprocess.run(["fusermount3", "-u", str(mount)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False, timeout=60)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def grid_gateway_target(work: Path, key: Path) -> Iterator[Target]:
    """A gateway on five of our storage nodes (3/5/5), as separate processes on loopback."""
    from tests.grid_e2e.processes import start_our_grid, stop_all

    nodes = start_our_grid(work / "grid5-nodes", 5, reserved_space="0")
    try:
        with gateway_target(work, key, "grid5", [n.nurl for n in nodes]) as target:
            yield target
    finally:
        stop_all(nodes)


LOWER_IS_BETTER = {"ms", "MiB"}


def _ratio(
    medians: dict[str, float], target: str, unit: str, base: str = "openssh"
) -> float | None:
    """How the target compares with ``base``, >1 meaning better (None without both figures)."""
    if not medians.get(target) or not medians.get(base):
        return None
    if unit in LOWER_IS_BETTER:
        return medians[base] / medians[target]
    return medians[target] / medians[base]


def main(argv: list[str] | None = None) -> int:
    """Run every workload on every target; print the table; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run")
    parser.add_argument("--only", metavar="TEXT", help="run only workloads whose name has TEXT")
    parser.add_argument("--no-large", action="store_true", help="skip the 1 GiB write")
    parser.add_argument("--no-sshfs", action="store_true", help="skip the sshfs tree copy")
    parser.add_argument("--no-grid", action="store_true", help="skip the 5-node grid target")
    parser.add_argument(
        "--no-quiesce",
        action="store_true",
        help="do not wait for the gateway to go idle between workloads (as before 2026-11-21)",
    )
    parser.add_argument(
        "--with-tahoe",
        action="store_true",
        help="also measure Tahoe-LAFS 1.20's SFTP frontend on a 5-node 3/5/5 Tahoe grid",
    )
    parser.add_argument("--inplace", action="store_true", help="add the in-place group (#16)")
    parser.add_argument("--big", default="4G", help="the in-place group's big file (4G)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanups on SIGTERM too
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
    names = [w[0] for w in workloads]
    # Which workloads run where (all of them on openssh and gateway): grid5 and Tahoe get the
    # ones the issue sets targets for; Tahoe's 1000-entry listing alone would take ~4 minutes.
    only_on: dict[str, set[str]] = {
        "grid5": {names[0], names[1], names[3], names[5]},
        "tahoe": {names[0], names[1], names[2], names[3], names[5]},
    }
    # The smoke run (a test) keeps to the six workloads above; a full run adds these.
    if not args.smoke and not args.no_large:
        large = 1024 * MiB
        workloads.append(
            (
                f"CLOSE after writing {large // MiB} MiB",
                lambda t, w: close_after_large_write(t, w, large),
            )
        )
    if not args.smoke and not args.no_sshfs and shutil.which("sshfs"):
        workloads.append(("sshfs cp+tar+diff 500 files", lambda t, w: sshfs_tree(t, w, 500)))
    if args.only:
        workloads = [w for w in workloads if args.only in w[0] or w[0].startswith("upload")]
    results: dict[str, dict[str, list[float]]] = {}
    units: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
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
            for _ in range(runs):
                for target in targets:
                    for name, workload in workloads:
                        if target.name in only_on and name not in only_on[target.name]:
                            continue
                        if not args.no_quiesce:
                            quiesce(target)
                        value, unit = workload(target, work)
                        units[name] = unit
                        results.setdefault(name, {}).setdefault(target.name, []).append(value)
    for name, figures in SIDE_FIGURES.items():
        results[name] = figures
        units[name] = "MiB"
    table = report(results, units, [w[0] for w in workloads] + list(SIDE_FIGURES), runs)
    if args.json:
        targets_run = [t for t in ("openssh", "gateway", "grid5", "tahoe") if _measured(results, t)]
        args.json.write_text(
            json.dumps({"runs": runs, "targets": targets_run, "results": table}, indent=1)
        )
    if args.inplace:
        figures = inplace()
        if args.json:
            saved = json.loads(args.json.read_text())
            args.json.write_text(json.dumps({**saved, "inplace": figures}, indent=1))
    return 0


def _measured(results: dict[str, dict[str, list[float]]], target: str) -> bool:
    """Whether any workload has figures for ``target``."""
    return any(target in figures for figures in results.values())


def report(
    results: dict[str, dict[str, list[float]]], units: dict[str, str], order: list[str], runs: int
) -> list[dict[str, object]]:
    """Print the table of medians and ratios; return its rows (for the JSON output).

    Ratios: "ratio" = gateway/openssh, "grid5" = grid5/openssh and "grid5/tahoe" (with
    both grid5 and tahoe figures), each >1 meaning ours is better (for ms: inverted)."""
    columns = [t for t in ("openssh", "gateway", "grid5", "tahoe") if _measured(results, t)]
    ratios = [("ratio", "gateway", "openssh", 8)]  # (label, target, base, column width)
    if "grid5" in columns:
        ratios.append(("grid5", "grid5", "openssh", 7))
        if "tahoe" in columns:
            ratios.append(("grid5/tahoe", "grid5", "tahoe", 13))
    header = f"{'workload':<34}" + "".join(f"{c:>10}" for c in columns)
    header += "".join(f"{label:>{width}}" for label, _, _, width in ratios)
    legend = ", ".join(
        f"{label} = {t}/{b}" if label != f"{t}/{b}" else label for label, t, b, _ in ratios
    )
    print(f"{header}  unit   (median of {runs}; {legend}; for ms the inverse)")
    table: list[dict[str, object]] = []
    for name in order:
        if name not in results:
            continue
        medians = {t: statistics.median(v) for t, v in results[name].items()}
        unit = units[name]
        values = {label: _ratio(medians, t, unit, b) for label, t, b, _ in ratios}
        table.append(
            {
                "workload": name,
                "unit": unit,
                "ratio": values["ratio"],
                "ratio_grid5": values.get("grid5"),
                "ratio_grid5_tahoe": values.get("grid5/tahoe"),
                **medians,
                "runs": results[name],
            }
        )
        cells = "".join(f"{medians[c]:>10.1f}" if c in medians else f"{'-':>10}" for c in columns)
        for label, _, _, width in ratios:
            value = values[label]
            cells += f"{value:>{width - 1}.2f}x" if value is not None else f"{'-':>{width}}"
        print(f"{name:<34}{cells}  {unit}")
    return table


if __name__ == "__main__":
    raise SystemExit(main())
