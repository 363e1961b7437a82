"""SFTP end to end: real clients (paramiko, OpenSSH sftp) against a real gateway process."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import paramiko
import pytest

from tests.nodes import NodeReaper, gateway
from tests.openssh import sftp_batch
from tests.sftp.gateway_node import RunningGateway, running_gateway  # noqa: F401


def test_paramiko_round_trip(running_gateway: RunningGateway) -> None:  # noqa: F811
    """Write, list, stat, read back, rename, remove over paramiko; bytes come back exact."""
    transport, sftp = running_gateway.sftp()
    try:
        data = os.urandom(300_000)
        with sftp.open("/hello.bin", "wb") as f:
            f.write(data)
        assert sftp.stat("/hello.bin").st_size == len(data)
        assert sftp.listdir("/") == ["hello.bin"]
        with sftp.open("/hello.bin", "rb") as f:
            assert f.read() == data
        sftp.mkdir("/docs")
        sftp.rename("/hello.bin", "/docs/moved.bin")
        assert sftp.listdir("/") == ["docs"]
        with sftp.open("/docs/moved.bin", "rb") as f:
            assert f.read() == data
        assert stat.S_ISDIR(sftp.stat("/docs").st_mode)
        sftp.remove("/docs/moved.bin")
        sftp.rmdir("/docs")
        assert sftp.listdir("/") == []
    finally:
        transport.close()


def test_files_survive_a_restart(running_gateway: RunningGateway) -> None:  # noqa: F811
    """What a client wrote (and saw acknowledged) is there after the node restarts."""
    transport, sftp = running_gateway.sftp()
    try:
        with sftp.open("/keep.txt", "wb") as f:
            f.write(b"durable\n")
        sftp.utime("/keep.txt", (1_600_000_000, 1_600_000_000))
    finally:
        transport.close()
    assert gateway("stop", running_gateway.node_dir).code == 0
    restarted = gateway("start", running_gateway.node_dir)
    assert restarted.code == 0, restarted.err
    port = int(re.search(r"sftp -P (\d+)", restarted.out).group(1))  # type: ignore[union-attr]
    transport = paramiko.Transport((running_gateway.host, port))
    transport.connect(username=running_gateway.user, password=running_gateway.password)
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    try:
        with sftp.open("/keep.txt", "rb") as f:
            assert f.read() == b"durable\n"
        assert sftp.stat("/keep.txt").st_mtime == 1_600_000_000
    finally:
        transport.close()


def test_wrong_password_is_refused(running_gateway: RunningGateway) -> None:  # noqa: F811
    """A wrong password does not log in."""
    transport = paramiko.Transport((running_gateway.host, running_gateway.port))
    try:
        with pytest.raises(paramiko.AuthenticationException):
            transport.connect(username=running_gateway.user, password="wrong")
    finally:
        transport.close()


def test_openssh_sftp_batch(running_gateway: RunningGateway, tmp_path: Path) -> None:  # noqa: F811
    """OpenSSH's sftp client in batch mode: put, ls, get, rename, rm, mkdir, rmdir."""
    source = tmp_path / "source.dat"
    source.write_bytes(os.urandom(2_000_000))
    commands = (
        "mkdir dir\n"
        f"put {source} dir/file.dat\n"
        "ls -l dir\n"
        f"get dir/file.dat {tmp_path / 'back.dat'}\n"
        "rename dir/file.dat dir/renamed.dat\n"
        "ls dir\n"
        "rm dir/renamed.dat\n"
        "rmdir dir\n"
    )
    gw = running_gateway
    result = sftp_batch(gw.host, gw.port, gw.user, gw.password, commands, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "back.dat").read_bytes() == source.read_bytes()
    assert "file.dat" in result.stdout and "renamed.dat" in result.stdout


def test_default_node_quick_start(tmp_path: Path, reaper: NodeReaper) -> None:
    """`gateway start` with no DIR creates the default node, prints a password once, serves SFTP.

    The connection line names the account it made, and starting again says the
    node runs and repeats that line (exit 0).
    """
    env = {"GATEWAY_DIR": str(tmp_path / "default"), "USER": "quick"}
    reaper.track(tmp_path / "default")
    started = gateway("start", "--sftp-port", "0", "--web-port", "0", env=env)
    assert started.code == 0, started.err
    match = re.search(r"password, shown only this once.*\n\s+(\S+)", started.out)
    assert match, started.out
    password = match.group(1)
    line = re.search(r"^SFTP: sftp -P (\d+) quick@127\.0\.0\.1 .*$", started.out, re.M)
    assert line, started.out
    port = int(line.group(1))
    assert started.out.rstrip().splitlines()[-1] == "Stop it with: gateway stop " + str(
        tmp_path / "default"
    )
    accounts = (tmp_path / "default" / "private" / "accounts.json").read_text()
    assert password not in accounts and "$argon2id$" in accounts
    transport = paramiko.Transport(("127.0.0.1", port))
    try:
        transport.connect(username="quick", password=password)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        with sftp.open("/first.txt", "wb") as f:
            f.write(b"it works\n")
        assert sftp.listdir("/") == ["first.txt"]
    finally:
        transport.close()
    again = gateway("start", env=env)
    assert again.code == 0, again.err
    assert "is already running (pid" in again.out
    assert line.group(0) in again.out.splitlines()
    assert "password" not in again.out
    assert gateway("stop", env=env).code == 0
    log = (tmp_path / "default" / "logs" / "node.log").read_text()
    assert password not in log
