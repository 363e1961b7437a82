#!/usr/bin/env python3
"""Measure a gateway's pre-auth limits and bounded sessions from outside (issue #18, items 1, 3).

Creates a gateway node (embedded grid) in a temporary directory, starts it with
the ``gateway`` command of ``--python`` (with ``PYTHONPATH=--source`` when
given, to measure another checkout), and measures:

- ``idle``: N TCP connections that send only an SSH version line, from
  ``--sources`` loopback addresses; how many were refused at once and how many
  are still open ``--wait`` seconds later, and whether a password login
  worked meanwhile;
- ``audit``: ssh-audit's connection-rate (DHEat) line, or that it has none;
- ``pipelined``: a client sends ``--mib`` MiB of 255 KiB WRITEs without
  reading a reply; the gateway's peak RSS (VmHWM) and how many of another
  session's STATs were answered meanwhile.

    misc/bench_preauth.py idle --wait 125
    misc/bench_preauth.py audit
    misc/bench_preauth.py pipelined --mib 1024
    misc/bench_preauth.py idle --source /tmp/main-src --wait 170   # another checkout
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paramiko
import paramiko.sftp

PASSWORD = "bench password"


class Gateway:
    """A gateway node started for the measurement, stopped at the end."""

    def __init__(self, python: str, source: str | None, settings: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-preauth-"))
        self.env = {**os.environ}
        if source:
            self.env["PYTHONPATH"] = source
        self.python = python
        node = self.dir / "gw"
        self.run("create", node, "--sftp-port", "0", "--web-port", "0")
        self.run("account", "add", node, "alice", "--password-stdin", stdin=PASSWORD + "\n")
        if settings:
            config = node / "node.cfg"
            text = config.read_text().replace("[sftp]\n", "[sftp]\n" + "\n".join(settings) + "\n")
            config.write_text(text)
        started = self.run("start", node)
        match = re.search(r"SFTP: sftp -P (\d+)", started)
        assert match, started
        self.node = node
        self.port = int(match.group(1))
        self.pid = int((node / "node.pid").read_text())

    def run(self, *args: object, stdin: str | None = None) -> str:
        """Run a ``gateway`` command; its output."""
        result = subprocess.run(
            [self.python, "-m", "gateway", *map(str, args)],
            capture_output=True, text=True, input=stdin, env=self.env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    def login(self, source: str = "127.0.0.1") -> paramiko.Transport:
        """A transport logged in as alice from ``source``."""
        sock = socket.create_connection(("127.0.0.1", self.port), 10, (source, 0))
        transport = paramiko.Transport(sock)
        transport.connect(username="alice", password=PASSWORD)
        return transport

    def peak_rss_mib(self) -> float:
        """The gateway process's peak RSS (VmHWM) in MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    def stop(self) -> None:
        """Stop the node and remove its directory."""
        subprocess.run([self.python, "-m", "gateway", "stop", str(self.node)],
                       env=self.env, capture_output=True, timeout=120)  # fmt: skip
        shutil.rmtree(self.dir, ignore_errors=True)


def idle(gw: Gateway, count: int, sources: int, wait: float) -> None:
    """Hold ``count`` connections that sent only a version line; count those left open."""
    held: list[socket.socket] = []
    refused = 0
    try:
        for i in range(count):
            sock = socket.create_connection(
                ("127.0.0.1", gw.port), 10, (f"127.0.1.{1 + i % sources}", 0)
            )
            sock.sendall(b"SSH-2.0-IdleClient\r\n")
            held.append(sock)
        time.sleep(0.5)
        for sock in held:  # refused at once: a line, then closed
            if select.select([sock], [], [], 0)[0] and not drain(sock):
                refused += 1
        try:
            transport = gw.login()
            login = f"worked ({paramiko.SFTPClient.from_transport(transport).listdir('/')})"
            transport.close()
        except Exception as e:
            login = f"failed: {e!r}"
        time.sleep(wait)
        still_open = sum(1 for sock in held if drain(sock))
        print(f"idle: {count} connections from {sources} sources; {refused} refused at once;"
              f" {still_open} still open after {wait:g} s; a password login meanwhile"
              f" {login}")  # fmt: skip
    finally:
        for sock in held:
            sock.close()


def drain(sock: socket.socket) -> bool:
    """Read what is waiting; whether the connection is still open."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if not sock.recv(65536):
                return False
        except OSError:
            return False
    return True


def audit(gw: Gateway) -> None:
    """ssh-audit's connection-rate (DHEat) line."""
    tool = Path(sys.executable).with_name("ssh-audit")
    result = subprocess.run([str(tool), "-n", "-p", str(gw.port), "127.0.0.1"],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if "conns/sec" in line]
    print("audit:", lines[0] if lines else "no connection-rate (DHEat) finding")


def pipelined(gw: Gateway, mib: int) -> None:
    """Pipeline ``mib`` MiB of WRITEs without reading replies; the gateway's peak RSS."""
    block = 255 * 1024
    writer_transport, other_transport = gw.login(), gw.login()
    channel = writer_transport.open_session()
    channel.invoke_subsystem("sftp")
    sftp = paramiko.sftp.BaseSFTP()
    sftp.sock = channel
    message = paramiko.Message()
    message.add_int(3)
    sftp._send_packet(paramiko.sftp.CMD_INIT, message)
    sftp._read_packet()
    open_request = paramiko.Message()
    open_request.add_int(1)
    open_request.add_string("/pipelined.bin")
    open_request.add_int(paramiko.sftp.SFTP_FLAG_WRITE | paramiko.sftp.SFTP_FLAG_CREATE)
    open_request.add_int(0)
    sftp._send_packet(paramiko.sftp.CMD_OPEN, open_request)
    kind, data = sftp._read_packet()
    reply = paramiko.Message(data)
    reply.get_int()
    handle = reply.get_binary()
    count = mib * 1024 * 1024 // block

    def write_all() -> None:
        for index in range(count):
            request = paramiko.Message()
            request.add_int(2 + index)
            request.add_string(handle)
            request.add_int64(index * block)
            request.add_string(struct.pack("!Q", index) + bytes(block - 8))
            sftp._send_packet(paramiko.sftp.CMD_WRITE, request)

    other = paramiko.SFTPClient.from_transport(other_transport)
    writer = threading.Thread(target=write_all)
    started = time.monotonic()
    writer.start()
    stats, slowest = 0, 0.0
    while writer.is_alive():
        t = time.monotonic()
        other.stat("/")
        slowest = max(slowest, time.monotonic() - t)
        stats += 1
    writer.join()
    sent = time.monotonic() - started
    peak = gw.peak_rss_mib()
    for _ in range(count):
        sftp._read_packet()
    print(f"pipelined: {mib} MiB of WRITEs sent in {sent:.1f} s without reading replies; "
          f"gateway peak RSS (VmHWM) {peak:.0f} MiB; another session's STATs answered "
          f"meanwhile: {stats} (slowest {slowest * 1000:.0f} ms)")  # fmt: skip
    writer_transport.close()
    other_transport.close()


def main() -> None:
    """Run one measurement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["idle", "audit", "pipelined"])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--source", help="PYTHONPATH for the gateway (another checkout)")
    parser.add_argument("--set", action="append", default=[], help="an [sftp] line of node.cfg")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--wait", type=float, default=125)
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    gw = Gateway(args.python, args.source, args.set)
    try:
        if args.what == "idle":
            idle(gw, args.count, args.sources, args.wait)
        elif args.what == "audit":
            audit(gw)
        else:
            pipelined(gw, args.mib)
    finally:
        gw.stop()


if __name__ == "__main__":
    main()
