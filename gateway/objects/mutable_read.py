"""Reading mutable objects: scanning their shares' signed headers, then rebuilding a version.

Readers take the highest version with a valid signature that they can rebuild:
highest sequence number, ties (two writers that each reached part of the grid
with the same sequence number, e.g. during a partition) broken by the higher
root (UEB) hash, so every reader picks the same one.

A read overlapping another writer's publish can find shares replaced between
its header scan and its block reads. A share that fails verification has its
header read again: if it now holds another version, the read scans again and
retries (a bounded number of times); only a share whose header is unchanged is
reported to its server as corrupt.

The share format is :mod:`gateway.objects.mutable_format`'s; writing is
:class:`gateway.objects.mutable.MutableClient`'s, which reads through the
functions here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import cast

from attrs import define, field

from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import ImmutableReadCap, MutableReadCap, b32encode
from gateway.objects.concurrency import gather
from gateway.objects.crypto import mutable_data_key
from gateway.objects.errors import CorruptShare, NotEnoughShares, SharesKeptChanging
from gateway.objects.immutable import SERVER_FAILURES, ImmutableReader
from gateway.objects.mutable_format import HEADER_SIZE, MutableVersion, parse_header
from gateway.objects.placement import permuted_ring

SCAN_READ = 64 * 1024
"""Bytes of each share a scan reads: the header and, for small objects (directories), the rest.

Reading the whole share of a small object in the scan's one request saves the
reader its further round trips, and a share read in one request is never torn
between two versions, so reads overlapping other writers' publishes fail less.
"""

READ_ATTEMPTS = 6
"""How many scans a read makes when shares keep being replaced under it by another writer."""


@define(eq=False)
class _ReadProbe:
    """What happened, besides plain corruption, while one version was being read."""

    changed: bool = False
    """A share turned out to hold another version than the scan found (another writer's publish)."""
    server_failures: int = 0
    """Requests that failed because a server did (the version may be readable later)."""


@define(eq=False)
class _VersionView:
    """The shares of one version on one server, seen as immutable shares (offset by the header).

    Provides only what :class:`ImmutableReader` uses: list, read, advise. The
    reader passes the storage index of its pseudo read cap; the view substitutes
    the mutable slot's own. A corruption advisory is only passed on when the
    share still holds ``version``; otherwise the probe records a version change.
    """

    server: IStorageClient
    shares: set[int]
    reader: MutableReadCap = field(repr=False)
    version: MutableVersion
    probe: _ReadProbe
    prefixes: dict[int, bytes] = field(factory=dict, repr=False)
    """Share number → the start of that share as the scan read it (holding ``version``)."""

    @property
    def server_id(self) -> bytes:
        return cast(bytes, self.server.server_id)

    async def list_immutable(self, storage_index: bytes) -> frozenset[int]:
        return frozenset(self.shares)

    async def read_immutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        prefix = self.prefixes.get(share_number)
        start = HEADER_SIZE + offset
        if prefix is not None and (start + length <= len(prefix) or len(prefix) < SCAN_READ):
            return prefix[start : start + length]  # what the scan read (the whole share if short)
        try:
            return await self.server.read_mutable(
                self.reader.storage_index, share_number, start, length
            )
        except SERVER_FAILURES:
            self.probe.server_failures += 1
            raise

    async def advise_corrupt_immutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        si = self.reader.storage_index
        try:
            header = await self.server.read_mutable(si, share_number, 0, HEADER_SIZE)
        except SERVER_FAILURES:
            self.probe.server_failures += 1  # cannot tell a new version from rot: say nothing
            return
        try:
            now: MutableVersion | None = parse_header(self.reader, header)
        except CorruptShare:
            now = None  # replaced by something unsigned: the next scan reports it
        if now != self.version:
            self.probe.changed = True
            return
        await self.server.advise_corrupt_mutable(si, share_number, reason)


@define
class Scan:
    """What a scan found: each valid version and where its shares are.

    ``unrecoverable`` holds the versions a read tried and proved cannot be
    rebuilt (too few shares, or corrupt ones), as opposed to ones it could not
    read because servers failed or shares changed meanwhile.
    """

    versions: dict[MutableVersion, dict[IStorageClient, set[int]]] = field(factory=dict)
    shares_by_server: dict[IStorageClient, set[int]] = field(factory=dict)
    reachable: set[IStorageClient] = field(factory=set)
    unrecoverable: set[MutableVersion] = field(factory=set)
    prefixes: dict[tuple[IStorageClient, int], bytes] = field(factory=dict, repr=False)
    """(server, share) → the first :data:`SCAN_READ` bytes read, when its header was valid."""
    failures: list[str] = field(factory=list)
    """Why requests of the scan failed (secret-free), for the error when nothing is found."""

    def newest_first(self) -> list[MutableVersion]:
        """Every version found, in the order readers prefer them."""
        return sorted(self.versions, key=MutableVersion.rank, reverse=True)

    def share_numbers(self, version: MutableVersion) -> set[int]:
        """The distinct share numbers of ``version`` that were found."""
        return set().union(*self.versions.get(version, {}).values())


async def scan_shares(servers: Sequence[IStorageClient], reader: MutableReadCap) -> Scan:
    """Every share's header (and, for a small object, the rest): which valid versions are where."""
    si = reader.storage_index
    ring = permuted_ring(servers, si)
    listed = await gather(s.list_mutable(si) for s in ring)
    scan = Scan()
    scan.failures.extend(_why(e) for e in listed if isinstance(e, Exception))
    scan.reachable.update(
        s for s, shares in zip(ring, listed, strict=True) if isinstance(shares, frozenset)
    )
    wanted = [
        (server, share)
        for server, shares in zip(ring, listed, strict=True)
        if isinstance(shares, frozenset)
        for share in sorted(shares)
    ]
    for server, share in wanted:
        scan.shares_by_server.setdefault(server, set()).add(share)
    prefixes = await gather(s.read_mutable(si, sh, 0, SCAN_READ) for s, sh in wanted)
    for (server, share), prefix in zip(wanted, prefixes, strict=True):
        if not isinstance(prefix, bytes):
            if isinstance(prefix, Exception):
                scan.failures.append(_why(prefix))
            continue
        try:
            version: MutableVersion | None = parse_header(reader, prefix)
            scan.prefixes[server, share] = prefix
        except CorruptShare:
            version = await _check_header(reader, server, share, prefix[:HEADER_SIZE])
        if version is not None:
            scan.versions.setdefault(version, {}).setdefault(server, set()).add(share)
    return scan


async def _check_header(
    reader: MutableReadCap, server: IStorageClient, share: int, header: bytes
) -> MutableVersion | None:
    """The version a scanned header holds, or None (reporting it when it is really corrupt).

    A header that fails its check is read again first: when it changed
    meanwhile (a torn read of a share being replaced) the new one is used.
    """
    si = reader.storage_index
    try:
        return parse_header(reader, header)
    except CorruptShare as e:
        reason = str(e)
    try:
        again = await server.read_mutable(si, share, 0, HEADER_SIZE)
        if again != header:
            return parse_header(reader, again)
        await server.advise_corrupt_mutable(si, share, reason)
    except (*SERVER_FAILURES, CorruptShare):
        pass
    return None


async def read_newest(
    servers: Sequence[IStorageClient], reader: MutableReadCap, scan: Scan | None = None
) -> tuple[bytes, MutableVersion, Scan]:
    """Scan (unless given a fresh ``scan``), then read the preferred version that can be
    rebuilt; rescan if shares change."""
    errors: list[str] = []
    for _ in range(READ_ATTEMPTS):
        if scan is None:
            scan = await scan_shares(servers, reader)
        errors = []
        changed = False
        for version in scan.newest_first():
            probe = _ReadProbe()
            try:
                return await _read_version(reader, scan, version, probe), version, scan
            except NotEnoughShares as e:
                if probe.changed:
                    changed = True
                    break
                if not probe.server_failures:
                    scan.unrecoverable.add(version)
                errors.append(str(e))
        if not changed:
            break
        scan = None  # shares changed under the read: scan again
    else:
        errors.append(
            f"its shares were replaced by other writers during each of {READ_ATTEMPTS}"
            " attempts to read it"
        )
    si = b32encode(reader.storage_index)
    detail = "; ".join(errors) or _nothing_found(scan)
    if changed:
        raise SharesKeptChanging(f"cannot read the mutable object {si}: {detail}")
    raise NotEnoughShares(f"cannot read the mutable object {si}: {detail}")


async def _read_version(
    reader: MutableReadCap, scan: Scan, version: MutableVersion, probe: _ReadProbe
) -> bytes:
    views = [
        _VersionView(
            s,
            shares,
            reader,
            version,
            probe,
            {n: scan.prefixes[s, n] for n in shares if (s, n) in scan.prefixes},
        )
        for s, shares in scan.versions[version].items()
    ]
    cap = ImmutableReadCap(
        mutable_data_key(reader.read_key, version.salt),
        version.ueb_hash,
        version.k,
        version.n,
        version.size,
    )
    # The views provide the three reading methods ImmutableReader uses.
    immutable = ImmutableReader(cap, cast(Sequence[IStorageClient], views))
    return await immutable.read(0, version.size)


def _why(error: Exception) -> str:
    """A server's failure, short and secret-free (an OSError by its errno's text alone: its
    file name is the server's business)."""
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return (type(error).__name__ + (f": {error}" if str(error) else ""))[:200]


def _nothing_found(scan: Scan | None) -> str:
    """What to say when a read found no version it could rebuild and nothing failed later."""
    if scan is None or not scan.failures:
        return "no share with a valid signature was found"
    reasons = "; ".join(dict.fromkeys(scan.failures))
    return f"no share was found, and {len(scan.failures)} storage request(s) failed ({reasons})"
