"""Bounded sessions on a real gateway process (issue #18 item 3): the announced 1024 open
handles per session enforced, sessions and connections per account capped with a clear
message, and a client pipelining WRITEs without reading replies slowed by the SSH window
(the gateway's peak RSS stays low, other sessions are served, the data is intact)."""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from pathlib import Path

import paramiko
import paramiko.sftp
import pytest

from tests.nodes import NodeReaper, gateway, node_pid
from tests.openssh import sftp_batch
from tests.sftp.gateway_node import (  # noqa: F401
    Int64,
    RawSFTP,
    RunningGateway,
    attributes,
    running_gateway,
    start_gateway,
    status_code,
    status_text,
)
from tests.sftp.preauth_helpers import configured, eventually, login

WRITE_CREATE = paramiko.sftp.SFTP_FLAG_WRITE | paramiko.sftp.SFTP_FLAG_CREATE
#: The bytes written by the pipelining client (the test) and measured by hand (1 GiB).
PIPELINED = 256 * 1024 * 1024
BLOCK = 255 * 1024  # the largest WRITE the gateway announces (limits@openssh.com)


def test_the_1025th_handle_is_refused(running_gateway: RunningGateway) -> None:  # noqa: F811
    """1024 handles open in one session (pipelined OPENDIRs and an OPEN); the next OPEN fails
    with FX_FAILURE saying why; once one is closed, an OPEN succeeds again."""
    transport = login(running_gateway)
    try:
        raw = RawSFTP(transport)
        assert struct.unpack("!4Q", raw_limits(raw))[3] == 1024
        first = raw.open("/first.txt", WRITE_CREATE)
        requests = [raw.send(paramiko.sftp.CMD_OPENDIR, "/") for _ in range(1023)]
        handles = []
        for number in requests:
            kind, message = raw.reply(number)
            assert kind == paramiko.sftp.CMD_HANDLE, status_text((kind, message))
            handles.append(message.get_binary())
        refused = status_text(
            raw.call(paramiko.sftp.CMD_OPEN, "/second.txt", WRITE_CREATE, attributes())
        )
        message = "too many open handles: at most 1024 per session; close some first"
        assert refused == f"{paramiko.sftp.SFTP_FAILURE} {message}"
        refused_dir = status_text(raw.call(paramiko.sftp.CMD_OPENDIR, "/"))
        assert refused_dir == f"{paramiko.sftp.SFTP_FAILURE} {message}"
        assert raw.status(paramiko.sftp.CMD_CLOSE, handles[0]) == paramiko.sftp.SFTP_OK
        second = raw.open("/second.txt", WRITE_CREATE)
        for handle in (first, second):
            assert raw.status(paramiko.sftp.CMD_CLOSE, handle) == paramiko.sftp.SFTP_OK
    finally:
        transport.close()


def raw_limits(raw: RawSFTP) -> bytes:
    """The body of the limits@openssh.com reply."""
    kind, message = raw.call(paramiko.sftp.CMD_EXTENDED, "limits@openssh.com")
    assert kind == paramiko.sftp.CMD_EXTENDED_REPLY
    return message.get_remainder()


def test_sessions_and_connections_per_account_are_capped(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """With 2 connections and 3 sessions per account: OpenSSH's sftp is told 'too many
    connections for account alice' on a third connection, a fourth SFTP session is refused
    with 'too many SFTP sessions for account alice' on stderr; closing one makes room."""
    gw = start_gateway(
        tmp_path, reaper,
        configure=configured(max_connections_per_account="2", max_sessions_per_account="3"),
    )  # fmt: skip
    first, second = login(gw), login(gw)
    try:
        third = sftp_batch(gw.host, gw.port, gw.user, gw.password, "ls\n", tmp_path)
        assert third.returncode != 0
        assert "too many connections for account alice" in third.stderr, third.stderr
        sessions = [
            paramiko.SFTPClient.from_transport(first),
            paramiko.SFTPClient.from_transport(first),
            paramiko.SFTPClient.from_transport(second),
        ]
        channel = second.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.invoke_subsystem("sftp")
        eventually(channel.recv_stderr_ready)
        assert b"too many SFTP sessions for account alice" in channel.recv_stderr(4096)
        channel.close()
        closing = sessions.pop()
        assert closing is not None
        closing.close()

        def fourth_session_opens() -> bool:
            try:
                sessions.append(paramiko.SFTPClient.from_transport(second))
            except paramiko.SSHException:
                return False
            return True

        eventually(fourth_session_opens)
        assert sessions[-1] is not None and sessions[-1].listdir("/") == []
    finally:
        first.close()
        second.close()
        stopped = gateway("stop", gw.node_dir)
        assert stopped.code == 0, stopped.err


def block(index: int) -> bytes:
    """Block ``index`` of the pipelined file: its number, then zeros (cheap to make and check)."""
    return struct.pack("!Q", index) + bytes(BLOCK - 8)


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_pipelined_writes_without_reading_replies_are_bounded(
    running_gateway: RunningGateway,  # noqa: F811
) -> None:
    """A client sends 256 MiB of WRITEs without reading a reply: the SSH window slows it, the
    gateway's peak RSS stays under 200 MiB, another session's requests are answered
    meanwhile, and once the client reads its replies and closes, the file is intact."""
    gw = running_gateway
    pid = node_pid(gw.node_dir)
    assert pid is not None
    writer_transport = login(gw)
    other_transport = login(gw)
    try:
        raw = RawSFTP(writer_transport)
        handle = raw.open("/pipelined.bin", WRITE_CREATE)
        count = PIPELINED // BLOCK
        sent: list[int] = []

        def write_all() -> None:
            for index in range(count):
                sent.append(
                    raw.send(paramiko.sftp.CMD_WRITE, handle, Int64(index * BLOCK), block(index))
                )

        writer = threading.Thread(target=write_all, daemon=True)
        other = paramiko.SFTPClient.from_transport(other_transport)
        assert other is not None
        writer.start()
        answered_meanwhile = 0
        slowest = 0.0
        while writer.is_alive():
            started = time.monotonic()
            other.stat("/")
            slowest = max(slowest, time.monotonic() - started)
            answered_meanwhile += 1
        writer.join()
        peak = peak_rss_mib(pid)
        assert len(sent) == count
        assert answered_meanwhile > 10 and slowest < 5, (answered_meanwhile, slowest)
        for number in sent:
            assert status_code(raw.reply(number)) == paramiko.sftp.SFTP_OK
        assert raw.status(paramiko.sftp.CMD_CLOSE, handle) == paramiko.sftp.SFTP_OK
        assert peak < 200, f"peak RSS {peak:.0f} MiB"

        expected, got = hashlib.sha256(), hashlib.sha256()
        for index in range(count):
            expected.update(block(index))
        with other.open("/pipelined.bin", "rb") as f:
            f.prefetch()
            while chunk := f.read(1024 * 1024):
                got.update(chunk)
        assert got.hexdigest() == expected.hexdigest()
    finally:
        writer_transport.close()
        other_transport.close()
