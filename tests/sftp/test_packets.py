"""Where each SFTP request's fields end: bytes past them are discarded (as by OpenSSH), too few
bytes are a malformed packet. rclone's WRITEs carry their whole 32 KiB buffer after a shorter
data field; those must write exactly the data field."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.conch.ssh.common import NS
from twisted.conch.ssh.filetransfer import (
    FX_OK,
    FXF_CREAT,
    FXF_WRITE,
    FXP_HANDLE,
    FXP_OPEN,
    FXP_STATUS,
    FXP_WRITE,
)

from gateway.sftp.packets import LAYOUTS, MalformedPacket, request_fields_end
from tests.sftp.test_sftp_conch import RecordingFile, connected, packet, statuses


def _attrs() -> st.SearchStrategy[bytes]:
    """An ATTRS block with any combination of fields, extended pairs included."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        size = draw(st.booleans())
        uidgid = draw(st.booleans())
        perms = draw(st.booleans())
        times = draw(st.booleans())
        extended = draw(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8))))
        flags = size * 1 | uidgid * 2 | perms * 4 | times * 8 | (0x80000000 if extended else 0)
        out = struct.pack("!L", flags)
        out += struct.pack("!Q", 5) if size else b""
        out += struct.pack("!LL", 1, 2) if uidgid else b""
        out += struct.pack("!L", 0o644) if perms else b""
        out += struct.pack("!LL", 3, 4) if times else b""
        if extended:
            out += struct.pack("!L", len(extended))
            out += b"".join(NS(k) + NS(v) for k, v in extended)
        return out

    return build()


_FIELD = {
    "s": st.binary(max_size=40).map(NS),
    "4": st.integers(0, 2**32 - 1).map(lambda n: struct.pack("!L", n)),
    "8": st.integers(0, 2**64 - 1).map(lambda n: struct.pack("!Q", n)),
    "a": _attrs(),
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[int, bytes]:
    """A request type and a well-formed body for it (request id first)."""
    kind = draw(st.sampled_from(sorted(k for k in LAYOUTS if k != 200)))
    fields = [draw(_FIELD[code]) for code in LAYOUTS[kind]]
    return kind, struct.pack("!L", draw(st.integers(0, 2**32 - 1))) + b"".join(fields)


@given(request=requests(), trailing=st.binary(max_size=64))
def test_fields_end_where_the_request_ends_whatever_follows(
    request: tuple[int, bytes], trailing: bytes
) -> None:
    """Bytes past a request's last field are not part of it."""
    kind, body = request
    assert request_fields_end(kind, body + trailing) == len(body)


@given(request=requests(), data=st.data())
def test_a_body_cut_short_is_malformed(request: tuple[int, bytes], data: st.DataObject) -> None:
    """A body shorter than its fields is refused, wherever it is cut."""
    kind, body = request
    cut = data.draw(st.integers(0, len(body) - 1))
    with pytest.raises(MalformedPacket):
        request_fields_end(kind, body[:cut])


def test_extended_requests_keep_their_whole_body() -> None:
    """An extension's own fields follow its name: the whole packet is the request."""
    body = struct.pack("!L", 1) + NS(b"fsync@openssh.com") + NS(b"handle") + b"more"
    assert request_fields_end(200, body) == len(body)


class KeepingFile(RecordingFile):
    """An open file that keeps every WRITE's offset and data."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[int, bytes]] = []

    async def write(self, offset: int, data: bytes) -> None:
        self.writes.append((offset, data))


def test_rclone_write_with_its_whole_buffer_writes_only_the_data_field() -> None:
    """A WRITE packet longer than its data field (rclone's last chunk of a file) is served:
    exactly the data field is written and the client gets FX_OK."""
    server, transport, fs = connected()
    fs.file = KeepingFile()
    open_body = NS(b"/f") + struct.pack("!LL", FXF_WRITE | FXF_CREAT, 0)
    server.dataReceived(packet(FXP_OPEN, 1, open_body))
    reply = transport.value()
    assert reply[4] == FXP_HANDLE
    (handle_length,) = struct.unpack_from("!L", reply, 9)
    handle = reply[13 : 13 + handle_length]
    transport.clear()
    data = bytes(range(256)) * 20  # 5120 bytes, the last chunk of a file
    buffer = data + b"\xee" * (32768 - len(data))  # the rest of rclone's 32 KiB buffer
    body = NS(handle) + struct.pack("!QL", 294912, len(data)) + buffer
    server.dataReceived(packet(FXP_WRITE, 2, body))
    assert statuses(transport.value()) == [(2, FX_OK)]
    assert fs.file.writes == [(294912, data)]


def test_open_with_bytes_after_its_attributes_is_served() -> None:
    """OpenSSH's server reads an OPEN's fields and discards the rest of the packet; so do we."""
    server, transport, _ = connected()
    body = NS(b"/f") + struct.pack("!LL", FXF_WRITE | FXF_CREAT, 0) + b"junk"
    server.dataReceived(packet(FXP_OPEN, 1, body))
    reply = transport.value()
    assert reply[4] == FXP_HANDLE and reply[4] != FXP_STATUS
