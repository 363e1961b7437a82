"""Mutable objects: signed versions of encrypted, erasure-coded contents, written with test-and-set.

A version is ``(sequence number, salt, UEB hash)``. Its contents are encoded
exactly like an immutable file (see :mod:`gateway.objects.immutable_format`)
under a key derived from the read key and the version's fresh random salt. Each
share is that immutable-format share preceded by a signed header::

    magic "GG-MUT1\\n" (8) | seqnum (u64) | salt (32) | UEB hash (32)
    | k (u16) | n (u16) | segment size (u32) | size (u64) | Ed25519 signature (64)

The signature covers the storage index and every header field before it, so a
server cannot roll a share back to another object's version. Writers replace
each share with one read-test-write per server whose test compares the old
``(seqnum, salt, UEB hash)`` bytes (or the share's absence): a writer that lost a
race gets :class:`UncoordinatedWriteError`. Contents are held in memory whole
(mutables are directories and small files).

Readers take the highest version with a valid signature that they can rebuild:
highest sequence number, ties (two writers that each reached part of the grid
with the same sequence number, e.g. during a partition) broken by the higher
root (UEB) hash, so every reader picks the same one.

A writer publishes above the highest sequence number it saw, testing each share
against the version that share held when it was scanned, and rewrites every
share it saw (so the next write after a split leaves one version everywhere). It
refuses (lost race) only when a version readers would prefer to the one it
wrote against could have been read: one with ``k`` distinct shares that was not
proven unrecoverable. A newer version with fewer than ``k`` shares (a failed or
in-flight publish) does not block it; if that publish is still in flight, the
test vectors make one of the two writers lose.

A writer that already holds the contents and the share map of the version it
last read or wrote (a :class:`KnownState`) may skip the read: its publish then
tests each share against that version, so if anyone changed a share since, the
write changes nothing there and loses the race (:meth:`MutableClient.update`);
the caller then reads afresh. Directories do this for changes made shortly
after their previous one.

A read overlapping another writer's publish can find shares replaced between
its header scan and its block reads. A share that fails verification has its
header read again: if it now holds another version, the read scans again and
retries (a bounded number of times); only a share whose header is unchanged is
reported to its server as corrupt.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

import nacl.exceptions
import nacl.signing
from attrs import define, field, frozen

from gateway.grid.interfaces import IStorageClient
from gateway.objects import immutable_format as fmt
from gateway.objects.caps import ImmutableReadCap, MutableReadCap, MutableWriteCap, b32encode
from gateway.objects.concurrency import gather
from gateway.objects.crypto import (
    GatewaySecrets,
    mutable_data_key,
    random_key,
    write_enabler,
    write_enabler_master,
)
from gateway.objects.errors import (
    CorruptShare,
    NotEnoughShares,
    SharesKeptChanging,
    UncoordinatedWriteError,
    UploadUnhappy,
)
from gateway.objects.immutable import SERVER_FAILURES, ImmutableReader
from gateway.objects.placement import happiness, permuted_ring
from storage.interfaces import TestVector, TestWriteVectors, WriteVector

_HEADER = struct.Struct(">8sQ32s32sHHIQ64s")
MAGIC = b"GG-MUT1\n"
HEADER_SIZE = _HEADER.size

SCAN_READ = 64 * 1024
"""Bytes of each share a scan reads: the header and, for small objects (directories), the rest.

Reading the whole share of a small object in the scan's one request saves the
reader its further round trips, and a share read in one request is never torn
between two versions, so reads overlapping other writers' publishes fail less.
"""
_SIGNED = HEADER_SIZE - 64
_SIG_DOMAIN = b"GG-MUT1-SIG\n"

READ_ATTEMPTS = 6
"""How many scans a read makes when shares keep being replaced under it by another writer."""


@frozen
class MutableVersion:
    """One signed version of a mutable object (what a writer tests against)."""

    seqnum: int
    salt: bytes = field(repr=False)
    ueb_hash: bytes
    k: int
    n: int
    segment_size: int
    size: int

    def version_bytes(self) -> bytes:
        """The header bytes a test vector compares (seqnum, salt, UEB hash)."""
        return struct.pack(">Q32s32s", self.seqnum, self.salt, self.ueb_hash)

    def rank(self) -> tuple[int, bytes, bytes]:
        """The order readers prefer versions in: sequence number, then root hash (then salt)."""
        return (self.seqnum, self.ueb_hash, self.salt)


def _signed_part(version: MutableVersion) -> bytes:
    return _HEADER.pack(
        MAGIC,
        version.seqnum,
        version.salt,
        version.ueb_hash,
        version.k,
        version.n,
        version.segment_size,
        version.size,
        b"\0" * 64,
    )[:_SIGNED]


def pack_header(writer: MutableWriteCap, version: MutableVersion) -> bytes:
    """The signed header that starts every share of ``version``."""
    signed = _signed_part(version)
    signature = writer.signing_key.sign(_SIG_DOMAIN + writer.storage_index + signed).signature
    return signed + signature


def parse_header(reader: MutableReadCap, data: bytes) -> MutableVersion:
    """Check a share header's signature against the cap, raising CorruptShare when it fails."""
    if len(data) < HEADER_SIZE:
        raise CorruptShare("the mutable share is too short for its header")
    magic, seqnum, salt, ueb_hash, k, n, segsize, size, signature = _HEADER.unpack(
        data[:HEADER_SIZE]
    )
    if magic != MAGIC:
        raise CorruptShare("the mutable share has an unknown format")
    try:
        nacl.signing.VerifyKey(reader.public_key).verify(
            _SIG_DOMAIN + reader.storage_index + data[:_SIGNED], signature
        )
    except nacl.exceptions.BadSignatureError:
        raise CorruptShare("the mutable share's signature is invalid") from None
    return MutableVersion(seqnum, salt, ueb_hash, k, n, segsize, size)


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
class _Scan:
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

    def newest_first(self) -> list[MutableVersion]:
        """Every version found, in the order readers prefer them."""
        return sorted(self.versions, key=MutableVersion.rank, reverse=True)

    def share_numbers(self, version: MutableVersion) -> set[int]:
        """The distinct share numbers of ``version`` that were found."""
        return set().union(*self.versions.get(version, {}).values())


@define(eq=False)
class KnownState:
    """One version as this client last read or published it: contents and where its shares are.

    A later change can be written against it without reading again (see
    :meth:`MutableClient.update`).
    """

    data: bytes = field(repr=False)
    version: MutableVersion
    scan: _Scan = field(repr=False)


@define(eq=False)
class MutableClient:
    """Creates, reads and writes mutable objects on a set of storage servers."""

    servers: Sequence[IStorageClient]
    secrets: GatewaySecrets
    params: fmt.EncodingParams = fmt.EncodingParams()

    async def create(
        self, contents: bytes, writer: MutableWriteCap | None = None
    ) -> MutableWriteCap:
        """A new mutable object holding ``contents`` (sequence number 1).

        With ``writer`` the object is created under that (pre-generated) key; a
        server already holding a share of it makes this raise UncoordinatedWriteError.
        """
        writer = writer or MutableWriteCap.generate()
        await self._publish(writer, contents, None, _Scan())
        return writer

    async def create_known(
        self, contents: bytes, writer: MutableWriteCap | None = None
    ) -> tuple[MutableWriteCap, KnownState]:
        """Like :meth:`create`, also returning the state just published."""
        writer = writer or MutableWriteCap.generate()
        return writer, await self._publish(writer, contents, None, _Scan())

    async def read_known(self, cap: MutableReadCap | MutableWriteCap) -> KnownState:
        """The newest readable version, as a state a later :meth:`update` can start from."""
        reader = cap.get_read_cap() if isinstance(cap, MutableWriteCap) else cap
        data, version, scan = await self._read(reader)
        return KnownState(data, version, scan)

    async def read(self, cap: MutableReadCap | MutableWriteCap) -> tuple[bytes, MutableVersion]:
        """The newest readable version's contents, and that version (to write against)."""
        reader = cap.get_read_cap() if isinstance(cap, MutableWriteCap) else cap
        data, version, _ = await self._read(reader)
        return data, version

    async def write(
        self, cap: MutableWriteCap, contents: bytes, expected: MutableVersion
    ) -> MutableVersion:
        """Replace the contents, if the object is still at ``expected``.

        Raises UncoordinatedWriteError when another writer got there first.
        """
        scan = await self._scan(cap.get_read_cap())
        return (await self._publish(cap, contents, expected, scan)).version

    async def update(
        self,
        cap: MutableWriteCap,
        change: Callable[[bytes], bytes | Awaitable[bytes]],
        known: KnownState | None = None,
    ) -> KnownState:
        """One change and publish: of ``known``'s contents when given, else of a fresh read.

        Raises UncoordinatedWriteError when another writer got there first (for
        ``known``: when any share no longer holds its version).
        """
        if known is None:
            data, version, scan = await self._read(cap.get_read_cap())
            known = KnownState(data, version, scan)
        return await self._publish(cap, await _apply(change, known.data), known.version, known.scan)

    async def modify(
        self,
        cap: MutableWriteCap,
        change: Callable[[bytes], bytes | Awaitable[bytes]],
        attempts: int = 8,
    ) -> MutableVersion:
        """Read, apply ``change`` and write; on a lost race re-read and re-apply."""
        for _ in range(attempts - 1):
            try:
                return await self._modify_once(cap, change)
            except UncoordinatedWriteError:
                continue
        return await self._modify_once(cap, change)

    async def _modify_once(
        self, cap: MutableWriteCap, change: Callable[[bytes], bytes | Awaitable[bytes]]
    ) -> MutableVersion:
        return (await self.update(cap, change)).version

    # -- reading --

    async def _scan(self, reader: MutableReadCap) -> _Scan:
        si = reader.storage_index
        ring = permuted_ring(self.servers, si)
        listed = await gather(s.list_mutable(si) for s in ring)
        scan = _Scan()
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
                continue
            try:
                version: MutableVersion | None = parse_header(reader, prefix)
                scan.prefixes[server, share] = prefix
            except CorruptShare:
                version = await self._check_header(reader, server, share, prefix[:HEADER_SIZE])
            if version is not None:
                scan.versions.setdefault(version, {}).setdefault(server, set()).add(share)
        return scan

    async def _check_header(
        self, reader: MutableReadCap, server: IStorageClient, share: int, header: bytes
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

    async def _read(self, reader: MutableReadCap) -> tuple[bytes, MutableVersion, _Scan]:
        """Scan, then read the preferred version that can be rebuilt; rescan if shares change."""
        errors: list[str] = []
        for _ in range(READ_ATTEMPTS):
            scan = await self._scan(reader)
            errors = []
            changed = False
            for version in scan.newest_first():
                probe = _ReadProbe()
                try:
                    return await self._read_version(reader, scan, version, probe), version, scan
                except NotEnoughShares as e:
                    if probe.changed:
                        changed = True
                        break
                    if not probe.server_failures:
                        scan.unrecoverable.add(version)
                    errors.append(str(e))
            if not changed:
                break
        else:
            errors.append(
                f"its shares were replaced by other writers during each of {READ_ATTEMPTS}"
                " attempts to read it"
            )
        si = b32encode(reader.storage_index)
        detail = "; ".join(errors) or "no share with a valid signature was found"
        if changed:
            raise SharesKeptChanging(f"cannot read the mutable object {si}: {detail}")
        raise NotEnoughShares(f"cannot read the mutable object {si}: {detail}")

    async def _read_version(
        self, reader: MutableReadCap, scan: _Scan, version: MutableVersion, probe: _ReadProbe
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

    # -- writing --

    async def _publish(
        self,
        writer: MutableWriteCap,
        contents: bytes,
        expected: MutableVersion | None,
        scan: _Scan,
    ) -> KnownState:
        params = self.params
        si = writer.storage_index
        if any(
            (expected is None or v.rank() > expected.rank())
            and v not in scan.unrecoverable
            and len(scan.share_numbers(v)) >= v.k
            for v in scan.versions
        ):
            raise _lost_race(si)  # readers would prefer a version we did not write against
        ring = permuted_ring(self.servers, si)
        if not ring:
            raise UploadUnhappy("there are no storage servers to write to")
        salt = random_key()
        key = mutable_data_key(writer.get_read_cap().read_key, salt)
        encoded, shares = fmt.encode_bytes(contents, key, params)
        seen = [v.seqnum for v in scan.versions]
        version = MutableVersion(
            max([expected.seqnum if expected else 0, *seen]) + 1,
            salt,
            encoded.ueb_hash,
            params.k,
            params.n,
            params.segment_size,
            len(contents),
        )
        header = pack_header(writer, version)
        targets = _targets(scan, ring, params.n)
        master = write_enabler_master(writer.signing_seed)

        async def send(server: IStorageClient, tests: dict[int, TestVector]) -> bool:
            sid = server.server_id
            vectors = {
                share: TestWriteVectors(
                    test=(test,),
                    write=(WriteVector(0, header + shares[share]),),
                    new_length=HEADER_SIZE + len(shares[share]),
                )
                for share, test in tests.items()
            }
            result = await server.read_test_write(
                si,
                write_enabler(master, sid, si),
                self.secrets.renew_secret(sid, si),
                self.secrets.cancel_secret(sid, si),
                vectors,
                (),
            )
            return result.success

        order = list(targets.items())
        results = await gather(send(s, tests) for s, tests in order)
        if any(r is False for r in results):
            raise _lost_race(si)
        holders = {s: set(tests) for (s, tests), r in zip(order, results, strict=True) if r is True}
        if happiness(holders) < params.happy:
            raise UploadUnhappy(
                f"the new version of mutable object {b32encode(si)} reached only"
                f" {happiness(holders)} server(s), {params.happy} are required"
            )
        after = _Scan(reachable=scan.reachable | set(holders))
        for server, held in holders.items():
            after.versions.setdefault(version, {})[server] = set(held)
            after.shares_by_server[server] = set(held)
        return KnownState(contents, version, after)


async def _apply(change: Callable[[bytes], bytes | Awaitable[bytes]], data: bytes) -> bytes:
    """The new contents ``change`` makes of ``data`` (awaited if it returns an awaitable)."""
    new = change(data)
    return new if isinstance(new, bytes) else await new


def _targets(
    scan: _Scan, ring: Sequence[IStorageClient], n: int
) -> dict[IStorageClient, dict[int, TestVector]]:
    """Where each share of a new version goes, and what each write tests first.

    Every share found holding a valid version (of any sequence number) is
    replaced in place, tested against exactly that version. Share numbers found
    nowhere go round the ring, servers that answered the scan and hold the fewest
    shares first, each tested for absence. A share whose header was unreadable
    or corrupt is left alone. Then, while a server that answered holds nothing
    and another would get two shares or more, one of those moves to the empty
    server (the old copy is left behind at its older version): a version
    published while a server was down spread over fewer servers, and the next
    one spreads out again once it is back.
    """
    targets: dict[IStorageClient, dict[int, TestVector]] = {}
    for version, where in scan.versions.items():
        specimen = version.version_bytes()
        for server, held in where.items():
            for share in held:
                if share < n:
                    targets.setdefault(server, {})[share] = TestVector(8, len(specimen), specimen)
    placed = {share for tests in targets.values() for share in tests}
    homeless = [j for j in range(n) if j not in placed]
    order = sorted(ring, key=lambda s: (s not in scan.reachable, len(targets.get(s, {}))))
    for i, share in enumerate(homeless):
        server = order[i % len(order)]
        if share not in scan.shares_by_server.get(server, set()):
            targets.setdefault(server, {})[share] = TestVector(0, 1, b"")
    empty = [s for s in ring if s in scan.reachable and not scan.shares_by_server.get(s)]
    for server in empty:
        if server in targets:
            continue
        crowded = max(targets, key=lambda s: len(targets[s]), default=None)
        if crowded is None or len(targets[crowded]) < 2:
            break
        share = max(targets[crowded])
        del targets[crowded][share]
        targets[server] = {share: TestVector(0, 1, b"")}
    return targets


def _lost_race(storage_index: bytes) -> UncoordinatedWriteError:
    return UncoordinatedWriteError(
        f"another writer changed the mutable object {b32encode(storage_index)} since it was"
        " read; re-read it and apply the change again"
    )
