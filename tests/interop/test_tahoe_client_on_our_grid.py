"""An unmodified Tahoe-LAFS 1.20 client node keeps its files on four of OUR storage nodes.

Everything runs as real processes on loopback: four ``gateway`` storage nodes
and one ``tahoe`` client node (no storage of its own, shares 2-of-4, happy 3)
whose ``private/servers.yaml`` lists our NURLs, so it speaks Tahoe's HTTP
storage protocol to them. The test drives it only with ``tahoe`` CLI commands,
then SIGKILLs one storage node and reads everything again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest

from storage.server import StorageServer
from tests.interop.tahoe_static import write_servers_yaml
from tests.nodes import NodeReaper, gateway, node_pid, process_gone
from tests.tahoe import REQUIRES_TAHOE, TAHOE

SERVERS = 4
NEEDED, HAPPY, TOTAL = 2, 3, 4  # any 2 of 4 shares rebuild a file: one dead server is fine
CONNECT_TIMEOUT = 60.0

pytestmark = REQUIRES_TAHOE


def _our_version() -> str:
    """The application-version our storage nodes announce (Tahoe shows it per server)."""
    default = attrs.fields(StorageServer).application_version.default
    assert isinstance(default, bytes)
    return default.decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class TahoeClient:
    """A client-only Tahoe-LAFS 1.20 node run as a child process, driven by ``tahoe`` commands."""

    def __init__(self, node_dir: Path, nurls: dict[str, str]) -> None:
        self.node_dir = node_dir
        self.web_port = _free_port()
        self._run(
            "create-client",
            f"--webport=tcp:{self.web_port}:interface=127.0.0.1",
            f"--shares-needed={NEEDED}",
            f"--shares-happy={HAPPY}",
            f"--shares-total={TOTAL}",
            "--nickname=interop-client",
            str(node_dir),
            node=False,
        )
        write_servers_yaml(node_dir, nurls)
        self.process: subprocess.Popen[bytes] | None = None
        self._log = open(node_dir.parent / "tahoe-client.log", "wb")

    def _run(self, *args: str, node: bool = True, timeout: float = 120) -> str:
        argv = [str(TAHOE), *(("-d", str(self.node_dir)) if node else ()), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def tahoe(self, *args: str) -> str:
        """Run ``tahoe -d NODEDIR ARGS`` and return its stdout (fails the test on error)."""
        return self._run(*args)

    def start(self) -> None:
        """``tahoe run`` in the background; returns once the web API answers."""
        self.process = subprocess.Popen(
            [str(TAHOE), "run", "--allow-stdin-close", str(self.node_dir)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.welcome() is not None, CONNECT_TIMEOUT, "the Tahoe web API")

    def welcome(self) -> dict | None:
        """The welcome page's JSON (``/?t=json``), or None while the node is not up."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"tahoe run exited with {self.process.returncode}")
        try:
            url = f"http://127.0.0.1:{self.web_port}/?t=json"
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            return None

    def connected(self) -> set[str]:
        """Nicknames of the storage servers the client currently calls connected."""
        page = self.welcome() or {"servers": []}
        return {s["nickname"] for s in page["servers"] if s["connection_status"] == "connected"}

    def stop(self) -> None:
        """Terminate the node by its pid (SIGKILL if it lingers)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
        self._log.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A private temporary directory, removed at teardown (after the nodes are killed)."""
    root = Path(tempfile.mkdtemp(prefix="tahoe-on-our-grid-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def storage_nodes(workdir: Path, reaper: NodeReaper) -> dict[str, Path]:
    """Four of our storage nodes started as processes on loopback: ``{nickname: node_dir}``."""

    def start(name: str) -> Path:
        node_dir = reaper.track(workdir / name)
        created = gateway("create-storage", node_dir, "--nickname", name, "--reserved-space", "10M")
        assert created.code == 0, created.err
        started = gateway("start", node_dir)
        assert started.code == 0, started.err
        return node_dir

    names = [f"ours-{i}" for i in range(SERVERS)]
    with ThreadPoolExecutor(SERVERS) as pool:
        dirs = list(pool.map(start, names))
    return dict(zip(names, dirs, strict=True))


@pytest.fixture
def tahoe_client(workdir: Path, storage_nodes: dict[str, Path]) -> Iterator[TahoeClient]:
    """A running Tahoe client node whose servers.yaml lists our four NURLs, all connected."""
    nurls = {
        name: (d / "private" / "nurl").read_text().strip() for name, d in storage_nodes.items()
    }
    client = TahoeClient(workdir / "tahoe-client", nurls)
    try:
        client.start()
        wait_for(
            lambda: client.connected() == set(nurls),
            CONNECT_TIMEOUT,
            "the Tahoe client to connect to all four storage nodes",
        )
        yield client
    finally:
        client.stop()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tahoe_client_on_our_storage_nodes(
    tahoe_client: TahoeClient, storage_nodes: dict[str, Path], workdir: Path
) -> None:
    """Tahoe puts/gets files (0 B-20 MiB) and directories on our nodes; one SIGKILL is survived."""
    t = tahoe_client.tahoe
    servers = (tahoe_client.welcome() or {}).get("servers", [])
    assert {s["nickname"]: s["version"] for s in servers} == dict.fromkeys(
        storage_nodes, _our_version()
    ), "Tahoe should see our storage nodes' version answers (HTTP storage protocol)"
    t("create-alias", "grid")

    # Immutable files: tahoe put to an unlinked cap and into the alias, byte-exact get.
    sources = workdir / "src"
    sources.mkdir()
    expected: dict[str, str] = {}  # tahoe path or cap -> sha256 of its contents
    for label, size in [("0B", 0), ("1KiB", 1024), ("1MiB", 2**20), ("20MiB", 20 * 2**20)]:
        src = sources / label
        src.write_bytes(os.urandom(size))
        cap = t("put", str(src)).strip().splitlines()[-1]
        assert cap.startswith("URI:"), cap
        t("put", str(src), f"grid:{label}")
        expected[cap] = expected[f"grid:{label}"] = _sha256(src)

    # Mutable directories: mkdir, nested mkdir, a file written into each, listings.
    t("mkdir", "grid:docs")
    t("mkdir", "grid:docs/deeper")
    note = sources / "note.txt"
    note.write_bytes(b"written into a Tahoe directory on our storage nodes\n" + os.urandom(5000))
    t("put", str(note), "grid:docs/note.txt")
    t("put", str(sources / "1KiB"), "grid:docs/deeper/small.bin")
    expected["grid:docs/note.txt"] = _sha256(note)
    expected["grid:docs/deeper/small.bin"] = expected["grid:1KiB"]
    unlinked_dir = t("mkdir").strip().splitlines()[-1]
    assert unlinked_dir.startswith("URI:DIR2:"), unlinked_dir
    t("put", str(note), f"{unlinked_dir}/again.txt")
    expected[f"{unlinked_dir}/again.txt"] = expected["grid:docs/note.txt"]
    listings = {
        "grid:": {"0B", "1KiB", "1MiB", "20MiB", "docs"},
        "grid:docs": {"deeper", "note.txt"},
        "grid:docs/deeper": {"small.bin"},
        unlinked_dir: {"again.txt"},
    }

    def check_everything(stage: str) -> None:
        for where, names in listings.items():
            assert set(t("ls", where).split()) == names, f"{stage}: ls {where}"
        out = workdir / "out"
        for where, digest in expected.items():
            out.unlink(missing_ok=True)
            t("get", where, str(out))
            assert _sha256(out) == digest, f"{stage}: tahoe get {where} differs"

    check_everything("all servers up")

    # Shares really are on our nodes: every node holds some.
    for name, node_dir in storage_nodes.items():
        assert any(p.is_file() for p in (node_dir / "storage").rglob("*")), name

    # SIGKILL one storage node by pid; everything stays readable byte-exact.
    victim = storage_nodes["ours-1"]
    pid = node_pid(victim)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), 10, "the killed storage node to exit")
    check_everything("one storage node killed")
    wait_for(
        lambda: tahoe_client.connected() == set(storage_nodes) - {"ours-1"},
        CONNECT_TIMEOUT,
        "the Tahoe client to notice the killed storage node",
    )

    # No storage node ever logs its swissnum (the secret part of its NURL).
    for name, node_dir in storage_nodes.items():
        swissnum = (node_dir / "private" / "swissnum").read_text().strip()
        logs = [p for p in (node_dir / "logs").rglob("*") if p.is_file()]
        assert logs, f"{name} wrote no logs"
        for log in logs:
            assert swissnum not in log.read_text(errors="replace"), f"{name}: {log}"
