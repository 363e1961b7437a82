"""The on-grid format of directories: entries, metadata, sealed write caps, CBOR contents.

A directory's contents (the plaintext of its mutable object, which the mutable
layer encrypts, signs and erasure-codes) are one CBOR array::

    [1, {name: [read cap | null, sealed write cap | null, metadata], ...}]

- ``1`` is the format version; anything else is refused with CorruptDirectory.
- ``name`` is an NFC-normalized text string (see :func:`normalize_name`).
- ``read cap`` is the child's read-only capability string (literal, immutable,
  chunked, mutable or directory read cap), null for a symlink: a symlink is an entry with
  no child object, only a target.
- ``sealed write cap`` is present only when the child is writable (a mutable file
  or a directory linked by its write cap): a random 24-byte nonce followed by the
  XChaCha20-Poly1305 encryption of the write cap string, keyed by
  :func:`gateway.objects.crypto.directory_write_key` of the directory's signing
  seed, with the child's read cap string as associated data (so a sealed write
  cap cannot be moved to another entry). A holder of the directory's read cap
  decrypts the contents but not the sealed write caps: its children are read-only.
- ``metadata`` is ``[kind, mtime, ctime, mode, no_write, symlink target, size]``
  with kind 0 = file, 1 = directory, 2 = symlink (see :class:`EntryMetadata`).
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.utils
from attrs import field, frozen

from gateway.objects.caps import (
    ChunkedCap,
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
)
from gateway.objects.errors import (
    CorruptObject,
    ObjectError,
)

FORMAT_VERSION = 1
"""The version number that starts every directory's serialized contents."""

MAX_NAME_BYTES = 255
"""The longest name, in UTF-8 bytes after NFC normalization (as most filesystems allow)."""

Kind = Literal["file", "dir", "symlink"]
KINDS: tuple[Kind, ...] = ("file", "dir", "symlink")
"""Entry kinds; a kind's index is its serialized code."""

FileCap = LiteralCap | ImmutableReadCap | ChunkedCap | MutableWriteCap | MutableReadCap
"""What a file entry may link to."""

DirCap = DirectoryWriteCap | DirectoryReadCap
"""What a directory entry may link to."""

ChildCap = FileCap | DirCap
"""Any capability a directory entry may hold (verify caps cannot be linked)."""

_NONCE_SIZE: int = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES

T = TypeVar("T")


class BadName(ObjectError, ValueError):
    """A name cannot be used for a directory entry (empty, '.', '..', '/', NUL, too long)."""


class NoSuchChild(ObjectError):
    """The directory has no entry with that name."""


class ChildExists(ObjectError):
    """The name is already taken and the operation was told not to overwrite."""


class BadChild(ObjectError, ValueError):
    """A capability or metadata that cannot make a directory entry (e.g. kind and cap disagree)."""


class CorruptDirectory(CorruptObject):
    """A directory's contents decrypted and verified but cannot be parsed as a directory."""


# --- names ---------------------------------------------------------------


def shown_name(name: str) -> str:
    """A name for an error message: quoted, escaped, and shortened when long."""
    text = repr(name)
    return text if len(text) <= 60 else text[:40] + "…" + text[-12:]


#: Text names whose NFC form is remembered (a lookup checks every name of a path again).
NORMALIZED_KEPT = 16384


def normalize_name(name: str | bytes) -> str:
    """The NFC form of an entry name, or BadName saying why it cannot name an entry.

    ``bytes`` must be UTF-8. The rules: not empty, not '.' or '..', no '/' and
    no NUL, and at most :data:`MAX_NAME_BYTES` bytes of UTF-8 after NFC.
    """
    return _normalized_text(name) if type(name) is str else _normalize(name)


@functools.lru_cache(maxsize=NORMALIZED_KEPT)
def _normalized_text(name: str) -> str:
    return _normalize(name)


def _normalize(name: str | bytes) -> str:
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError:
            raise BadName("the name is not valid UTF-8") from None
    if not isinstance(name, str):
        raise BadName(f"a name must be text, not {type(name).__name__}")
    try:
        encoded = unicodedata.normalize("NFC", name).encode("utf-8")
    except UnicodeEncodeError:
        raise BadName(
            f"the name {shown_name(name)} is not valid Unicode (unpaired surrogate)"
        ) from None
    name = encoded.decode("utf-8")
    if not name:
        raise BadName("a name must not be empty")
    if name in (".", ".."):
        raise BadName(f"'{name}' is reserved and cannot name a directory entry")
    if "/" in name:
        raise BadName(f"the name {shown_name(name)} contains '/', which cannot be part of a name")
    if "\0" in name:
        raise BadName(f"the name {shown_name(name)} contains a NUL character")
    if len(encoded) > MAX_NAME_BYTES:
        raise BadName(
            f"the name {shown_name(name)} is {len(encoded)} bytes long in UTF-8;"
            f" at most {MAX_NAME_BYTES} are allowed"
        )
    return name


# --- entries -------------------------------------------------------------


def check_kind(instance: Any, attribute: Any, value: str) -> None:
    """attrs validator: an entry kind is file, dir or symlink."""
    if value not in KINDS:
        raise BadChild(f"an entry's kind is one of {', '.join(KINDS)}, not {value!r}")


@frozen(kw_only=True)
class EntryMetadata:
    """What a directory records about one entry besides its capability.

    ``mode`` holds permission bits exactly as a client gave them (None: never
    set); ``no_write`` marks an entry the filesystem must not change; ``symlink``
    is the target of a symlink entry (which links no object: its cap is None);
    ``size`` is the file's length as last recorded, so listings need not fetch
    children. Times are seconds since the epoch. Nothing here is updated
    automatically (e.g. ctime on a change): the filesystem layer decides.
    """

    kind: Kind = field(validator=check_kind)
    mtime: float = field(converter=float)
    ctime: float = field(converter=float)
    mode: int | None = None
    no_write: bool = False
    symlink: str | None = None
    size: int | None = None

    def __attrs_post_init__(self) -> None:
        if (self.kind == "symlink") != (self.symlink is not None):
            raise BadChild("a symlink entry needs a target and only a symlink entry has one")
        if self.mode is not None and not (isinstance(self.mode, int) and self.mode >= 0):
            raise BadChild("mode must be a non-negative integer or None")
        if self.size is not None and not (isinstance(self.size, int) and self.size >= 0):
            raise BadChild("size must be a non-negative integer or None")

    @classmethod
    def symlink_to(cls, target: str, now: float) -> EntryMetadata:
        """Metadata of a new symlink entry pointing at ``target``."""
        return cls(kind="symlink", mtime=now, ctime=now, symlink=target)

    def to_cbor(self) -> list[Any]:
        """The compact serialized form (see the module docstring)."""
        return [
            KINDS.index(self.kind),
            self.mtime,
            self.ctime,
            self.mode,
            self.no_write,
            self.symlink,
            self.size,
        ]

    @classmethod
    def from_cbor(cls, data: Any) -> EntryMetadata:
        """Parse :meth:`to_cbor`'s form, raising CorruptDirectory when it does not fit."""
        if not isinstance(data, list) or len(data) != 7:
            raise CorruptDirectory("an entry's metadata is not a list of 7 fields")
        kind, mtime, ctime, mode, no_write, symlink, size = data
        if not (isinstance(kind, int) and 0 <= kind < len(KINDS)):
            raise CorruptDirectory("an entry has an unknown kind")
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (mtime, ctime)):
            raise CorruptDirectory("an entry's times are not numbers")
        if not (
            (mode is None or is_int(mode))
            and isinstance(no_write, bool)
            and (symlink is None or isinstance(symlink, str))
            and (size is None or is_int(size))
        ):
            raise CorruptDirectory("an entry's metadata has a field of the wrong type")
        try:
            return cls(
                kind=KINDS[kind],
                mtime=mtime,
                ctime=ctime,
                mode=mode,
                no_write=no_write,
                symlink=symlink,
                size=size,
            )
        except BadChild as e:
            raise CorruptDirectory(f"an entry's metadata is inconsistent: {e}") from None


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def kind_of(cap: ChildCap | None) -> Kind:
    """The entry kind a capability links: 'dir' for directories, 'symlink' for None, else 'file'."""
    if cap is None:
        return "symlink"
    if isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
        return "dir"
    if isinstance(
        cap, LiteralCap | ImmutableReadCap | ChunkedCap | MutableWriteCap | MutableReadCap
    ):
        return "file"
    raise BadChild(f"a {type(cap).__name__} cannot be linked into a directory")


def read_only_cap(cap: ChildCap) -> ChildCap:
    """The read-only form of a child capability."""
    return cast(ChildCap, cap.get_read_cap())


@frozen
class Entry:
    """One directory entry as a reader sees it.

    ``cap`` is the child's write cap when the directory was opened with its write
    cap and the child was linked writable, otherwise the child's read cap; None
    for a symlink.
    """

    name: str
    cap: ChildCap | None
    metadata: EntryMetadata

    @property
    def kind(self) -> Kind:
        """'file', 'dir' or 'symlink'."""
        return self.metadata.kind

    @property
    def read_cap(self) -> ChildCap | None:
        """The child's read-only capability (None for a symlink)."""
        return None if self.cap is None else read_only_cap(self.cap)


# --- serialization ---------------------------------------------------------


@frozen
class Record:
    """An entry as stored: read cap string, sealed write cap, metadata (caps parsed lazily).

    A record keeps its CBOR encoding under the name it was last packed with
    (:meth:`encoded_as`): a directory is packed whole at every publish, and all but the
    entries a change touched are the same record objects as at the one before.
    """

    read_cap: str | None = field(repr=False)
    sealed_write_cap: bytes | None = field(repr=False)
    metadata: EntryMetadata
    _encoding: list[tuple[str, bytes]] = field(init=False, factory=list, eq=False, repr=False)

    def encoded_as(self, name: str) -> bytes:
        """The CBOR of ``name`` and this entry, as :func:`pack_contents` lays them in its map."""
        kept = self._encoding  # one (name, encoding) pair, replaced whole
        if kept and (pair := kept[0])[0] == name:
            return pair[1]
        value = [self.read_cap, self.sealed_write_cap, self.metadata.to_cbor()]
        encoded = cast(bytes, cbor2.dumps(name) + cbor2.dumps(value))
        kept[:] = [(name, encoded)]
        return encoded


def seal_write_cap(key: bytes, write_cap: str, read_cap: str) -> bytes:
    """Encrypt a child write cap for the directory's writers, bound to its read cap."""
    nonce = nacl.utils.random(_NONCE_SIZE)
    box = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        write_cap.encode("ascii"), read_cap.encode("ascii"), nonce, key
    )
    return nonce + box


def unseal_write_cap(key: bytes, sealed: bytes, read_cap: str) -> str:
    """Decrypt a sealed child write cap (CorruptDirectory when it does not authenticate)."""
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[_NONCE_SIZE:], read_cap.encode("ascii"), sealed[:_NONCE_SIZE], key
        )
        return plain.decode("ascii")
    except (nacl.exceptions.CryptoError, UnicodeDecodeError, ValueError):
        raise CorruptDirectory("a child's write cap failed to decrypt") from None


def make_record(cap: ChildCap | None, metadata: EntryMetadata, key: bytes | None) -> Record:
    """The stored form of a new entry; ``key`` is the directory's write key.

    Without a key a write cap is reduced to its read cap (used to check entries).
    """
    kind = kind_of(cap)
    if kind != metadata.kind:
        raise BadChild(f"the metadata says {metadata.kind!r} but the capability links a {kind!r}")
    if cap is None:
        return Record(None, None, metadata)
    read_cap = read_only_cap(cap).to_string()
    if cap.read_only or key is None:
        return Record(read_cap, None, metadata)
    return Record(read_cap, seal_write_cap(key, cap.to_string(), read_cap), metadata)


def pack_contents(records: Mapping[str, Record]) -> bytes:
    """Serialize a directory's entries (the plaintext the mutable object holds).

    The bytes are ``cbor2.dumps([FORMAT_VERSION, {name: [...], ...}])``'s, laid out from
    each record's kept encoding (:meth:`Record.encoded_as`), so a publish encodes only
    the entries that changed.
    """
    parts = [contents_head(len(records))]
    parts.extend(record.encoded_as(name) for name, record in records.items())
    return b"".join(parts)


def contents_head(count: int) -> bytes:
    """What precedes the entries in contents holding ``count`` of them."""
    return _CONTENTS_START + _cbor_head(_CBOR_MAP, count)


_CONTENTS_START = cbor2.dumps([FORMAT_VERSION, {}])[:-1]
"""A two-item array and the format version: what precedes the entries' map."""

_CBOR_MAP = 5
"""CBOR's major type of a map."""


def _cbor_head(major: int, count: int) -> bytes:
    """A CBOR data item's head: its major type and a count in the shortest form."""
    if count < 24:
        return bytes([major << 5 | count])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if count < 1 << (8 * width):
            return bytes([major << 5 | extra]) + count.to_bytes(width, "big")
    raise ValueError("a CBOR count fits in 64 bits")


def unpack_contents(data: bytes) -> dict[str, Record]:
    """Records for new entries (names checked and normalized; write caps sealed with ``key``)."""
    """Parse :func:`pack_contents`' output, raising CorruptDirectory when it cannot be read."""
    try:
        decoded = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for damaged input
        raise CorruptDirectory(f"the directory's contents are not valid CBOR ({e})") from None
    if not isinstance(decoded, list) or len(decoded) < 1 or not is_int(decoded[0]):
        raise CorruptDirectory("the directory's contents do not start with a format version")
    if decoded[0] != FORMAT_VERSION:
        raise CorruptDirectory(
            f"the directory has format version {decoded[0]}; this gateway reads version"
            f" {FORMAT_VERSION} (a newer gateway may have written it)"
        )
    if len(decoded) != 2 or not isinstance(decoded[1], dict):
        raise CorruptDirectory("the directory's contents have no entry table")
    records = {}
    for name, value in decoded[1].items():
        if not isinstance(name, str):
            raise CorruptDirectory("an entry's name is not text")
        if not isinstance(value, list) or len(value) != 3:
            raise CorruptDirectory(f"the entry {shown_name(name)} is not a list of 3 fields")
        read_cap, sealed, metadata = value
        if not (read_cap is None or isinstance(read_cap, str)) or not (
            sealed is None or (isinstance(sealed, bytes) and len(sealed) > _NONCE_SIZE)
        ):
            raise CorruptDirectory(f"the entry {shown_name(name)} has a malformed capability")
        if (read_cap is None) != (metadata_is_symlink := is_symlink_kind(metadata)) or (
            read_cap is None and sealed is not None
        ):
            what = "a symlink with a capability" if metadata_is_symlink else "no capability"
            raise CorruptDirectory(f"the entry {shown_name(name)} has {what}")
        records[name] = Record(read_cap, sealed, EntryMetadata.from_cbor(metadata))
    return records


def is_symlink_kind(metadata: Any) -> bool:
    """Whether raw metadata says the entry is a symlink."""
    return isinstance(metadata, list) and bool(metadata) and metadata[0] == KINDS.index("symlink")


# --- directory nodes -----------------------------------------------------


def make_records(
    entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]], key: bytes | None
) -> dict[str, Record]:
    """Records for new entries (names checked and normalized; write caps sealed with ``key``)."""
    records: dict[str, Record] = {}
    for raw, (cap, metadata) in entries.items():
        name = normalize_name(raw)
        if name in records:
            raise BadName(f"the name {shown_name(name)} is given twice (after NFC normalization)")
        records[name] = make_record(cap, metadata, key)
    return records


def exists_message(names: list[str]) -> str:
    """The ChildExists message for taken names."""
    if len(names) == 1:
        return f"an entry named {shown_name(names[0])} already exists"
    return f"entries named {', '.join(shown_name(n) for n in names)} already exist"
