"""Mutable objects: signed versions of encrypted, erasure-coded contents, written with test-and-set.

A version is ``(sequence number, salt, UEB hash)``; each share is an
immutable-format share preceded by a signed header (the format is
:mod:`gateway.objects.mutable_format`'s). Writers replace each share with one
read-test-write per server whose test compares the old ``(seqnum, salt, UEB
hash)`` bytes (or the share's absence): a writer that lost a race gets
:class:`UncoordinatedWriteError`. Contents are held in memory whole (mutables
are directories and small files).

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

Reading, and the order in which readers prefer versions, is
:mod:`gateway.objects.mutable_read`'s; :class:`MutableClient` here creates,
reads and writes. The share format's public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from attrs import define, field

from gateway.grid.interfaces import IStorageClient
from gateway.objects import immutable_format as fmt
from gateway.objects.caps import MutableReadCap, MutableWriteCap, b32encode
from gateway.objects.concurrency import gather
from gateway.objects.crypto import (
    GatewaySecrets,
    mutable_data_key,
    random_key,
    write_enabler,
    write_enabler_master,
)
from gateway.objects.errors import UncoordinatedWriteError, UploadUnhappy
from gateway.objects.mutable_format import (
    HEADER_SIZE,
    MAGIC,
    MutableVersion,
    pack_header,
    parse_header,
)
from gateway.objects.mutable_read import Scan, read_newest, scan_shares
from gateway.objects.placement import happiness, permuted_ring
from storage.interfaces import TestVector, TestWriteVectors, WriteVector

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "KnownState",
    "MutableClient",
    "MutableVersion",
    "pack_header",
    "parse_header",
]


@define(eq=False)
class KnownState:
    """One version as this client last read or published it: contents and where its shares are.

    A later change can be written against it without reading again (see
    :meth:`MutableClient.update`).
    """

    data: bytes = field(repr=False)
    version: MutableVersion
    scan: Scan = field(repr=False)


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
        await self._publish(writer, contents, None, Scan())
        return writer

    async def create_known(
        self, contents: bytes, writer: MutableWriteCap | None = None
    ) -> tuple[MutableWriteCap, KnownState]:
        """Like :meth:`create`, also returning the state just published."""
        writer = writer or MutableWriteCap.generate()
        return writer, await self._publish(writer, contents, None, Scan())

    async def read_known(
        self, cap: MutableReadCap | MutableWriteCap, known: KnownState | None = None
    ) -> KnownState:
        """The newest readable version, as a state a later :meth:`update` can start from.

        With ``known`` (a version read or published before), the servers are scanned and,
        when its version is still the newest found and enough of its shares are there,
        ``known``'s contents are kept: a revalidation (one small read per share) instead of
        reading, checking and decrypting the contents again. The versions' signatures and
        the contents' hashes were checked when ``known`` was read, and a version names its
        contents' hash, so the same version means the same contents.
        """
        reader = cap.get_read_cap() if isinstance(cap, MutableWriteCap) else cap
        scan: Scan | None = None
        if known is not None:
            scan = await scan_shares(self.servers, reader)
            newest = scan.newest_first()
            if (
                newest
                and newest[0] == known.version
                and len(scan.share_numbers(known.version)) >= known.version.k
            ):
                return KnownState(known.data, known.version, scan)
        data, version, scan = await read_newest(self.servers, reader, scan)
        return KnownState(data, version, scan)

    async def read(self, cap: MutableReadCap | MutableWriteCap) -> tuple[bytes, MutableVersion]:
        """The newest readable version's contents, and that version (to write against)."""
        reader = cap.get_read_cap() if isinstance(cap, MutableWriteCap) else cap
        data, version, _ = await read_newest(self.servers, reader)
        return data, version

    async def write(
        self, cap: MutableWriteCap, contents: bytes, expected: MutableVersion
    ) -> MutableVersion:
        """Replace the contents, if the object is still at ``expected``.

        Raises UncoordinatedWriteError when another writer got there first.
        """
        scan = await scan_shares(self.servers, cap.get_read_cap())
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
            data, version, scan = await read_newest(self.servers, cap.get_read_cap())
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

    async def _publish(
        self,
        writer: MutableWriteCap,
        contents: bytes,
        expected: MutableVersion | None,
        scan: Scan,
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
        after = Scan(reachable=scan.reachable | set(holders))
        for server, held in holders.items():
            after.versions.setdefault(version, {})[server] = set(held)
            after.shares_by_server[server] = set(held)
        return KnownState(contents, version, after)


async def _apply(change: Callable[[bytes], bytes | Awaitable[bytes]], data: bytes) -> bytes:
    """The new contents ``change`` makes of ``data`` (awaited if it returns an awaitable)."""
    new = change(data)
    return new if isinstance(new, bytes) else await new


def _targets(
    scan: Scan, ring: Sequence[IStorageClient], n: int
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
