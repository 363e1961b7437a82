"""Capabilities: the value objects that name and authorize objects, and their printable strings.

Formats (base32 is RFC 4648, lowercase, unpadded; numbers are decimal)::

    GG:LIT:<data>                               literal: a tiny file's bytes in the cap
    GG:CHK:<read key>:<ueb hash>:<k>:<n>:<size> immutable file read cap
    GG:CHK-V:<storage index>:<ueb hash>:<k>:<n>:<size>   immutable verify cap
    GG:TREE:<read key>:<ueb hash>:<k>:<n>:<node size>:<size>      chunked file read cap
    GG:PTREE:<TREE fields>:<overlay>            the same, with bytes laid over it
    GG:TREE-V:<storage index>:<ueb hash>:<k>:<n>:<node size>:<size>   chunked verify cap
    GG:SSK:<signing seed>                       mutable file write cap
    GG:SSK-RO:<read key>:<public key>           mutable file read cap
    GG:SSK-V:<storage index>:<public key>       mutable file verify cap
    GG:DIR:… GG:DIR-RO:… GG:DIR-V:…             directories: same fields as SSK

A chunked file (a large file stored as a tree of immutable chunks, see
:mod:`gateway.objects.chunk_format`) is named by its root node, itself an immutable
object: the TREE fields are that node's CHK fields followed by the file's size.

Reductions go write → read → verify, each a one-way function: the read key is a
hash of the Ed25519 seed, the storage index a hash of the read key, so storage
servers (which see only storage indexes and public keys) never learn a read key.
Keys, seeds and literal data never appear in ``repr``; a cap's string form is
only produced by :meth:`to_string`.
"""

from __future__ import annotations

import functools

import nacl.bindings
import nacl.signing
import nacl.utils
from attrs import field, frozen

from gateway.objects.capfields import (
    Overlay,
    b32decode,
    check_params,
    decode_overlay,
    encode_overlay,
    number,
)
from gateway.objects.crypto import (
    DERIVATION_CACHE,
    HASH_SIZE,
    KEY_SIZE,
    STORAGE_INDEX_SIZE,
    immutable_storage_index,
    mutable_read_key,
    mutable_storage_index,
)
from gateway.objects.errors import BadCapability
from storage import base32

PREFIX = "GG"
OVERLAID_PREFIX = f"{PREFIX}:PTREE:"  # a chunked file's cap with an overlay


b32encode = base32.b2a


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    """The Ed25519 key of a seed (deriving the public half costs a scalar multiplication)."""
    return nacl.signing.SigningKey(seed)


@functools.lru_cache(maxsize=DERIVATION_CACHE)
def _public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a seed, as bytes."""
    return bytes(_signing_key(seed).verify_key)


def _whole(part: int | None) -> None:
    if part is not None:
        raise ValueError("a chunk tree leaf kept inside its parent node has no capability string")


@frozen(cache_hash=True)
class LiteralCap:
    """A tiny immutable file held entirely inside its capability (no shares, no verify cap)."""

    data: bytes = field(repr=False)

    read_only = True

    @property
    def size(self) -> int:
        """The file's length in bytes."""
        return len(self.data)

    @property
    def storage_index(self) -> None:
        """Literal files are stored nowhere."""
        return None

    def get_read_cap(self) -> LiteralCap:
        """A literal cap is its own read cap."""
        return self

    def get_verify_cap(self) -> None:
        """There is nothing on the grid to verify."""
        return None

    def to_string(self) -> str:
        """The printable capability (reveals the contents)."""
        return f"{PREFIX}:LIT:{b32encode(self.data)}"


@frozen(cache_hash=True)
class ImmutableVerifyCap:
    """Lets a holder find and check every share of an immutable file, but not read it."""

    storage_index: bytes
    ueb_hash: bytes
    k: int
    n: int
    size: int

    read_only = True

    def get_verify_cap(self) -> ImmutableVerifyCap:
        """A verify cap is its own verify cap."""
        return self

    def to_string(self) -> str:
        """The printable verify capability."""
        si, ueb = b32encode(self.storage_index), b32encode(self.ueb_hash)
        return f"{PREFIX}:CHK-V:{si}:{ueb}:{self.k}:{self.n}:{self.size}"


@frozen(cache_hash=True)
class ImmutableReadCap:
    """Reads an immutable file: its key, the hash of its URI extension block, and its shape."""

    key: bytes = field(repr=False)
    ueb_hash: bytes
    k: int
    n: int
    size: int

    read_only = True

    @property
    def storage_index(self) -> bytes:
        """Where servers keep the shares (a hash of the key)."""
        return immutable_storage_index(self.key)

    def get_read_cap(self) -> ImmutableReadCap:
        """A read cap is its own read cap."""
        return self

    def get_verify_cap(self) -> ImmutableVerifyCap:
        """Reduce to the verify cap."""
        return ImmutableVerifyCap(self.storage_index, self.ueb_hash, self.k, self.n, self.size)

    def to_string(self) -> str:
        """The printable read capability."""
        key, ueb = b32encode(self.key), b32encode(self.ueb_hash)
        return f"{PREFIX}:CHK:{key}:{ueb}:{self.k}:{self.n}:{self.size}"


@frozen(cache_hash=True)
class ChunkedVerifyCap:
    """Checks the root node of a chunked file (its chunks are named inside the encrypted node)."""

    node: ImmutableVerifyCap
    size: int
    part: int | None = None
    """As :attr:`ChunkedCap.part`."""

    read_only = True

    @property
    def storage_index(self) -> bytes:
        """Where servers keep the root node's shares."""
        return self.node.storage_index

    def get_verify_cap(self) -> ChunkedVerifyCap:
        """A verify cap is its own verify cap."""
        return self

    def to_string(self) -> str:
        """The printable verify capability."""
        _whole(self.part)
        node = self.node
        si, ueb = b32encode(node.storage_index), b32encode(node.ueb_hash)
        return f"{PREFIX}:TREE-V:{si}:{ueb}:{node.k}:{node.n}:{node.size}:{self.size}"


@frozen(cache_hash=True)
class ChunkedCap:
    """Reads a large file stored as a tree of immutable chunks: its root node's cap and its size.

    Inner nodes of the tree are named by ChunkedCaps of their subtrees too.
    """

    node: ImmutableReadCap
    size: int
    part: int | None = None
    """None for a node stored as an object of its own; for a leaf node kept inside
    its parent (:mod:`gateway.objects.chunk_format`, "inline leaves"), the index of
    its entry in the node that ``node`` stores. Such a cap names a node inside a
    tree only: it has no printable form."""
    overlay: Overlay = field(default=(), repr=False)
    """Bytes laid over the tree's (:mod:`gateway.objects.overlay`): recent small changes
    that no node holds yet. The verify cap, checks and leases see the tree alone."""

    read_only = True

    @property
    def storage_index(self) -> bytes:
        """Where servers keep the root node's shares."""
        return self.node.storage_index

    @property
    def tree(self) -> ChunkedCap:
        """The cap of the tree alone (without the overlay)."""
        return ChunkedCap(self.node, self.size, self.part) if self.overlay else self

    def get_read_cap(self) -> ChunkedCap:
        """A read cap is its own read cap."""
        return self

    def get_verify_cap(self) -> ChunkedVerifyCap:
        """Reduce to the verify cap."""
        return ChunkedVerifyCap(self.node.get_verify_cap(), self.size, self.part)

    def to_string(self) -> str:
        """The printable read capability."""
        _whole(self.part)
        node = self.node
        key, ueb = b32encode(node.key), b32encode(node.ueb_hash)
        fields = f"{key}:{ueb}:{node.k}:{node.n}:{node.size}:{self.size}"
        if self.overlay:
            return f"{OVERLAID_PREFIX}{fields}:{encode_overlay(self.overlay)}"
        return f"{PREFIX}:TREE:{fields}"


@frozen(cache_hash=True)
class MutableVerifyCap:
    """Lets a holder find and check a mutable object's shares and signatures, but not read it."""

    storage_index: bytes
    public_key: bytes

    read_only = True

    def get_verify_cap(self) -> MutableVerifyCap:
        """A verify cap is its own verify cap."""
        return self

    def to_string(self) -> str:
        """The printable verify capability."""
        return f"{PREFIX}:SSK-V:{b32encode(self.storage_index)}:{b32encode(self.public_key)}"


@frozen(cache_hash=True)
class MutableReadCap:
    """Reads any version of a mutable object and checks its Ed25519 signature."""

    read_key: bytes = field(repr=False)
    public_key: bytes

    read_only = True

    @property
    def storage_index(self) -> bytes:
        """Where servers keep the shares (a hash of the read key)."""
        return mutable_storage_index(self.read_key)

    def get_read_cap(self) -> MutableReadCap:
        """A read cap is its own read cap."""
        return self

    def get_verify_cap(self) -> MutableVerifyCap:
        """Reduce to the verify cap."""
        return MutableVerifyCap(self.storage_index, self.public_key)

    def to_string(self) -> str:
        """The printable read capability."""
        return f"{PREFIX}:SSK-RO:{b32encode(self.read_key)}:{b32encode(self.public_key)}"


@frozen(cache_hash=True)
class MutableWriteCap:
    """Writes a mutable object: holds the Ed25519 signing seed, from which all else derives."""

    signing_seed: bytes = field(repr=False)

    read_only = False

    @classmethod
    def generate(cls) -> MutableWriteCap:
        """A write cap for a brand-new mutable object (its key pair derived once, here, and
        kept for the read cap and the signatures that follow)."""
        seed = nacl.utils.random(nacl.bindings.crypto_sign_SEEDBYTES)
        _signing_key(seed)
        return cls(seed)

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The Ed25519 key that signs every version."""
        return _signing_key(self.signing_seed)

    @property
    def public_key(self) -> bytes:
        """The Ed25519 public key readers check signatures with."""
        return _public_key(self.signing_seed)

    @property
    def storage_index(self) -> bytes:
        """Where servers keep the shares (from the read key: no public key, no read cap)."""
        return mutable_storage_index(mutable_read_key(self.signing_seed))

    def get_read_cap(self) -> MutableReadCap:
        """Reduce to the read cap."""
        return MutableReadCap(mutable_read_key(self.signing_seed), self.public_key)

    def get_verify_cap(self) -> MutableVerifyCap:
        """Reduce to the verify cap."""
        return self.get_read_cap().get_verify_cap()

    def to_string(self) -> str:
        """The printable write capability."""
        return f"{PREFIX}:SSK:{b32encode(self.signing_seed)}"


@frozen(cache_hash=True)
class DirectoryVerifyCap:
    """Verifies the mutable object that holds a directory."""

    node: MutableVerifyCap

    read_only = True

    @property
    def storage_index(self) -> bytes:
        """The storage index of the underlying mutable object."""
        return self.node.storage_index

    def get_verify_cap(self) -> DirectoryVerifyCap:
        """A verify cap is its own verify cap."""
        return self

    def to_string(self) -> str:
        """The printable verify capability."""
        return self.node.to_string().replace(":SSK-V:", ":DIR-V:", 1)


@frozen(cache_hash=True)
class DirectoryReadCap:
    """Lists a directory and reads its children (write caps of children stay hidden)."""

    node: MutableReadCap

    read_only = True

    @property
    def storage_index(self) -> bytes:
        """The storage index of the underlying mutable object."""
        return self.node.storage_index

    def get_read_cap(self) -> DirectoryReadCap:
        """A read cap is its own read cap."""
        return self

    def get_verify_cap(self) -> DirectoryVerifyCap:
        """Reduce to the verify cap."""
        return DirectoryVerifyCap(self.node.get_verify_cap())

    def to_string(self) -> str:
        """The printable read capability."""
        return self.node.to_string().replace(":SSK-RO:", ":DIR-RO:", 1)


@frozen(cache_hash=True)
class DirectoryWriteCap:
    """Modifies a directory: add, replace and remove entries."""

    node: MutableWriteCap

    read_only = False

    @classmethod
    def generate(cls) -> DirectoryWriteCap:
        """A write cap for a brand-new directory."""
        return cls(MutableWriteCap.generate())

    @property
    def storage_index(self) -> bytes:
        """The storage index of the underlying mutable object."""
        return self.node.storage_index

    def get_read_cap(self) -> DirectoryReadCap:
        """Reduce to the read cap."""
        return DirectoryReadCap(self.node.get_read_cap())

    def get_verify_cap(self) -> DirectoryVerifyCap:
        """Reduce to the verify cap."""
        return DirectoryVerifyCap(self.node.get_verify_cap())

    def to_string(self) -> str:
        """The printable write capability."""
        return self.node.to_string().replace(":SSK:", ":DIR:", 1)


ImmutableCap = LiteralCap | ImmutableReadCap | ChunkedCap
"""What reads an immutable file."""

VerifyCap = ImmutableVerifyCap | ChunkedVerifyCap | MutableVerifyCap | DirectoryVerifyCap
"""What verifies an object (literal files have none)."""

Capability = (
    LiteralCap
    | ImmutableReadCap
    | ImmutableVerifyCap
    | ChunkedCap
    | ChunkedVerifyCap
    | MutableWriteCap
    | MutableReadCap
    | MutableVerifyCap
    | DirectoryWriteCap
    | DirectoryReadCap
    | DirectoryVerifyCap
)
"""Any capability :func:`parse` can return."""


_FIELDS: dict[str, int] = {
    "LIT": 1,
    "CHK": 5,
    "CHK-V": 5,
    "TREE": 6,
    "PTREE": 7,
    "TREE-V": 6,
    "SSK": 1,
    "SSK-RO": 2,
    "SSK-V": 2,
    "DIR": 1,
    "DIR-RO": 2,
    "DIR-V": 2,
}


def parse(text: str) -> Capability:
    """Parse a capability string, raising BadCapability with a message that says what is wrong.

    The message never repeats the string (it may be a secret).
    """
    text = text.strip()
    parts = text.split(":")
    if len(parts) < 3 or parts[0] != PREFIX:
        raise BadCapability(f"not a capability: it should start with '{PREFIX}:<kind>:'")
    kind, fields = parts[1], parts[2:]
    if kind not in _FIELDS:
        shown = f" '{kind}'" if len(kind) <= 8 and kind.isalnum() else ""
        raise BadCapability(f"unknown capability kind{shown} (known kinds: {', '.join(_FIELDS)})")
    if len(fields) != _FIELDS[kind]:
        raise BadCapability(
            f"a {kind} capability has {_FIELDS[kind]} field(s) after '{PREFIX}:{kind}:',"
            f" this one has {len(fields)}"
        )
    if kind == "LIT":
        return LiteralCap(b32decode(fields[0], "literal data"))
    if kind in ("CHK", "CHK-V", "TREE", "PTREE", "TREE-V"):
        reads = kind in ("CHK", "TREE", "PTREE")
        first = b32decode(
            fields[0],
            "read key" if reads else "storage index",
            KEY_SIZE if reads else STORAGE_INDEX_SIZE,
        )
        ueb_hash = b32decode(fields[1], "URI extension block hash", HASH_SIZE)
        k, n = number(fields[2], "k (shares needed)"), number(fields[3], "n (total shares)")
        size = number(fields[4], "size" if kind.startswith("CHK") else "node size")
        check_params(k, n)
        if kind.endswith(("TREE", "TREE-V")):
            file_size = number(fields[5], "size")
            if kind != "TREE-V":
                overlay = decode_overlay(fields[6], file_size) if kind == "PTREE" else ()
                node = ImmutableReadCap(first, ueb_hash, k, n, size)
                return ChunkedCap(node, file_size, overlay=overlay)
            return ChunkedVerifyCap(ImmutableVerifyCap(first, ueb_hash, k, n, size), file_size)
        if kind == "CHK":
            return ImmutableReadCap(first, ueb_hash, k, n, size)
        return ImmutableVerifyCap(first, ueb_hash, k, n, size)
    if kind in ("SSK", "DIR"):
        writer = MutableWriteCap(b32decode(fields[0], "signing key", KEY_SIZE))
        return writer if kind == "SSK" else DirectoryWriteCap(writer)
    public_key = b32decode(fields[1], "public key", KEY_SIZE)
    if kind in ("SSK-RO", "DIR-RO"):
        reader = MutableReadCap(b32decode(fields[0], "read key", KEY_SIZE), public_key)
        return reader if kind == "SSK-RO" else DirectoryReadCap(reader)
    verifier = MutableVerifyCap(
        b32decode(fields[0], "storage index", STORAGE_INDEX_SIZE), public_key
    )
    return verifier if kind == "SSK-V" else DirectoryVerifyCap(verifier)
