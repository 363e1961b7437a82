"""An in-memory share backend: real product code, used by fast tests and throwaway nodes."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from attrs import define, field
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from storage.backend import CorruptionReport, IndexMetadata, IShareBackend
from storage.errors import NoSuchShare

_Key = tuple[bytes, int]


def apply_writes(
    share: bytearray, writes: Sequence[tuple[int, bytes]], new_length: int | None
) -> None:
    """Apply write vectors then an optional new length to ``share`` in place (holes are zeros)."""
    for offset, data in writes:
        if offset > len(share):
            share.extend(bytes(offset - len(share)))
        share[offset : offset + len(data)] = data
    if new_length is not None:
        if new_length < len(share):
            del share[new_length:]
        else:
            share.extend(bytes(new_length - len(share)))


@implementer(IShareBackend)
@define(eq=False)
class MemoryBackend:
    """Keeps everything in dictionaries; ``capacity`` bytes of room, or unbounded if None."""

    capacity: int | None = None
    corruption_reports: list[CorruptionReport] = field(factory=list)
    _shares: dict[bytes, dict[int, bytes]] = field(factory=dict, init=False)
    _metadata: dict[bytes, IndexMetadata] = field(factory=dict, init=False)
    _incoming: dict[_Key, bytearray] = field(factory=dict, init=False)

    def _used(self) -> int:
        stored = sum(len(data) for shares in self._shares.values() for data in shares.values())
        return stored + sum(len(data) for data in self._incoming.values())

    def _share(self, storage_index: bytes, share_number: int) -> bytes:
        try:
            return self._shares[storage_index][share_number]
        except KeyError:
            raise NoSuchShare(f"no share {share_number} stored for that storage index") from None

    def list_shares(self, storage_index: bytes) -> frozenset[int]:
        """Numbers of the complete shares stored under the index."""
        return frozenset(self._shares.get(storage_index, {}))

    def share_length(self, storage_index: bytes, share_number: int) -> int:
        """Length of a complete share."""
        return len(self._share(storage_index, share_number))

    def read_share(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read from a complete share, clamped at its end."""
        return self._share(storage_index, share_number)[offset : offset + length]

    def write_share(
        self,
        storage_index: bytes,
        share_number: int,
        writes: Sequence[tuple[int, bytes]],
        new_length: int | None,
    ) -> None:
        """Create or change a share in one step."""
        share = bytearray(self._shares.get(storage_index, {}).get(share_number, b""))
        apply_writes(share, writes, new_length)
        self._shares.setdefault(storage_index, {})[share_number] = bytes(share)

    def delete_share(self, storage_index: bytes, share_number: int) -> None:
        """Remove a complete share if it exists."""
        shares = self._shares.get(storage_index, {})
        shares.pop(share_number, None)
        if not shares:
            self._shares.pop(storage_index, None)

    def get_metadata(self, storage_index: bytes) -> IndexMetadata | None:
        """The index's metadata, or None."""
        return self._metadata.get(storage_index)

    def put_metadata(
        self, storage_index: bytes, metadata: IndexMetadata, durable: bool = True
    ) -> None:
        """Store the index's metadata (memory is as durable as it gets)."""
        self._metadata[storage_index] = metadata

    def delete_index(self, storage_index: bytes) -> None:
        """Remove every complete share and the metadata of the index."""
        self._shares.pop(storage_index, None)
        self._metadata.pop(storage_index, None)

    def storage_indexes(self) -> Iterator[bytes]:
        """Every storage index with metadata or shares."""
        return iter(sorted(set(self._shares) | set(self._metadata)))

    def create_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Start an empty incomplete upload."""
        self._incoming[storage_index, share_number] = bytearray()

    def write_incoming(
        self, storage_index: bytes, share_number: int, offset: int, data: bytes
    ) -> None:
        """Write bytes into an incomplete upload at an offset."""
        apply_writes(self._incoming[storage_index, share_number], [(offset, data)], None)

    def read_incoming(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        """Read back bytes of an incomplete upload."""
        return bytes(self._incoming[storage_index, share_number][offset : offset + length])

    def finish_incoming(self, storage_index: bytes, share_number: int, size: int) -> Deferred[None]:
        """Make an incomplete upload a complete share (at once: nothing to flush)."""
        data = self._incoming.pop((storage_index, share_number))
        apply_writes(data, [], size)
        self._shares.setdefault(storage_index, {})[share_number] = bytes(data)
        return succeed(None)

    def discard_incoming(self, storage_index: bytes, share_number: int) -> None:
        """Throw away an incomplete upload."""
        self._incoming.pop((storage_index, share_number), None)

    def free_space(self) -> int | None:
        """Room left under ``capacity``, or None when unbounded."""
        if self.capacity is None:
            return None
        return max(0, self.capacity - self._used())

    def record_corruption(self, report: CorruptionReport) -> None:
        """Keep the advisory in a list."""
        self.corruption_reports.append(report)

    def sync(self) -> None:
        """Nothing to flush: every change is as durable as memory makes it."""

    def close(self) -> None:
        """Nothing to flush: memory holds everything."""
