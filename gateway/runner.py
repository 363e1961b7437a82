"""Running a node process: ``gateway run`` in the foreground, ``gateway start``/``stop`` around it.

``start`` launches ``gateway run DIR --ready-fd N`` as a detached process and
waits on a pipe for one JSON line: either what the node listens on or the one
clear reason it could not start. ``run`` acquires the node's pid-file lock,
starts logging, builds the node's services, starts them in order, reports on
the pipe and runs the reactor until SIGTERM/SIGINT, when the services stop in
reverse order before the process exits 0.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from twisted.internet.defer import Deferred

from gateway.collector import tune_collector
from gateway.config import ConfigError, NodeConfig, load_config
from gateway.fs.descriptors import raise_limit
from gateway.logfile import Scrubber, start_logging
from gateway.nodedir import NodeDir, write_private
from gateway.permissions import UnsafePermissions, check_permissions
from gateway.pidfile import AlreadyRunning, PidFile, running_pid
from gateway.service import Node, StartupError

START_TIMEOUT = 120.0
STOP_MARGIN = 30.0

NodeBuilder = Callable[[Any, NodeDir, NodeConfig, Scrubber], Node]


class _Reporter:
    """Tells whoever launched us whether the node came up (pipe or terminal)."""

    def __init__(self, ready_fd: int | None, out: IO[str], err: IO[str]):
        self._fd = ready_fd
        self._out = out
        self._err = err

    def ready(self, lines: list[str]) -> None:
        if self._fd is None:
            for line in lines:
                print(line, file=self._out, flush=True)
        else:
            self._send({"ok": True, "lines": lines})

    def failed(self, message: str) -> None:
        if self._fd is None:
            print(f"gateway: {message}", file=self._err, flush=True)
        else:
            self._send({"ok": False, "error": message})

    def _send(self, message: dict[str, Any]) -> None:
        assert self._fd is not None
        # Reported once; the pipe is closed, later messages go to the terminal.
        try:
            os.write(self._fd, (json.dumps(message) + "\n").encode())
            os.close(self._fd)
        except OSError:
            pass
        self._fd = None


def run_node(
    node_dir: Path,
    build: NodeBuilder,
    ready_fd: int | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """Run a node in this process until it is told to stop; return the exit code."""
    reporter = _Reporter(ready_fd, out, err)
    nd = NodeDir(node_dir)
    # Whatever the node creates (logs, journals, sockets, staged files) is its user's alone,
    # whatever umask it was started with; files meant to be shared say so with their mode.
    os.umask(0o077)
    try:
        config = load_config(nd.config)
        check_permissions(nd, _configured_secrets(nd, config))
    except (ConfigError, UnsafePermissions) as e:
        reporter.failed(str(e))
        return 1
    pidfile = PidFile(nd.pid_file)
    try:
        pidfile.acquire()
    except AlreadyRunning as e:
        reporter.failed(f"node in {node_dir} is {e}")
        return 1
    try:
        return _run_locked(nd, config, build, reporter, foreground=ready_fd is None)
    finally:
        pidfile.release()


def _configured_secrets(nd: NodeDir, config: NodeConfig) -> list[Path]:
    """Secret files the configuration names outside private/ (held to private/'s rules)."""
    if config.kind != "gateway":
        return []
    passphrase_file: str = config.get("sftp", "host_key_passphrase_file")
    return [nd.root / passphrase_file] if passphrase_file else []


def _run_locked(
    nd: NodeDir, config: NodeConfig, build: NodeBuilder, reporter: _Reporter, foreground: bool
) -> int:
    from twisted.internet import reactor

    tune_collector()
    limits = raise_limit()
    scrubber = Scrubber()
    stream = start_logging(
        nd.log_file,
        config.get("node", "log_level"),
        scrubber,
        foreground,
        max_size=config.get("node", "log_max_size"),
        keep=config.get("node", "log_keep"),
    )
    try:
        node = build(reactor, nd, config, scrubber)
    except (StartupError, ConfigError) as e:
        reporter.failed(str(e))
        return 1
    exit_code = 0
    if limits[1] != limits[0]:
        Node.log.info(
            "open files: soft limit raised from {before} to {now}",
            before=limits[0],
            now=limits[1],
        )

    async def bring_up() -> None:
        nonlocal exit_code
        try:
            await node.start()
        except StartupError as e:
            exit_code = 1
            reporter.failed(str(e))
            reactor.stop()
            return
        Node.log.info("node is up")
        lines = node.announce()
        try:
            write_private(nd.announce_file, "".join(f"{line}\n" for line in lines).encode())
        except OSError as e:
            Node.log.warn("cannot record what the node listens on: {error}", error=e.strerror)
        reporter.ready(lines)

    def shut_down() -> Deferred[None] | None:
        Node.log.info("stopping node")
        return node.stopService() if node.running else None

    reactor.addSystemEventTrigger("before", "shutdown", shut_down)
    reactor.callWhenRunning(lambda: Deferred.fromCoroutine(bring_up()))
    reactor.run()
    nd.announce_file.unlink(missing_ok=True)
    Node.log.info("node stopped")
    stream.close()
    return exit_code


class LaunchError(Exception):
    """``start`` could not bring the node up; the message says why."""


def launch_node(node_dir: Path, timeout: float = START_TIMEOUT) -> list[str]:
    """Start ``gateway run`` detached; return what it listens on once it is up."""
    node_dir = node_dir.absolute()  # the node runs from "/", not from our working directory
    nd = NodeDir(node_dir)
    pid = running_pid(nd.pid_file)
    if pid is not None:
        raise AlreadyRunning(pid)
    nd.logs.mkdir(mode=0o755, exist_ok=True)
    read_end, write_end = os.pipe()
    log_fd = os.open(nd.logs / "process.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(log_fd, "ab") as process_log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", str(node_dir), "--ready-fd", str(write_end)],
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=process_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd="/",
        )
    os.close(write_end)
    try:
        message = _read_report(read_end, timeout)
    finally:
        os.close(read_end)
    if message is None:
        code = proc.poll()
        if code is None:
            proc.terminate()
            raise LaunchError(f"node did not report within {timeout:.0f} s; see {nd.log_file}")
        raise LaunchError(f"node process exited with code {code}; see {nd.logs / 'process.log'}")
    if not message.get("ok"):
        proc.wait(timeout=30)
        raise LaunchError(str(message.get("error", "unknown error")))
    return [str(line) for line in message.get("lines", [])]


def _read_report(fd: int, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    if not data.strip():
        return None
    try:
        message = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def announced(node_dir: Path) -> list[str]:
    """What the running node in ``node_dir`` said it listens on (empty while it starts)."""
    try:
        text = NodeDir(node_dir).announce_file.read_text(encoding="utf-8")
    except OSError:
        return []
    return text.splitlines()


class NotRunning(Exception):
    """``stop`` found no running node."""


def stop_node(node_dir: Path, timeout: float) -> int:
    """Send SIGTERM to the running node and wait until it has exited; return its pid."""
    nd = NodeDir(node_dir)
    pid = running_pid(nd.pid_file)
    if pid is None or pid <= 0:
        raise NotRunning(f"node in {node_dir} is not running")
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise NotRunning(f"node in {node_dir} is not running") from None
    try:
        os.kill(pid, signal.SIGTERM)
        readable, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    if not readable:
        raise TimeoutError(f"node (pid {pid}) did not stop within {timeout:.0f} s")
    return pid
