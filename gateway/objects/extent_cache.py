"""The plaintext of the extents this gateway stored last, for the next change to start from.

A change to a large file (:mod:`gateway.objects.chunk_update`) stores each extent
it touches again, whole: the changed bytes merged with the rest of the extent as
the version before had it. Reading that rest means fetching the old extent's
shares, checking them and decrypting a whole chunk, and it was most of the cost
of a change: a SQLite transaction rewrites the same few pages (the header, the
last page, an index) at every commit, so each fsync read back the extents the
one before had just stored.

:class:`ExtentCache` keeps the plaintext of the extents stored last, up to a
number of bytes, by their capability. An extent is immutable and its capability
is derived from its contents (convergent encryption): the bytes kept for a
capability are exactly the bytes a read of it returns, so reads of a kept extent
(:class:`KeptExtent`) need no grid at all. Nothing else is kept: a read of an
extent that is not here fetches it as before.
"""

from __future__ import annotations

from collections import OrderedDict

from zope.interface import implementer

from gateway.objects.caps import ImmutableReadCap
from gateway.objects.chunked import range_end
from gateway.objects.interfaces import IFileReader

DEFAULT_CACHED_BYTES = 8 * 1024 * 1024
"""Plaintext kept: eight 1 MiB extents (a database's header, tail and hot pages)."""


class ExtentCache:
    """The plaintext of recently stored extents, least recently used dropped first."""

    def __init__(self, capacity: int = DEFAULT_CACHED_BYTES):
        self.capacity = capacity
        self._kept: OrderedDict[ImmutableReadCap, bytes] = OrderedDict()
        self._bytes = 0
        #: Reads served from here (for the benchmarks and the tests).
        self.hits = 0

    @property
    def kept_bytes(self) -> int:
        """Bytes of plaintext held."""
        return self._bytes

    def put(self, cap: ImmutableReadCap, plaintext: bytes) -> None:
        """Keep ``plaintext``, the contents of the extent ``cap`` names (just stored)."""
        if len(plaintext) != cap.size or len(plaintext) > self.capacity:
            return
        old = self._kept.pop(cap, None)
        if old is not None:
            self._bytes -= len(old)
        self._kept[cap] = plaintext
        self._bytes += len(plaintext)
        while self._bytes > self.capacity:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= len(dropped)

    def get(self, cap: ImmutableReadCap) -> bytes | None:
        """The plaintext of ``cap`` if it is kept (it becomes the most recently used)."""
        plaintext = self._kept.get(cap)
        if plaintext is not None:
            self._kept.move_to_end(cap)
            self.hits += 1
        return plaintext


@implementer(IFileReader)
class KeptExtent:
    """Reads of an extent whose plaintext is kept: no grid."""

    def __init__(self, plaintext: bytes):
        self._plaintext = plaintext
        self.size = len(plaintext)

    async def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (b'' at the end)."""
        end = range_end(offset, length, self.size)
        if offset == 0 and end == self.size:
            return self._plaintext
        return self._plaintext[offset:end]
