"""The SFTP packet layer: cutting the byte stream into packets, and where each request ends.

A packet is ``uint32 length``, a type byte, then the body (request id first).
:class:`PacketSplitter` cuts a stream into packets; :func:`request_fields_end`
says where the fields of a request end inside its body, so that a packet
carrying bytes past its last field is served as OpenSSH's sftp-server serves
it: the fields are read and the rest of the packet is discarded. Some clients
send such packets: rclone (its Go SFTP library) sends WRITEs whose packet is
as long as its whole 32 KiB buffer while the data field, correctly, holds only
the bytes to write. A packet that is too *short* for its fields is malformed.
"""

from __future__ import annotations

import struct

#: SSH_FXP_* request types.
FXP_INIT = 1
FXP_OPEN = 3
FXP_CLOSE = 4
FXP_READ = 5
FXP_WRITE = 6
FXP_LSTAT = 7
FXP_FSTAT = 8
FXP_SETSTAT = 9
FXP_FSETSTAT = 10
FXP_OPENDIR = 11
FXP_READDIR = 12
FXP_REMOVE = 13
FXP_MKDIR = 14
FXP_RMDIR = 15
FXP_REALPATH = 16
FXP_STAT = 17
FXP_RENAME = 18
FXP_READLINK = 19
FXP_SYMLINK = 20
FXP_EXTENDED = 200

#: Packet types that are requests (timed) and replies (end the timing).
REQUEST_KINDS = frozenset(range(FXP_OPEN, FXP_SYMLINK + 1)) | {FXP_EXTENDED}
REPLY_KINDS = frozenset({101, 102, 103, 104, 105, 201})

# Field codes of a request layout: a string, a uint32, a uint64, an ATTRS block.
_S, _U32, _U64, _ATTRS = "s", "4", "8", "a"

#: The fields of each request after its request id (SFTP version 3). EXTENDED
#: requests end where their packet ends: only the extension knows its fields.
LAYOUTS: dict[int, str] = {
    FXP_OPEN: _S + _U32 + _ATTRS,
    FXP_CLOSE: _S,
    FXP_READ: _S + _U64 + _U32,
    FXP_WRITE: _S + _U64 + _S,
    FXP_LSTAT: _S,
    FXP_FSTAT: _S,
    FXP_SETSTAT: _S + _ATTRS,
    FXP_FSETSTAT: _S + _ATTRS,
    FXP_OPENDIR: _S,
    FXP_READDIR: _S,
    FXP_REMOVE: _S,
    FXP_MKDIR: _S + _ATTRS,
    FXP_RMDIR: _S,
    FXP_REALPATH: _S,
    FXP_STAT: _S,
    FXP_RENAME: _S + _S,
    FXP_READLINK: _S,
    FXP_SYMLINK: _S + _S,
    FXP_EXTENDED: _S,
}

# SSH_FILEXFER_ATTR_* flags.
_ATTR_SIZE = 0x1
_ATTR_UIDGID = 0x2
_ATTR_PERMISSIONS = 0x4
_ATTR_ACMODTIME = 0x8
_ATTR_EXTENDED = 0x80000000


class MalformedPacket(ValueError):
    """A packet is too short for the fields its type requires."""


def _string_end(body: bytes | memoryview, offset: int) -> int:
    if offset + 4 > len(body):
        raise MalformedPacket("packet ends inside a string's length")
    (length,) = struct.unpack_from("!L", body, offset)
    end = offset + 4 + length
    if end > len(body):
        raise MalformedPacket("a string is longer than its packet")
    return end


def _fixed_end(body: bytes | memoryview, offset: int, size: int) -> int:
    if offset + size > len(body):
        raise MalformedPacket("packet ends inside a number")
    return offset + size


def _attrs_end(body: bytes | memoryview, offset: int) -> int:
    offset = _fixed_end(body, offset, 4)
    (flags,) = struct.unpack_from("!L", body, offset - 4)
    size = 8 if flags & _ATTR_SIZE else 0
    size += 8 if flags & _ATTR_UIDGID else 0
    size += 4 if flags & _ATTR_PERMISSIONS else 0
    size += 8 if flags & _ATTR_ACMODTIME else 0
    offset = _fixed_end(body, offset, size)
    if flags & _ATTR_EXTENDED:
        offset = _fixed_end(body, offset, 4)
        (count,) = struct.unpack_from("!L", body, offset - 4)
        for _ in range(count):
            offset = _string_end(body, _string_end(body, offset))
    return offset


def parse_attributes(body: bytes) -> dict[str, int]:
    """An ATTRS block as the attribute dict Conch's server methods take (``size``, ``uid``,
    ``gid``, ``permissions``, ``atime``, ``mtime``); extended attributes are dropped.

    Raises :class:`MalformedPacket` when ``body`` is too short for it.
    """
    _attrs_end(body, 0)  # bounds
    (flags,) = struct.unpack_from("!L", body)
    attrs: dict[str, int] = {}
    offset = 4
    if flags & _ATTR_SIZE:
        (attrs["size"],) = struct.unpack_from("!Q", body, offset)
        offset += 8
    if flags & _ATTR_UIDGID:
        attrs["uid"], attrs["gid"] = struct.unpack_from("!LL", body, offset)
        offset += 8
    if flags & _ATTR_PERMISSIONS:
        (attrs["permissions"],) = struct.unpack_from("!L", body, offset)
        offset += 4
    if flags & _ATTR_ACMODTIME:
        attrs["atime"], attrs["mtime"] = struct.unpack_from("!LL", body, offset)
    return attrs


def request_fields_end(kind: int, body: bytes | memoryview) -> int:
    """Where the fields of a request of type ``kind`` end in ``body`` (which starts with
    the request id); the whole body for EXTENDED and for types without a layout.

    Raises :class:`MalformedPacket` when the body is too short for its fields.
    """
    layout = LAYOUTS.get(kind)
    if layout is None:
        return len(body)
    offset = _fixed_end(body, 0, 4)
    for field in layout:
        if field == _S:
            offset = _string_end(body, offset)
        elif field == _ATTRS:
            offset = _attrs_end(body, offset)
        else:
            offset = _fixed_end(body, offset, int(field))
    return len(body) if kind == FXP_EXTENDED else offset


class PacketSplitter:
    """Cuts a byte stream into SFTP packets (``uint32 length``, then that many bytes).

    Conch's own parser re-copies its whole buffer on every call (``buf += data``,
    then a slice per packet), which is quadratic in the bytes buffered. This one
    keeps the pieces of an incomplete packet in a list and joins them once, when
    the packet is complete; each packet's body is then a zero-copy view of the
    joined bytes, so a 255 KiB WRITE costs one copy here instead of four.
    """

    def __init__(self, max_length: int | None = None) -> None:
        self.max_length = max_length
        self._pieces: list[bytes] = []
        self._size = 0
        self._needed = 9  # bytes that must be buffered before parsing can progress

    @property
    def buffered(self) -> int:
        """Bytes held of incomplete packets."""
        return self._size

    def feed(self, data: bytes) -> list[tuple[int, memoryview]]:
        """Add bytes; return ``(type, body)`` for every packet now complete.

        ``body`` is what follows the type byte (request id first), as Conch's
        ``packet_*`` methods take it, as a read-only view. A packet whose length
        field is over ``max_length`` raises :class:`MalformedPacket`.
        """
        if not data:
            return []
        if self._pieces:
            self._pieces.append(data)
            self._size += len(data)
            if self._size < self._needed:
                return []
            source = b"".join(self._pieces)
        else:
            source = bytes(data)
        view = memoryview(source)
        packets: list[tuple[int, memoryview]] = []
        offset, end = 0, len(source)
        needed = 9
        while end - offset >= 9:
            length, kind = struct.unpack_from("!LB", source, offset)
            if self.max_length is not None and length > self.max_length:
                raise MalformedPacket(f"a packet of {length} bytes (at most {self.max_length})")
            if end - offset < 4 + length:
                needed = 4 + length
                break
            packets.append((kind, view[offset + 5 : offset + 4 + length]))
            offset += 4 + length
        rest = source[offset:] if offset else source
        self._pieces = [rest] if rest else []
        self._size = len(rest)
        self._needed = needed
        return packets
