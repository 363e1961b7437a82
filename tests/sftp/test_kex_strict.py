"""Strict key exchange and the per-client offer, seen on the wire of a real gateway process,
and paramiko (which asks for strict kex unless told not to) against it.

The wire tests speak the unencrypted start of SSH themselves: a version line
and KEXINIT packets built here, as a client that does or does not list
``kex-strict-c-v00@openssh.com`` would send them.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from gateway.sftp.ssh import CIPHERS, MACS, STRICT_KEX_CIPHERS
from tests.sftp.gateway_node import RunningGateway, shared_gateway  # noqa: F401

OPENSSH_KEX = b"curve25519-sha256,ext-info-c"
OPENSSH_CIPHERS = b"chacha20-poly1305@openssh.com,aes128-ctr,aes256-gcm@openssh.com"
OPENSSH_MACS = b"umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-256"
MSG_DISCONNECT, MSG_IGNORE, MSG_SERVICE_REQUEST, MSG_KEXINIT = 1, 2, 5, 20


def ns(data: bytes) -> bytes:
    """An SSH string."""
    return struct.pack(">L", len(data)) + data


def kexinit(strict: bool) -> bytes:
    """A client KEXINIT payload with OpenSSH-like lists, asking for strict kex or not."""
    kex = OPENSSH_KEX + (b",kex-strict-c-v00@openssh.com" if strict else b"")
    lists = [kex, b"ssh-ed25519", OPENSSH_CIPHERS, OPENSSH_CIPHERS, OPENSSH_MACS, OPENSSH_MACS]
    return (
        bytes((MSG_KEXINIT,))
        + os.urandom(16)
        + b"".join(ns(item) for item in lists)
        + ns(b"none") * 2
        + ns(b"") * 2
        + b"\0\0\0\0\0"
    )


class PlainWire:
    """The unencrypted first packets of an SSH connection, from the client's side."""

    def __init__(self, gw: RunningGateway) -> None:
        self.sock = socket.create_connection((gw.host, gw.port), timeout=15)
        self.sock.sendall(b"SSH-2.0-WireTest_1.0\r\n")
        line = b""
        while not line.endswith(b"\n"):
            line += self.sock.recv(1)
        assert line.startswith(b"SSH-2.0-Gateway")

    def send(self, payload: bytes) -> None:
        """Send one packet without encryption or MAC."""
        pad = 8 - (5 + len(payload)) % 8
        pad += 8 if pad < 4 else 0
        self.sock.sendall(struct.pack(">LB", 1 + len(payload) + pad, pad) + payload + bytes(pad))

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            more = self.sock.recv(count - len(data))
            if not more:
                raise EOFError(f"connection closed after {len(data)} of {count} bytes")
            data += more
        return data

    def receive(self) -> bytes:
        """The payload of the next packet from the server."""
        (length,) = struct.unpack(">L", self._read(4))
        body = self._read(length)
        return body[1 : length - body[0]]

    def disconnect_reason(self) -> str:
        """The next packet must be a DISCONNECT, and then the connection closes: its text."""
        payload = self.receive()
        assert payload[0] == MSG_DISCONNECT, payload[:1]
        (length,) = struct.unpack_from(">L", payload, 5)
        with pytest.raises(EOFError):
            self.receive()
        return payload[9 : 9 + length].decode()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


@pytest.fixture
def wire(shared_gateway: RunningGateway) -> Iterator[PlainWire]:  # noqa: F811
    """A connection to the shared gateway that has exchanged version lines."""
    connection = PlainWire(shared_gateway)
    yield connection
    connection.close()


def offered(kexinit_payload: bytes) -> dict[str, list[bytes]]:
    """The server KEXINIT's name-lists by name."""
    assert kexinit_payload[0] == MSG_KEXINIT
    at, lists = 17, []
    for _ in range(10):
        (length,) = struct.unpack_from(">L", kexinit_payload, at)
        lists.append(kexinit_payload[at + 4 : at + 4 + length].split(b","))
        at += 4 + length
    names = ["kex", "host key", "ciphers c2s", "ciphers s2c", "macs c2s", "macs s2c"]
    return dict(zip(names, lists, strict=False))


def test_a_strict_client_is_offered_chacha20_poly1305(wire: PlainWire) -> None:
    """Asking for strict kex, a client is offered chacha20-poly1305 first, then AES-GCM and
    AES-CTR, the -etm MACs, and the server's strict-kex marker."""
    wire.send(kexinit(strict=True))
    lists = offered(wire.receive())
    assert lists["ciphers c2s"] == lists["ciphers s2c"] == STRICT_KEX_CIPHERS
    assert lists["ciphers c2s"][0] == b"chacha20-poly1305@openssh.com"
    assert lists["macs c2s"] == lists["macs s2c"] == MACS
    assert b"kex-strict-s-v00@openssh.com" in lists["kex"]


def test_a_client_without_strict_kex_is_not_offered_chacha20_poly1305(wire: PlainWire) -> None:
    """Without strict kex, chacha20-poly1305 (what Terrapin breaks) is left out."""
    wire.send(kexinit(strict=False))
    lists = offered(wire.receive())
    assert lists["ciphers c2s"] == lists["ciphers s2c"] == CIPHERS
    assert b"chacha20-poly1305@openssh.com" not in lists["ciphers c2s"]
    assert lists["macs c2s"] == MACS


def test_a_client_that_waits_gets_the_servers_kexinit(wire: PlainWire) -> None:
    """A client that waits for the server's KEXINIT gets it (with the plain offer) after a
    short wait."""
    started = time.monotonic()
    lists = offered(wire.receive())
    assert 1 < time.monotonic() - started < 10
    assert lists["ciphers c2s"] == CIPHERS


def test_strict_kex_kexinit_must_come_first(wire: PlainWire) -> None:
    """With strict kex, an IGNORE before the client's KEXINIT ends the connection."""
    wire.send(bytes((MSG_IGNORE,)) + ns(b"hello"))
    wire.send(kexinit(strict=True))
    assert wire.disconnect_reason() == "KEXINIT was not the first packet"


def test_strict_kex_refuses_other_messages_during_the_key_exchange(wire: PlainWire) -> None:
    """With strict kex, an IGNORE (otherwise valid at any time) during the key exchange ends
    the connection."""
    wire.send(kexinit(strict=True))
    assert wire.receive()[0] == MSG_KEXINIT
    wire.send(bytes((MSG_IGNORE,)) + ns(b"hello"))
    assert wire.disconnect_reason() == "message 2 during the key exchange"


def test_without_strict_kex_no_service_before_keys(wire: PlainWire) -> None:
    """Without strict kex, IGNORE is fine but a service request in clear ends the connection."""
    wire.send(bytes((MSG_IGNORE,)) + ns(b"hello"))
    wire.send(kexinit(strict=False))
    assert wire.receive()[0] == MSG_KEXINIT
    wire.send(bytes((MSG_SERVICE_REQUEST,)) + ns(b"ssh-userauth"))
    assert wire.disconnect_reason() == "message 5 during the key exchange"


def test_no_key_exchange_message_before_kexinit(wire: PlainWire) -> None:
    """A key exchange method's message before the client's KEXINIT ends the connection."""
    wire.send(bytes((30,)) + ns(b"\x01" * 32))
    assert wire.disconnect_reason() == "message 30 during the key exchange"


def paramiko_session(
    gw: RunningGateway, *, strict_kex: bool = True, disabled: dict[str, list[str]] | None = None
) -> paramiko.Transport:
    """A logged-in paramiko transport."""
    sock = socket.create_connection((gw.host, gw.port), timeout=20)
    transport = paramiko.Transport(sock, disabled_algorithms=disabled, strict_kex=strict_kex)
    transport.connect(username=gw.user, password=gw.password)
    return transport


def round_trip(transport: paramiko.Transport, tmp_path: Path, name: str) -> None:
    """Put and get back 1 MB over SFTP, byte-exact."""
    data = os.urandom(1_000_000)
    (tmp_path / name).write_bytes(data)
    client = paramiko.SFTPClient.from_transport(transport)
    assert client is not None
    client.put(str(tmp_path / name), name)
    client.get(name, str(tmp_path / f"{name}.back"))
    assert (tmp_path / f"{name}.back").read_bytes() == data


@pytest.mark.parametrize(
    ("cipher", "mac"),
    [
        ("aes128-gcm@openssh.com", None),
        ("aes256-gcm@openssh.com", None),
        ("aes128-ctr", "hmac-sha2-256-etm@openssh.com"),
        ("aes256-ctr", "hmac-sha2-512-etm@openssh.com"),
    ],
)
def test_paramiko_with_strict_kex(
    shared_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
    cipher: str,
    mac: str | None,
) -> None:
    """paramiko agrees on strict kex and each AES-GCM cipher and -etm MAC it implements."""
    ciphers = [c for c in paramiko.Transport._preferred_ciphers if c != cipher]
    macs = [m for m in paramiko.Transport._preferred_macs if m != mac] if mac else []
    transport = paramiko_session(shared_gateway, disabled={"ciphers": ciphers, "macs": macs})
    try:
        assert transport.agreed_on_strict_kex
        assert transport.remote_cipher == transport.local_cipher == cipher
        if mac:
            assert transport.remote_mac == transport.local_mac == mac
        round_trip(transport, tmp_path, f"paramiko-{cipher}")
    finally:
        transport.close()


def test_paramiko_without_strict_kex(
    shared_gateway: RunningGateway,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A client that does not ask for strict kex connects (AES-CTR with an -etm MAC when it
    has no AES-GCM) and works."""
    gcm = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"]
    transport = paramiko_session(shared_gateway, strict_kex=False, disabled={"ciphers": gcm})
    try:
        assert not transport.agreed_on_strict_kex
        assert transport.remote_cipher in ("aes128-ctr", "aes256-ctr")
        assert transport.remote_mac.endswith("-etm@openssh.com")
        round_trip(transport, tmp_path, "paramiko-plain")
    finally:
        transport.close()
