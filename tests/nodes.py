"""Running the real ``gateway`` command in subprocesses, and cleaning up every node started."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest


@attrs.frozen
class Result:
    """What a finished ``gateway`` command printed and returned."""

    code: int
    out: str
    err: str


def gateway(
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: str | None = None,
    umask: int = -1,
    open_files: int | None = None,
) -> Result:
    """Run ``python -m gateway ARGS`` to completion (with ``umask``, when given; with
    ``open_files`` as its soft and hard descriptor limits, which a started node keeps)."""

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        env={**os.environ, **(env or {})},
        umask=umask,
        preexec_fn=limit if open_files is not None else None,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def node_pid(node_dir: Path) -> int | None:
    """The pid written in a node directory's pid file, if any."""
    try:
        text = (node_dir / "node.pid").read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def process_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie not yet reaped by init counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


class NodeReaper:
    """Remembers node directories a test started and kills what is still running at teardown."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.pids: list[int] = []

    def track(self, node_dir: Path) -> Path:
        self.dirs.append(node_dir)
        return node_dir

    def track_pid(self, pid: int) -> None:
        self.pids.append(pid)

    def reap(self) -> None:
        pids = [p for p in (node_pid(d) for d in self.dirs) if p] + self.pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def reaper() -> Iterator[NodeReaper]:
    """Kill (by pid) every node a test started and left running."""
    r = NodeReaper()
    yield r
    r.reap()
