"""The fuzz targets of the SFTP server: what one client sends, by target.

Each target exists twice over the same idea. :data:`TARGETS` are Hypothesis
strategies (``tests/sftp/test_fuzz_sftp.py`` runs them bounded in CI, and
``misc/fuzz_sftp.py --engine hypothesis`` at length); :data:`BYTE_TARGETS`
turn a byte-level fuzzer's input (atheris, coverage-guided) into the same
kind of steps, starting from valid seeds. Every input goes through
:func:`tests.sftp.sftp_fuzz.check_input`.

- ``split``: any byte stream to the packet splitter and dispatcher: lengths
  zero, short, huge or past the limit, truncation, several packets per read.
- ``requests``: a well-framed packet of every type, its fields fuzzed: paths,
  flags, ATTRS with every flag bit, valid and made-up handles, extreme offsets
  and lengths, bytes past the last field or too few.
- ``extensions``: every extension (and unknown ones) with fuzzed payloads.
- ``sequences``: series of plausible requests on a small namespace (open, write,
  read, close, stat, setstat, rename, remove, mkdir, rmdir, symlink, readdir,
  fsync, copy-data) on the handles they get, with garbage in between.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from attrs import frozen
from hypothesis import strategies as st
from twisted.conch.ssh.common import NS

from gateway.sftp.extensions import EXTENSIONS
from tests.sftp.sftp_fuzz import INIT, HandleRef, Request, Step, packet
from tests.storage.http_fuzz_targets import mutate

OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME = 11, 12, 13, 14, 15, 16, 17, 18
READLINK, SYMLINK, EXTENDED = 19, 20, 200
#: Every request type, and the fields after the request id (s: string, h: handle,
#: 4/8: uint32/uint64, a: ATTRS), as SFTP version 3 has them.
LAYOUTS: dict[int, str] = {
    OPEN: "s4a",
    CLOSE: "h",
    READ: "h84",
    WRITE: "h8s",
    LSTAT: "s",
    FSTAT: "h",
    SETSTAT: "sa",
    FSETSTAT: "ha",
    OPENDIR: "s",
    READDIR: "h",
    REMOVE: "s",
    MKDIR: "sa",
    RMDIR: "s",
    REALPATH: "s",
    STAT: "s",
    RENAME: "ss",
    READLINK: "s",
    SYMLINK: "ss",
}
#: Packet types no client sends as requests: INIT again, replies, unknown ones.
OTHER_KINDS = [0, 1, 2, 21, 101, 102, 103, 104, 105, 199, 201, 255]
#: The namespace requests name (see :mod:`tests.sftp.sftp_fuzz`), and names nearby.
PATHS = [
    b"/file", b"/dir", b"/dir/inner", b"/dir/sub", b"/empty", b"/link", b"/dangling",
    b"/new", b"/dir/new", b"/dir/sub/new", b"/", b".", b"..", b"/dir/..", b"/../..", b"",
    b"file", b"dir/inner", b"~", b"~/file", b"~fuzz/dir", b"~other", b"/link/x", b"/file/x",
    b"//dir//inner", b"/new.filepart",
]  # fmt: skip
ODD_NAMES = [b"\xff\xfe", b"a\x00b", "caf\u00e9".encode(), "cafe\u0301".encode(), b"x" * 300]
FLAGS = [0x1, 0x2, 0x3, 0x4, 0x8, 0x10, 0x18, 0x1A, 0x2A, 0x3A, 0x21, 0x3F, 0x0, 0xFFFFFFFF]
OFFSETS = [0, 1, 100, 1023, 1024, 4096, 65536, 2**31, 2**32, 2**40, 2**63 - 1, 2**63, 2**64 - 1]
LENGTHS = [0, 1, 10, 4096, 32768, 261120, 261121, 2**31, 2**32 - 1]
EXTENSION_NAMES = [e.name for e in EXTENSIONS] + [
    b"hardlink@openssh.com", b"check-file", b"space-available", b"", b"\xff", "\u00e9".encode(),
    b"posix-rename@openssh.co", b"limits@openssh.com\x00",
]  # fmt: skip


def u32(value: int) -> bytes:
    """A uint32 field."""
    return struct.pack("!L", value & 0xFFFFFFFF)


def u64(value: int) -> bytes:
    """A uint64 field."""
    return struct.pack("!Q", value & 0xFFFFFFFFFFFFFFFF)


def attrs_block(flags: int, values: list[int], extended: list[tuple[bytes, bytes]]) -> bytes:
    """An ATTRS block with ``flags``, whose fields take ``values`` in order (size, uid,
    gid, permissions, atime, mtime: as many as the flags ask), then extended pairs."""
    out, take = [u32(flags)], iter(values + [0] * 6)
    if flags & 0x1:
        out.append(u64(next(take)))
    if flags & 0x2:
        out += [u32(next(take)), u32(next(take))]
    if flags & 0x4:
        out.append(u32(next(take)))
    if flags & 0x8:
        out += [u32(next(take)), u32(next(take))]
    if flags & 0x80000000:
        out.append(u32(len(extended)))
        out += [NS(name) + NS(value) for name, value in extended]
    return b"".join(out)


# --- Hypothesis strategies --------------------------------------------------------------------

_paths = st.one_of(
    st.sampled_from(PATHS),
    st.tuples(st.sampled_from(PATHS), st.sampled_from(ODD_NAMES)).map(b"/".join),
    st.binary(max_size=40),
)
_u32 = st.one_of(st.sampled_from(FLAGS + LENGTHS), st.integers(0, 2**32 - 1))
_u64 = st.one_of(st.sampled_from(OFFSETS), st.integers(0, 2**64 - 1))
_attr_flags = st.one_of(
    st.sampled_from([0, 0x1, 0x4, 0x8, 0xD, 0xF, 0x80000000, 0x8000000F]),
    st.integers(0, 2**32 - 1),
)


@st.composite
def _attrs(draw: st.DrawFn) -> bytes:
    values = draw(st.lists(st.one_of(_u32, _u64), max_size=6))
    extended = draw(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=2))
    block = attrs_block(draw(_attr_flags), values, extended)
    return mutate(draw, block) if draw(st.integers(0, 4)) == 0 else block


@st.composite
def _field(draw: st.DrawFn, code: str) -> bytes | HandleRef:
    if code == "s":
        return NS(draw(_paths)) if draw(st.integers(0, 5)) else u32(draw(_u32))
    if code == "h":
        if draw(st.integers(0, 3)):
            return HandleRef(draw(st.integers(0, 3)))
        return NS(draw(st.one_of(st.sampled_from([b"", b"0", b"-1"]), st.binary(max_size=12))))
    if code == "4":
        return u32(draw(_u32))
    if code == "8":
        return u64(draw(_u64))
    return draw(_attrs())


#: Steps that open handles for the fuzzed requests to name, changing nothing stored: a
#: file read-write, a directory listing, another file write-only.
OPENERS: list[Step] = [
    Request(OPEN, 90, (NS(b"/file"), u32(0x3), attrs_block(0, [], [])), setup=True),
    Request(OPENDIR, 91, (NS(b"/dir"),), setup=True),
    Request(OPEN, 92, (NS(b"/dir/inner"), u32(0x2), attrs_block(0, [], [])), setup=True),
]


@st.composite
def _openers(draw: st.DrawFn) -> list[Step]:
    return draw(st.lists(st.sampled_from(OPENERS), max_size=3, unique=True))


@st.composite
def raw_streams(draw: st.DrawFn) -> list[Step]:
    """Target ``split``: anything at all, or a stream of valid packets cut, mutated, or
    framed with odd lengths."""
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return [draw(st.binary(max_size=4096))]
    requests = draw(st.lists(_request_packet(), min_size=1, max_size=4))
    stream = b"".join(requests)
    if choice == 1:
        return [mutate(draw, stream)]
    if choice == 2:
        length = draw(st.sampled_from([0, 1, 4, 5, 9, 2**18, 2**18 + 1, 2**31, 2**32 - 1]))
        body = draw(st.binary(max_size=64))
        return [stream + u32(length) + body]
    return [INIT + stream]


@st.composite
def _request_packet(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(sorted(LAYOUTS)))
    fields = [draw(_field(c)) for c in LAYOUTS[kind]]
    wire = [f if isinstance(f, bytes) else NS(b"9") for f in fields]
    return packet(kind, draw(st.integers(0, 2**32 - 1)), *wire)


@st.composite
def requests(draw: st.DrawFn) -> list[Step]:
    """Target ``requests``: handles opened, then one or a few well-framed requests of any
    type with fuzzed fields (sometimes bytes past the last field, or too few)."""
    steps = draw(_openers())
    for request_id in range(draw(st.integers(1, 3))):
        kind = draw(st.one_of(st.sampled_from(sorted(LAYOUTS)), st.sampled_from(OTHER_KINDS)))
        codes = LAYOUTS.get(kind, "")
        fields: list[bytes | HandleRef] = [draw(_field(c)) for c in codes]
        if not codes:
            fields.append(draw(st.binary(max_size=64)))
        tail = draw(st.integers(0, 6))
        if tail == 0:
            fields.append(draw(st.binary(min_size=1, max_size=16)))
        elif tail == 1 and fields and isinstance(fields[-1], bytes):
            fields[-1] = fields[-1][: draw(st.integers(0, len(fields[-1])))]
        steps.append(Request(kind, request_id, tuple(fields)))
    return steps


def _extension_payload(draw: st.DrawFn, name: bytes) -> list[bytes | HandleRef]:
    """Fields of an extension request, plausible for ``name``."""
    handle = st.builds(HandleRef, st.integers(0, 3))
    path = _paths.map(NS)
    layouts: dict[bytes, list[st.SearchStrategy[bytes] | st.SearchStrategy[HandleRef]]] = {
        b"posix-rename@openssh.com": [path, path],
        b"statvfs@openssh.com": [path],
        b"fstatvfs@openssh.com": [handle],
        b"fsync@openssh.com": [handle],
        b"lsetstat@openssh.com": [path, _attrs()],
        b"limits@openssh.com": [],
        b"expand-path@openssh.com": [path],
        b"copy-data": [handle, _u64.map(u64), _u64.map(u64), handle, _u64.map(u64)],
        b"home-directory": [st.sampled_from([b"", b"fuzz", b"root", b"\xff"]).map(NS)],
        b"users-groups-by-id@openssh.com": [
            st.binary(max_size=24).map(NS),
            st.binary(max_size=24).map(NS),
        ],
    }
    layout = layouts.get(name, [st.binary(max_size=64)])
    return [draw(part) for part in layout]  # type: ignore[misc]


@st.composite
def extensions(draw: st.DrawFn) -> list[Step]:
    """Target ``extensions``: handles opened, then extended requests with fuzzed payloads:
    plausible fields, truncated, extended, mutated or random."""
    steps = draw(_openers())
    for request_id in range(draw(st.integers(1, 3))):
        name = draw(st.one_of(st.sampled_from(EXTENSION_NAMES), st.binary(max_size=30)))
        fields = [NS(name), *_extension_payload(draw, name)]
        choice = draw(st.integers(0, 5))
        if choice == 0:
            fields.append(draw(st.binary(min_size=1, max_size=16)))
        elif choice == 1:
            last = fields[-1]
            if isinstance(last, bytes):
                fields[-1] = last[: draw(st.integers(0, len(last)))]
        elif choice == 2:
            wire = b"".join(f if isinstance(f, bytes) else NS(b"9") for f in fields)
            fields = [mutate(draw, wire)]
        steps.append(Request(EXTENDED, request_id, tuple(fields)))
    return steps


# --- sequences: plausible requests on a small namespace ---------------------------------------

SMALL_PATHS = [b"/a", b"/b", b"/d", b"/d/a", b"/d/e", b"/file", b"/dir", b"/link"]
OPS = [
    "open", "write", "read", "close", "fstat", "fsetstat", "setstat", "rename",
    "posix-rename", "remove", "mkdir", "rmdir", "symlink", "opendir", "readdir",
    "fsync", "copy-data", "stat", "garbage",
]  # fmt: skip


@frozen
class Op:
    """One step of a sequence, by its arguments (turned into a step by :func:`op_step`)."""

    name: str
    request_id: int
    path: int = 0
    other: int = 0
    flags: int = 0
    offset: int = 0
    length: int = 0
    data: bytes = b""
    handle: int = 0


def op_step(op: Op) -> Step:
    """A request (or garbage bytes) from an :class:`Op`."""
    path = NS(SMALL_PATHS[op.path % len(SMALL_PATHS)])
    other = NS(SMALL_PATHS[op.other % len(SMALL_PATHS)])
    handle, rid = HandleRef(op.handle), op.request_id
    attrs = attrs_block(op.flags & 0xF, [op.length, 0, 0, op.offset & 0o7777, op.offset, 7], [])
    if op.name == "open":
        return Request(OPEN, rid, (path, u32(FLAGS[op.flags % len(FLAGS)]), attrs))
    if op.name == "write":
        return Request(WRITE, rid, (handle, u64(op.offset), NS(op.data)))
    if op.name == "read":
        return Request(READ, rid, (handle, u64(op.offset), u32(op.length)))
    if op.name in ("close", "fstat", "readdir"):
        kind = {"close": CLOSE, "fstat": FSTAT, "readdir": READDIR}[op.name]
        return Request(kind, rid, (handle,))
    if op.name == "fsetstat":
        return Request(FSETSTAT, rid, (handle, attrs))
    if op.name in ("setstat", "mkdir"):
        return Request(SETSTAT if op.name == "setstat" else MKDIR, rid, (path, attrs))
    if op.name in ("rename", "symlink"):
        return Request(RENAME if op.name == "rename" else SYMLINK, rid, (path, other))
    if op.name in ("remove", "rmdir", "opendir", "stat"):
        kind = {"remove": REMOVE, "rmdir": RMDIR, "opendir": OPENDIR, "stat": LSTAT}[op.name]
        return Request(kind, rid, (path,))
    if op.name == "posix-rename":
        return Request(EXTENDED, rid, (NS(b"posix-rename@openssh.com"), path, other))
    if op.name == "fsync":
        return Request(EXTENDED, rid, (NS(b"fsync@openssh.com"), handle))
    if op.name == "copy-data":
        offsets = u64(op.offset) + u64(op.length)
        copy = (NS(b"copy-data"), handle, offsets, HandleRef(op.other), u64(op.flags))
        return Request(EXTENDED, rid, copy)
    return op.data  # garbage


_ops = st.builds(
    Op,
    name=st.sampled_from(OPS),
    request_id=st.integers(0, 20),
    path=st.integers(0, 7),
    other=st.integers(0, 7),
    flags=st.integers(0, 255),
    offset=st.one_of(st.integers(0, 3000), st.sampled_from(OFFSETS)),
    length=st.one_of(st.integers(0, 3000), st.sampled_from(LENGTHS)),
    data=st.binary(max_size=200),
    handle=st.integers(0, 5),
)


@st.composite
def sequences(draw: st.DrawFn) -> list[Step]:
    """Target ``sequences``: a series of plausible requests on a small namespace, on the
    handles they get back, garbage sometimes in between."""
    ops = draw(st.lists(_ops, min_size=1, max_size=12))
    return [op_step(op) for op in ops if op.name != "garbage" or draw(st.integers(0, 3)) == 0]


TARGETS: dict[str, Callable[[], st.SearchStrategy[list[Step]]]] = {
    "split": raw_streams,
    "requests": requests,
    "extensions": extensions,
    "sequences": sequences,
}
"""The fuzz targets by name: each a strategy of the steps one session sends."""


# --- byte-level targets (atheris) -------------------------------------------------------------


@frozen
class ByteTarget:
    """A target for a byte-level fuzzer: the steps its input becomes, and valid seeds."""

    wrap: Callable[[bytes], list[Step]]
    seeds: tuple[bytes, ...]


ALL_KINDS = sorted(LAYOUTS) + [EXTENDED] + OTHER_KINDS


def _with_openers(mask: int) -> list[Step]:
    """The openers named by the low bits of ``mask``."""
    return [opener for i, opener in enumerate(OPENERS) if mask & (1 << i)]


def _request(data: bytes) -> list[Step]:
    """The request type by the first byte, the openers (and whether the body starts with an
    open handle) by the second, the body (after the request id) the rest."""
    kind = ALL_KINDS[data[0] % len(ALL_KINDS)] if data else OPEN
    mask = data[1] if len(data) > 1 else 0
    fields: list[bytes | HandleRef] = [HandleRef(mask >> 4)] if mask & 0x8 else []
    return [*_with_openers(mask), Request(kind, 5, (*fields, data[2:]))]


def _extension(data: bytes) -> list[Step]:
    """The extension by the first byte (past the table: the name is in the payload), the
    openers and a leading handle by the second, the payload the rest."""
    index = data[0] if data else 0
    mask = data[1] if len(data) > 1 else 0
    fields: list[bytes | HandleRef] = (
        [] if index >= len(EXTENSION_NAMES) else [NS(EXTENSION_NAMES[index])]
    )
    if mask & 0x8:
        fields.append(HandleRef(mask >> 4))
    return [*_with_openers(mask), Request(EXTENDED, 6, (*fields, data[2:]))]


class _Reader:
    """Reads numbers from a fuzzer's bytes; zeros once they run out."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1] if self.at <= len(self.data) else 0

    def number(self, table: list[int]) -> int:
        """Two bytes: small values as they are, or (top bit set) an entry of ``table``."""
        value = self.byte() << 8 | self.byte()
        return table[value % len(table)] if value & 0x8000 else value

    def chunk(self) -> bytes:
        size = self.byte()
        self.at += size
        return self.data[self.at - size : self.at]


def decode_ops(data: bytes) -> list[Op]:
    """A sequence from bytes: per op, its name, request id, two paths, flags, offset, length,
    handle (a byte or two each) and data (a length byte, then the bytes)."""
    reader, ops = _Reader(data), []
    while reader.at < len(data) and len(ops) < 16:
        name = OPS[reader.byte() % len(OPS)]
        fields = [reader.byte(), reader.byte(), reader.byte(), reader.byte()]
        offset, length = reader.number(OFFSETS), reader.number(LENGTHS)
        ops.append(Op(name, *fields, offset, length, reader.chunk(), reader.byte()))
    return ops


def encode_op(op: Op) -> bytes:
    """The bytes :func:`decode_ops` reads as ``op`` (small offsets and lengths only)."""
    head = [OPS.index(op.name), op.request_id, op.path, op.other, op.flags]
    return (
        bytes(head)
        + struct.pack("!HH", op.offset, op.length)
        + bytes([len(op.data)])
        + op.data
        + bytes([op.handle])
    )


def _sequence(data: bytes) -> list[Step]:
    return [op_step(op) for op in decode_ops(data)]


def _seed_request(kind: int, mask: int, body: bytes) -> bytes:
    return bytes([ALL_KINDS.index(kind), mask]) + body


_ATTRS = attrs_block(0xF, [10, 0, 0, 0o644, 1_700_000_000, 1_700_000_000], [])
_SEQUENCES = [
    [Op("open", 1, 0, flags=7), Op("write", 2, data=b"hello"), Op("close", 3)],
    [Op("open", 1, 5, flags=2), Op("read", 2, length=100), Op("fstat", 3), Op("close", 4)],
    [Op("mkdir", 1, 2), Op("rename", 2, 2, 0), Op("stat", 3, 0), Op("rmdir", 4, 0)],
    [Op("open", 1, 1, flags=7), Op("fsync", 2), Op("posix-rename", 3, 1, 5), Op("close", 4)],
    [Op("opendir", 1, 6), Op("readdir", 2), Op("readdir", 3), Op("close", 4)],
    [Op("open", 1, 5, flags=2), Op("open", 2, 0, flags=7), Op("copy-data", 3, handle=0, other=1)],
]

BYTE_TARGETS: dict[str, ByteTarget] = {
    "split": ByteTarget(
        lambda data: [data],
        (
            INIT,
            packet(STAT, 1, NS(b"/file")) + packet(REALPATH, 2, NS(b".")),
            packet(OPEN, 1, NS(b"/x"), u32(0x1A), u32(0)) + packet(CLOSE, 2, NS(b"1")),
            packet(EXTENDED, 1, NS(b"limits@openssh.com")),
        ),
    ),
    "requests": ByteTarget(
        _request,
        (
            _seed_request(OPEN, 0, NS(b"/new") + u32(0x1A) + _ATTRS),
            _seed_request(READ, 0x9, u64(0) + u32(100)),
            _seed_request(WRITE, 0x9, u64(10) + NS(b"data")),
            _seed_request(FSETSTAT, 0x9, _ATTRS),
            _seed_request(READDIR, 0x1A, b""),
            _seed_request(SETSTAT, 0, NS(b"/file") + _ATTRS),
            _seed_request(RENAME, 0, NS(b"/file") + NS(b"/dir/moved")),
            _seed_request(SYMLINK, 0, NS(b"/file") + NS(b"/l2")),
            _seed_request(MKDIR, 0, NS(b"/dir/new") + _ATTRS),
            _seed_request(REALPATH, 0, NS(b"/dir/../link")),
        ),
    ),
    "extensions": ByteTarget(
        _extension,
        (
            bytes([0, 0]) + NS(b"/file") + NS(b"/renamed"),
            bytes([1, 0]) + NS(b"/"),
            bytes([2, 0x9]),
            bytes([3, 0x9]),
            bytes([4, 0]) + NS(b"/link") + attrs_block(0x8, [1_700_000_000] * 2, []),
            bytes([5, 0]),
            bytes([6, 0]) + NS(b"~/dir"),
            bytes([7, 0x0D]) + u64(0) + u64(0) + NS(b"9") + u64(0),
            bytes([8, 0]) + NS(b"fuzz"),
            bytes([9, 0]) + NS(u32(0)) + NS(u32(0)),
        ),
    ),
    "sequences": ByteTarget(
        _sequence, tuple(b"".join(encode_op(op) for op in ops) for ops in _SEQUENCES)
    ),
}
"""The byte-level fuzz targets by name (the same names as :data:`TARGETS`)."""
