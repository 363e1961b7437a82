"""Publishing journaled directory changes: one mutable publish of a directory, with the
changes applied leniently on top of whatever the grid holds, retried against races; and
what write-back needs of a directory node."""

from __future__ import annotations

import random
from typing import Protocol

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gateway.objects.caps import DirectoryReadCap, DirectoryWriteCap
from gateway.objects.dirchanges import Change, MutableRecords, apply_lenient
from gateway.objects.dirformat import pack_contents, unpack_contents
from gateway.objects.dirpacking import Packer
from gateway.objects.errors import NotEnoughShares, SharesKeptChanging, UncoordinatedWriteError
from gateway.objects.mutable import KnownState, MutableClient


class JournaledDirectory(Protocol):
    """What write-back needs of a directory node (a
    :class:`~gateway.objects.dirnode.DirectoryNode`): its capability and a way to read it."""

    @property
    def cap(self) -> DirectoryWriteCap | DirectoryReadCap:
        """The directory's capability."""

    @property
    def storage_index(self) -> bytes:
        """The directory's storage index."""

    async def read_state(self, known: KnownState | None = None) -> KnownState:
        """Read the directory's current version from the grid (``known``'s contents are kept
        while its version is still the newest)."""


#: A publish that loses this many races in a row is retried later, not at once.
ATTEMPTS = 12


@frozen
class PublishAs:
    """What is known of the directory being published."""

    create: bool
    """Made by this gateway and never published (as far as it knows)."""
    maybe_exists: bool
    """Made before a restart: a publish may have reached the grid already."""


@frozen
class Published:
    """A directory's new version in the grid."""

    state: KnownState
    records: MutableRecords
    maybe_exists: bool


async def publish_changes(
    client: MutableClient,
    cap: DirectoryWriteCap,
    changes: list[Change],
    known: KnownState | None,
    directory: PublishAs,
    clock: IReactorTime,
    rng: random.Random,
    known_records: MutableRecords | None = None,
    packer: Packer | None = None,
) -> Published:
    """Publish ``changes`` to the directory ``cap`` names: created when it is new, else
    applied to the current version (``known`` spares a read when it is still current, and
    ``known_records``, its contents already unpacked, the unpacking; ``packer``, the
    directory's last packing, the encoding of entries that did not change).

    Raises UncoordinatedWriteError when other writers kept winning (retried later).
    """
    writer = cap.node
    maybe_exists = directory.maybe_exists
    pack = pack_contents if packer is None else packer.pack
    if directory.create and not maybe_exists:
        records = apply_lenient(changes, {})
        try:
            _, state = await client.create_known(pack(records), writer)
            return Published(state, records, maybe_exists)
        except UncoordinatedWriteError:
            maybe_exists = True  # a share is there already: publish on top of it
    outcome: list[MutableRecords] = []

    def apply(data: bytes) -> bytes:
        if known_records is not None and known is not None and data is known.data:
            base = dict(known_records)  # what ``data`` holds, unpacked when it was made
        else:
            base = unpack_contents(data)
        records = apply_lenient(changes, base)
        outcome[:] = [records]
        return pack(records)

    for attempt in range(ATTEMPTS):
        try:
            state = await client.update(writer, apply, known)
            return Published(state, outcome[0], maybe_exists)
        except (UncoordinatedWriteError, SharesKeptChanging):
            known = None  # another writer published: read theirs, apply ours on top
            await deferLater(clock, rng.uniform(0, min(1.0, 0.02 * 2**attempt)))
        except NotEnoughShares:
            if not (directory.create and known is None):
                raise
            records = apply_lenient(changes, {})  # made before a restart, never published
            _, state = await client.create_known(pack(records), writer)
            return Published(state, records, maybe_exists)
    raise UncoordinatedWriteError("other writers kept changing the directory; retrying later")
