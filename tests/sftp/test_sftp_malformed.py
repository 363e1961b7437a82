"""Malformed SFTP packets end only the session that sent them; everyone else carries on."""

from __future__ import annotations

import struct
import time

import paramiko
import paramiko.sftp
import pytest

from tests.sftp.gateway_node import RawSFTP, RunningGateway, running_gateway  # noqa: F401

# Each is the body of one SFTP packet (type byte first) that no correct client sends.
MALFORMED = {
    "truncated OPEN": bytes([paramiko.sftp.CMD_OPEN]) + struct.pack("!I", 7) + b"\x00\x00\x00",
    "string longer than the packet": bytes([paramiko.sftp.CMD_STAT])
    + struct.pack("!II", 8, 1_000_000)
    + b"ab",
    "WRITE whose data is longer than its packet": bytes([paramiko.sftp.CMD_WRITE])
    + struct.pack("!II", 11, 1)
    + b"h"
    + struct.pack("!QI", 0, 100)
    + b"only ten b",
    "READ with a short offset": bytes([paramiko.sftp.CMD_READ])
    + struct.pack("!II", 10, 1)
    + b"h"
    + b"\x00\x01",
}


def _raw_packet(channel: paramiko.Channel, body: bytes) -> None:
    channel.sendall(struct.pack("!I", len(body)) + body)


def _session_ended(channel: paramiko.Channel, deadline: float) -> bool:
    """Whether the server closed (or errored) the channel before the deadline."""
    channel.settimeout(0.2)
    while time.monotonic() < deadline:
        if channel.closed or channel.exit_status_ready() or channel.eof_received:
            return True
        try:
            if channel.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_packet_ends_only_that_session(
    running_gateway: RunningGateway,  # noqa: F811
    name: str,
) -> None:
    """The sender's session ends (no reply, no hang); another client's session keeps working
    and the node keeps serving new logins."""
    transport, bystander = running_gateway.sftp()
    try:
        with bystander.open("/before.txt", "wb") as f:
            f.write(b"still here")
        offender = paramiko.Transport((running_gateway.host, running_gateway.port))
        try:
            offender.connect(username=running_gateway.user, password=running_gateway.password)
            raw = RawSFTP(offender)
            _raw_packet(raw.sock, MALFORMED[name])
            assert _session_ended(raw.sock, time.monotonic() + 20), f"{name}: session lived on"
        finally:
            offender.close()
        with bystander.open("/before.txt", "rb") as f:
            assert f.read() == b"still here"
        assert "before.txt" in bystander.listdir("/")
    finally:
        transport.close()
    fresh, client = running_gateway.sftp()
    try:
        assert client.listdir("/") == ["before.txt"]
    finally:
        fresh.close()
