"""Directories: mutable objects that map NFC-normalized names to child capabilities and metadata.

A directory's contents (the plaintext of its mutable object, which the mutable
layer encrypts, signs and erasure-codes) are one CBOR array::

    [1, {name: [read cap | null, sealed write cap | null, metadata], ...}]

- ``1`` is the format version; anything else is refused with CorruptDirectory.
- ``name`` is an NFC-normalized text string (see :func:`normalize_name`).
- ``read cap`` is the child's read-only capability string (literal, immutable,
  mutable or directory read cap), null for a symlink: a symlink is an entry with
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

Every change is a read-modify-write through :meth:`MutableClient.modify`: the
change is re-applied to freshly read contents whenever another writer (another
process, another gateway) published first, so concurrent writers lose no
entries. Between attempts a writer waits a random, growing pause on the clock
it was given, so two writers that keep colliding drift apart.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, cast

import cbor2
import nacl.bindings
import nacl.exceptions
import nacl.utils
from attrs import define, evolve, field, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.objects.caps import (
    DirectoryReadCap,
    DirectoryWriteCap,
    ImmutableReadCap,
    LiteralCap,
    MutableReadCap,
    MutableWriteCap,
    b32encode,
    parse,
)
from gateway.objects.crypto import directory_write_key
from gateway.objects.errors import (
    BadCapability,
    CorruptObject,
    NotWritable,
    ObjectError,
    UncoordinatedWriteError,
)
from gateway.objects.mutable import MutableClient

FORMAT_VERSION = 1
"""The version number that starts every directory's serialized contents."""

MAX_NAME_BYTES = 255
"""The longest name, in UTF-8 bytes after NFC normalization (as most filesystems allow)."""

Kind = Literal["file", "dir", "symlink"]
KINDS: tuple[Kind, ...] = ("file", "dir", "symlink")
"""Entry kinds; a kind's index is its serialized code."""

FileCap = LiteralCap | ImmutableReadCap | MutableWriteCap | MutableReadCap
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


def _shown(name: str) -> str:
    """A name for an error message: quoted, escaped, and shortened when long."""
    text = repr(name)
    return text if len(text) <= 60 else text[:40] + "…" + text[-12:]


def normalize_name(name: str | bytes) -> str:
    """The NFC form of an entry name, or BadName saying why it cannot name an entry.

    ``bytes`` must be UTF-8. The rules: not empty, not '.' or '..', no '/' and
    no NUL, and at most :data:`MAX_NAME_BYTES` bytes of UTF-8 after NFC.
    """
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
            f"the name {_shown(name)} is not valid Unicode (unpaired surrogate)"
        ) from None
    name = encoded.decode("utf-8")
    if not name:
        raise BadName("a name must not be empty")
    if name in (".", ".."):
        raise BadName(f"'{name}' is reserved and cannot name a directory entry")
    if "/" in name:
        raise BadName(f"the name {_shown(name)} contains '/', which cannot be part of a name")
    if "\0" in name:
        raise BadName(f"the name {_shown(name)} contains a NUL character")
    if len(encoded) > MAX_NAME_BYTES:
        raise BadName(
            f"the name {_shown(name)} is {len(encoded)} bytes long in UTF-8;"
            f" at most {MAX_NAME_BYTES} are allowed"
        )
    return name


# --- entries -------------------------------------------------------------


def _check_kind(instance: Any, attribute: Any, value: str) -> None:
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

    kind: Kind = field(validator=_check_kind)
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
            (mode is None or _is_int(mode))
            and isinstance(no_write, bool)
            and (symlink is None or isinstance(symlink, str))
            and (size is None or _is_int(size))
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kind_of(cap: ChildCap | None) -> Kind:
    """The entry kind a capability links: 'dir' for directories, 'symlink' for None, else 'file'."""
    if cap is None:
        return "symlink"
    if isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
        return "dir"
    if isinstance(cap, LiteralCap | ImmutableReadCap | MutableWriteCap | MutableReadCap):
        return "file"
    raise BadChild(f"a {type(cap).__name__} cannot be linked into a directory")


def _read_only(cap: ChildCap) -> ChildCap:
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
        return None if self.cap is None else _read_only(self.cap)


# --- serialization ---------------------------------------------------------


@frozen
class _Record:
    """An entry as stored: read cap string, sealed write cap, metadata (caps parsed lazily)."""

    read_cap: str | None = field(repr=False)
    sealed_write_cap: bytes | None = field(repr=False)
    metadata: EntryMetadata


def _seal(key: bytes, write_cap: str, read_cap: str) -> bytes:
    nonce = nacl.utils.random(_NONCE_SIZE)
    box = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        write_cap.encode("ascii"), read_cap.encode("ascii"), nonce, key
    )
    return nonce + box


def _unseal(key: bytes, sealed: bytes, read_cap: str) -> str:
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[_NONCE_SIZE:], read_cap.encode("ascii"), sealed[:_NONCE_SIZE], key
        )
        return plain.decode("ascii")
    except (nacl.exceptions.CryptoError, UnicodeDecodeError, ValueError):
        raise CorruptDirectory("a child's write cap failed to decrypt") from None


def _record(cap: ChildCap | None, metadata: EntryMetadata, key: bytes | None) -> _Record:
    """The stored form of a new entry; ``key`` is the directory's write key.

    Without a key a write cap is reduced to its read cap (used to check entries).
    """
    kind = kind_of(cap)
    if kind != metadata.kind:
        raise BadChild(f"the metadata says {metadata.kind!r} but the capability links a {kind!r}")
    if cap is None:
        return _Record(None, None, metadata)
    read_cap = _read_only(cap).to_string()
    if cap.read_only or key is None:
        return _Record(read_cap, None, metadata)
    return _Record(read_cap, _seal(key, cap.to_string(), read_cap), metadata)


def pack_contents(records: Mapping[str, _Record]) -> bytes:
    """Serialize a directory's entries (the plaintext the mutable object holds)."""
    entries = {
        name: [r.read_cap, r.sealed_write_cap, r.metadata.to_cbor()] for name, r in records.items()
    }
    return cast(bytes, cbor2.dumps([FORMAT_VERSION, entries]))


def unpack_contents(data: bytes) -> dict[str, _Record]:
    """Parse :func:`pack_contents`' output, raising CorruptDirectory when it cannot be read."""
    try:
        decoded = cbor2.loads(data)
    except Exception as e:  # cbor2 raises several types for damaged input
        raise CorruptDirectory(f"the directory's contents are not valid CBOR ({e})") from None
    if not isinstance(decoded, list) or len(decoded) < 1 or not _is_int(decoded[0]):
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
            raise CorruptDirectory(f"the entry {_shown(name)} is not a list of 3 fields")
        read_cap, sealed, metadata = value
        if not (read_cap is None or isinstance(read_cap, str)) or not (
            sealed is None or (isinstance(sealed, bytes) and len(sealed) > _NONCE_SIZE)
        ):
            raise CorruptDirectory(f"the entry {_shown(name)} has a malformed capability")
        if (read_cap is None) != (metadata_is_symlink := _symlink_kind(metadata)) or (
            read_cap is None and sealed is not None
        ):
            what = "a symlink with a capability" if metadata_is_symlink else "no capability"
            raise CorruptDirectory(f"the entry {_shown(name)} has {what}")
        records[name] = _Record(read_cap, sealed, EntryMetadata.from_cbor(metadata))
    return records


def _symlink_kind(metadata: Any) -> bool:
    return isinstance(metadata, list) and bool(metadata) and metadata[0] == KINDS.index("symlink")


# --- directory nodes -----------------------------------------------------


@define(eq=False)
class DirectoryNode:
    """One directory, opened through its write cap (read-write) or read cap (read-only).

    ``clock`` times the read cache and the random pauses (growing from
    ``backoff`` to at most ``max_backoff`` seconds) between attempts of a change
    that lost a race; ``attempts`` bounds those attempts. (A read that overlaps
    another writer's publish is retried by :class:`MutableClient` itself.)
    """

    client: MutableClient
    cap: DirectoryWriteCap | DirectoryReadCap
    clock: IReactorTime
    attempts: int = 24
    backoff: float = 0.02
    max_backoff: float = 1.0
    rng: random.Random = field(factory=random.Random, repr=False)
    _cache: tuple[float, dict[str, _Record]] | None = field(default=None, init=False, repr=False)

    @classmethod
    async def create(
        cls,
        client: MutableClient,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]] | None = None,
        *,
        clock: IReactorTime,
        **options: Any,
    ) -> DirectoryNode:
        """A new directory on the grid holding ``entries`` (name → (cap, metadata)).

        One publish, or two when an entry holds a write cap: the key that seals
        it derives from the directory's own cap, which :meth:`MutableClient.create`
        makes.
        """
        entries = entries or {}
        records = _records(entries, None)  # checks names and kinds before anything is created
        writable = any(cap is not None and not cap.read_only for cap, _ in entries.values())
        writer = await client.create(pack_contents({} if writable else records))
        node = cls(client, DirectoryWriteCap(writer), clock, **options)
        if writable:
            await node.add_many(entries)
        else:
            node._remember(records)
        return node

    @classmethod
    def open(
        cls,
        client: MutableClient,
        cap: DirectoryWriteCap | DirectoryReadCap | str,
        *,
        clock: IReactorTime,
        **options: Any,
    ) -> DirectoryNode:
        """A node for an existing directory (no I/O); a string is parsed as a capability."""
        if isinstance(cap, str):
            cap = cast(DirectoryWriteCap | DirectoryReadCap, parse(cap))
        if not isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
            raise BadCapability("that capability does not name a directory (or only verifies it)")
        return cls(client, cap, clock, **options)

    @property
    def read_only(self) -> bool:
        """True when this node can only list (opened with a read cap)."""
        return self.cap.read_only

    @property
    def storage_index(self) -> bytes:
        """The directory's storage index (public)."""
        return self.cap.storage_index

    def child_node(self, entry: Entry) -> DirectoryNode:
        """A node for a subdirectory entry, with this node's client, clock and options."""
        if not isinstance(entry.cap, DirectoryWriteCap | DirectoryReadCap):
            raise BadChild(f"the entry {_shown(entry.name)} is not a directory")
        return evolve(self, cap=entry.cap)

    # -- reading --

    async def list(self, max_age: float | None = None) -> dict[str, Entry]:
        """Every entry by name.

        With ``max_age`` (seconds) the contents last read or written by this node
        are reused when they are at most that old; otherwise the grid is read.
        """
        return {name: self._entry(name, r) for name, r in (await self._records(max_age)).items()}

    async def get(self, name: str | bytes, max_age: float | None = None) -> Entry:
        """The entry called ``name`` (NFC-normalized); NoSuchChild when there is none."""
        name = normalize_name(name)
        records = await self._records(max_age)
        if name not in records:
            raise NoSuchChild(f"there is no entry named {_shown(name)}")
        return self._entry(name, records[name])

    async def child(self, name: str | bytes, max_age: float | None = None) -> DirectoryNode:
        """The subdirectory called ``name``, opened as its entry allows."""
        return self.child_node(await self.get(name, max_age))

    # -- changing --

    async def add(
        self,
        name: str | bytes,
        cap: ChildCap | None,
        metadata: EntryMetadata | None = None,
        overwrite: bool = True,
    ) -> Entry:
        """Link ``cap`` as ``name``; ChildExists when the name is taken and not ``overwrite``.

        Without ``metadata`` the entry gets the cap's kind and the clock's time.
        """
        name = normalize_name(name)
        return (await self.add_many({name: (cap, metadata)}, overwrite))[name]

    async def add_many(
        self,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata | None]],
        overwrite: bool = True,
    ) -> dict[str, Entry]:
        """Link several children in one publish; without ``overwrite`` all or none are added."""
        key = self._write_key()
        now = self.clock.seconds()
        new: dict[str, _Record] = {}
        for raw, (cap, metadata) in entries.items():
            name = normalize_name(raw)
            if name in new:
                raise BadName(f"the name {_shown(name)} is given twice (after NFC normalization)")
            if metadata is None:
                metadata = EntryMetadata(kind=kind_of(cap), mtime=now, ctime=now)
            new[name] = _record(cap, metadata, key)
        if not new:
            return {}

        def change(records: dict[str, _Record]) -> None:
            if not overwrite:
                taken = sorted(n for n in new if n in records)
                if taken:
                    raise ChildExists(_exists_message(taken))
            records.update(new)

        await self._modify(change)
        return {name: self._entry(name, r) for name, r in new.items()}

    async def remove(self, name: str | bytes) -> Entry:
        """Unlink ``name`` and return the entry it had (the child object itself is untouched)."""
        name = normalize_name(name)
        self._write_key()

        def change(records: dict[str, _Record]) -> _Record:
            if name not in records:
                raise NoSuchChild(f"there is no entry named {_shown(name)}")
            return records.pop(name)

        return self._entry(name, await self._modify(change))

    async def rename(self, old: str | bytes, new: str | bytes, overwrite: bool = True) -> Entry:
        """Rename an entry within this directory in one publish; returns it under its new name."""
        old, new = normalize_name(old), normalize_name(new)
        self._write_key()
        if old == new:
            return await self.get(old)

        def change(records: dict[str, _Record]) -> _Record:
            if old not in records:
                raise NoSuchChild(f"there is no entry named {_shown(old)}")
            if not overwrite and new in records:
                raise ChildExists(_exists_message([new]))
            records[new] = records.pop(old)
            return records[new]

        return self._entry(new, await self._modify(change))

    async def mkdir(
        self,
        name: str | bytes,
        metadata: EntryMetadata | None = None,
        overwrite: bool = False,
        entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]] | None = None,
    ) -> DirectoryNode:
        """Create a new directory and link it here as ``name``; returns its (writable) node.

        The child is published before it is linked, so a crash or a ChildExists
        leaves at worst an unlinked directory, never a link to nothing.
        """
        name = normalize_name(name)
        self._write_key()
        if metadata is not None and metadata.kind != "dir":
            raise BadChild("mkdir needs metadata of kind 'dir'")
        if not overwrite:
            await self._check_free(name)
        child = await DirectoryNode.create(
            self.client,
            entries,
            clock=self.clock,
            attempts=self.attempts,
            backoff=self.backoff,
            max_backoff=self.max_backoff,
            rng=self.rng,
        )
        await self.add(name, child.cap, metadata, overwrite)
        return child

    async def set_metadata(self, name: str | bytes, **changes: Any) -> Entry:
        """Change fields of an entry's metadata (e.g. ``mtime=…, mode=0o644``); returns the entry.

        The kind cannot change (BadChild); unknown fields raise TypeError.
        """
        name = normalize_name(name)
        self._write_key()
        if "kind" in changes:
            raise BadChild("an entry's kind cannot be changed")

        def change(records: dict[str, _Record]) -> _Record:
            if name not in records:
                raise NoSuchChild(f"there is no entry named {_shown(name)}")
            record = records[name]
            records[name] = evolve(record, metadata=evolve(record.metadata, **changes))
            return records[name]

        return self._entry(name, await self._modify(change))

    # -- internals --

    def _write_key(self) -> bytes:
        if not isinstance(self.cap, DirectoryWriteCap):
            raise NotWritable("this directory was opened read-only; it cannot be changed")
        return directory_write_key(self.cap.node.signing_seed)

    def _entry(self, name: str, record: _Record) -> Entry:
        cap: ChildCap | None = None
        if record.read_cap is not None:
            text = record.read_cap
            if record.sealed_write_cap is not None and isinstance(self.cap, DirectoryWriteCap):
                key = directory_write_key(self.cap.node.signing_seed)
                text = _unseal(key, record.sealed_write_cap, record.read_cap)
            try:
                cap = cast(ChildCap, parse(text))
                kind = kind_of(cap)
            except (BadCapability, BadChild) as e:
                raise CorruptDirectory(
                    f"the entry {_shown(name)} has a bad capability: {e}"
                ) from None
            if kind != record.metadata.kind or _read_only(cap).to_string() != record.read_cap:
                raise CorruptDirectory(f"the entry {_shown(name)}'s capabilities do not agree")
        return Entry(name, cap, record.metadata)

    def _remember(self, records: dict[str, _Record]) -> None:
        self._cache = (self.clock.seconds(), dict(records))

    async def _records(self, max_age: float | None) -> dict[str, _Record]:
        if max_age is not None and self._cache is not None:
            when, records = self._cache
            if self.clock.seconds() - when <= max_age:
                return records
        data, _ = await self.client.read(self.cap.node)
        records = unpack_contents(data)
        self._remember(records)
        return records

    async def _check_free(self, name: str) -> None:
        if name in await self._records(None):
            raise ChildExists(_exists_message([name]))

    async def _modify(self, change: Callable[[dict[str, _Record]], T]) -> T:
        """Apply ``change`` (which edits the records in place) to fresh contents and publish."""
        assert isinstance(self.cap, DirectoryWriteCap)
        outcome: list[tuple[T, dict[str, _Record]]] = []

        def apply(data: bytes) -> bytes:
            records = unpack_contents(data)
            result = change(records)
            outcome[:] = [(result, records)]
            return pack_contents(records)

        for attempt in range(self.attempts):
            try:
                await self.client.modify(self.cap.node, apply, attempts=1)
            except UncoordinatedWriteError:
                if attempt < self.attempts - 1:
                    await self._pause(attempt)
                    continue
                si = b32encode(self.storage_index)
                raise UncoordinatedWriteError(
                    f"the directory {si} changed under every one of {self.attempts}"
                    " attempts to update it; try again later"
                ) from None
            result, records = outcome[0]
            self._remember(records)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pause(self, attempt: int) -> None:
        delay = self.rng.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        await deferLater(self.clock, delay)


def _records(
    entries: Mapping[str, tuple[ChildCap | None, EntryMetadata]], key: bytes | None
) -> dict[str, _Record]:
    records: dict[str, _Record] = {}
    for raw, (cap, metadata) in entries.items():
        name = normalize_name(raw)
        if name in records:
            raise BadName(f"the name {_shown(name)} is given twice (after NFC normalization)")
        records[name] = _record(cap, metadata, key)
    return records


def _exists_message(names: list[str]) -> str:
    if len(names) == 1:
        return f"an entry named {_shown(names[0])} already exists"
    return f"entries named {', '.join(_shown(n) for n in names)} already exist"


async def move(
    source: DirectoryNode,
    source_name: str | bytes,
    destination: DirectoryNode,
    destination_name: str | bytes,
    overwrite: bool = True,
) -> Entry:
    """Move an entry from one directory to another; returns it as linked in ``destination``.

    Two publishes: the entry is added to ``destination`` first and removed from
    ``source`` second, so a crash in between leaves the entry in both places,
    never in neither. The removal only happens if ``source_name`` still links
    the same child (another writer may have replaced it meanwhile). Within one
    directory this is :meth:`DirectoryNode.rename` (one atomic publish). Moving a
    directory into its own subtree is the caller's to prevent.
    """
    source_name = normalize_name(source_name)
    destination_name = normalize_name(destination_name)
    source._write_key()
    destination._write_key()
    if source.storage_index == destination.storage_index:
        return await source.rename(source_name, destination_name, overwrite)
    entry = await source.get(source_name)
    added = await destination.add(destination_name, entry.cap, entry.metadata, overwrite)
    expected = (entry.read_cap and entry.read_cap.to_string(), entry.metadata.symlink)

    def change(records: dict[str, _Record]) -> None:
        record = records.get(source_name)
        if record is not None and (record.read_cap, record.metadata.symlink) == expected:
            del records[source_name]

    await source._modify(change)
    return added
