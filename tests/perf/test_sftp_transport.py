"""The SFTP packet splitter, WRITE/READ parsing and the session channel's window and queue."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.filetransfer import FXP_INIT, FXP_VERSION

from gateway.sftp.avatar import SESSION_MAX_PACKET, SESSION_WINDOW, _SFTPOnlySession
from gateway.sftp.packets import PacketSplitter
from gateway.sftp.protocol import GatewayFileTransferServer
from tests.sftp.test_sftp_conch import connected, packet

packets = st.lists(
    st.tuples(st.integers(0, 255), st.binary(min_size=4, max_size=300)), min_size=1, max_size=20
)


def split_packets(splitter: PacketSplitter, data: bytes) -> list[tuple[int, bytes]]:
    """:meth:`PacketSplitter.feed` with each body copied out as ``bytes``."""
    return [(kind, body.tobytes()) for kind, body in splitter.feed(data)]


def wire(items: list[tuple[int, bytes]]) -> bytes:
    """The SFTP framing of (type, body) pairs."""
    return b"".join(struct.pack("!LB", len(body) + 1, kind) + body for kind, body in items)


@given(items=packets, cuts=st.lists(st.integers(0, 10_000), max_size=40))
def test_any_fragmentation_gives_the_same_packets(
    items: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    """However the stream is cut into reads, the same packets come out, in order."""
    stream = wire(items)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    splitter = PacketSplitter()
    out: list[tuple[int, bytes]] = []
    for start, end in zip(points, points[1:], strict=False):
        out += split_packets(splitter, stream[start:end])
    assert out == items
    assert splitter.buffered == 0


@given(items=packets, tail=st.integers(1, 8))
def test_an_incomplete_packet_stays_buffered(items: list[tuple[int, bytes]], tail: int) -> None:
    """Bytes of a packet not yet complete are kept until the rest arrives."""
    stream = wire(items)
    splitter = PacketSplitter()
    out = split_packets(splitter, stream[:-tail])
    assert out == items[:-1]
    assert splitter.buffered == len(stream) - tail - len(wire(items[:-1]))
    assert split_packets(splitter, stream[-tail:]) == items[-1:]


def test_init_fed_byte_by_byte_is_answered() -> None:
    """The server's own dataReceived reassembles a packet delivered one byte at a time."""
    server = GatewayFileTransferServer(avatar=connected()[0].client)
    from twisted.internet.testing import StringTransport

    transport = StringTransport()
    server.makeConnection(transport)
    for byte in struct.pack("!LBL", 5, FXP_INIT, 3):
        server.dataReceived(bytes([byte]))
    assert transport.value()[4] == FXP_VERSION


@pytest.mark.parametrize(
    "malformed",
    [
        packet(5, 7, NS(b"h") + struct.pack("!Q", 0)),  # READ without its length
        packet(6, 8, NS(b"h") + struct.pack("!QL", 0, 10) + b"short"),  # WRITE, short data
        packet(3, 9, b"\x00\x00\x00"),  # OPEN cut short
    ],
)
def test_a_malformed_packet_ends_the_session(malformed: bytes) -> None:
    """A packet no correct client sends closes this session (as OpenSSH's sftp-server exits),
    with no reply; the packets after it are not read."""
    server, transport, _ = connected()
    before = transport.value()
    server.dataReceived(malformed + packet(17, 10, NS(b"/")))  # a REALPATH after it
    assert transport.value() == before
    assert transport.disconnecting


class FakeConnection:
    """Records what a channel sends."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = 0

    def sendData(self, channel: Any, data: bytes) -> None:
        self.sent.append(bytes(data))

    def sendClose(self, channel: Any) -> None:
        self.closed += 1


def channel(window: int, packet_size: int) -> tuple[_SFTPOnlySession, FakeConnection]:
    """A session channel whose peer offers ``window`` bytes in packets of ``packet_size``."""
    conn = FakeConnection()
    session = _SFTPOnlySession(remoteWindow=window, remoteMaxPacket=packet_size)
    session.conn = conn  # type: ignore[assignment]
    return session, conn


def test_session_announces_openssh_sized_window_and_packets() -> None:
    """Our session channels offer a 2 MiB window and 256 KiB packets (Conch: 128 KiB / 32 KiB)."""
    session, _ = channel(0, 0)
    assert session.localWindowSize == SESSION_WINDOW == 2 * 1024 * 1024
    assert session.localWindowLeft == SESSION_WINDOW
    assert session.localMaxPacket == SESSION_MAX_PACKET == 256 * 1024


@given(
    writes=st.lists(st.binary(min_size=0, max_size=200), max_size=20),
    window=st.integers(0, 300),
    packet_size=st.integers(1, 64),
    grants=st.lists(st.integers(1, 300), max_size=30),
)
def test_writes_beyond_the_window_are_queued_and_sent_in_order(
    writes: list[bytes], window: int, packet_size: int, grants: list[int]
) -> None:
    """Never more than the window or the packet size is sent; every byte goes out in order."""
    session, conn = channel(window, packet_size)
    allowed = window
    for data in writes:
        session.write(data)
    for grant in grants:
        session.addWindowBytes(grant)
        allowed += grant
    assert all(0 < len(p) <= packet_size for p in conn.sent)
    sent = b"".join(conn.sent)
    everything = b"".join(writes)
    assert sent == everything[: min(allowed, len(everything))]
    assert session.queued_bytes == len(everything) - len(sent)
    session.addWindowBytes(len(everything))
    assert b"".join(conn.sent) == everything


def test_close_waits_for_queued_data() -> None:
    """loseConnection closes the channel only once everything queued was sent."""
    session, conn = channel(4, 4)
    session.write(b"12345678")
    session.loseConnection()
    assert conn.closed == 0
    session.addWindowBytes(4)
    assert b"".join(conn.sent) == b"12345678"
    assert conn.closed >= 1
