"""Repair: re-create an object's missing or corrupt shares until it is healthy again.

Immutable files (needs the read cap): the file is read from its good shares
(shares a verify found corrupt are hidden from the reader), re-encoded with the
same key and the same segment size, which reproduces every share byte for byte
(encryption and erasure coding are deterministic), and only the missing share
numbers are written. Before any share is completed the re-encoding is checked to
yield the very cap being repaired. New shares go to servers in permuted-ring
order, those holding the fewest shares first; a server never receives a share
number it already holds (a corrupt immutable share cannot be overwritten through
the protocol, so its replacement lives on another server and the corrupt copy
stays, reported by every verify). When all ``n`` shares exist but happiness is
short, extra copies go to servers holding no usable share.

Mutable objects and directories (needs the write cap): the newest readable
version's contents are republished through :class:`MutableClient` as a new
version (sequence number + 1, fresh salt, same ``k`` and ``n``). Every share is
rewritten with test-and-set, so a concurrent writer is never overwritten (the
repair then reports the lost race). This is what Tahoe-LAFS's mutable repairer
does too. Shares of older versions that the publish did not reach (servers that
missed an earlier write) are then overwritten, again with test-and-set, by the
same-numbered share of the new version, re-encoded byte for byte from its
signed header's salt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from attrs import define, evolve, field, frozen

from gateway.grid.interfaces import IStorageClient
from gateway.objects import immutable_format as fmt
from gateway.objects import mutable
from gateway.objects.caps import (
    Capability,
    ChunkedCap,
    ChunkedVerifyCap,
    DirectoryWriteCap,
    ImmutableReadCap,
    ImmutableVerifyCap,
    LiteralCap,
    MutableWriteCap,
    b32encode,
)
from gateway.objects.checker import CheckResult, ShareStatus, check
from gateway.objects.concurrency import gather
from gateway.objects.crypto import (
    GatewaySecrets,
    mutable_data_key,
    write_enabler,
    write_enabler_master,
)
from gateway.objects.errors import (
    CorruptObject,
    CorruptShare,
    NotEnoughShares,
    NotWritable,
    UncoordinatedWriteError,
    UploadUnhappy,
)
from gateway.objects.immutable import SERVER_FAILURES, ImmutableReader
from gateway.objects.mutable import MutableClient
from gateway.objects.placement import happiness, permuted_ring
from storage.interfaces import TestVector, TestWriteVectors, WriteVector

DEFAULT_PARAMS = fmt.EncodingParams()


@frozen
class PlacedShare:
    """A share the repair wrote onto a server."""

    share_number: int
    server: IStorageClient = field(eq=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (server id in base32)."""
        return {
            "share_number": self.share_number,
            "server_id": b32encode(self.server.server_id),
            "nickname": str(self.server.nickname),
        }


@frozen
class RepairResult:
    """What a repair found, did, and left behind."""

    before: CheckResult
    after: CheckResult
    attempted: bool
    """Whether any share was written."""
    method: str
    """``none``, ``re-encoded`` (immutable) or ``republished`` (mutable)."""
    placed: tuple[PlacedShare, ...] = ()
    failures: tuple[str, ...] = ()
    """What went wrong on the way (servers refusing or failing), for the operator."""
    new_seqnum: int | None = None
    """The version a mutable repair published."""

    @property
    def ok(self) -> bool:
        """The object is healthy after the repair."""
        return self.after.healthy

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the CLI and status page (no capabilities)."""
        return {
            "attempted": self.attempted,
            "method": self.method,
            "healthy_after": self.ok,
            "shares_before": self.before.shares_good,
            "shares_after": self.after.shares_good,
            "placed": [p.to_json() for p in self.placed],
            "failures": list(self.failures),
            "new_seqnum": self.new_seqnum,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
        }


async def repair(
    cap: Capability,
    servers: Sequence[IStorageClient],
    secrets: GatewaySecrets,
    params: fmt.EncodingParams = DEFAULT_PARAMS,
    *,
    verify: bool = True,
    before: CheckResult | None = None,
) -> RepairResult:
    """Make one object healthy again, re-creating missing and corrupt shares up to ``n``.

    Checks first (verifying every block unless ``verify`` is False) unless a
    check result is given. ``params.happy`` (at most ``n``) is the happiness to
    reach; for a mutable object ``params.segment_size`` shapes the new version.
    Raises NotEnoughShares when too few shares remain to rebuild the object and
    NotWritable when the cap is too weak (an immutable needs its read cap, a
    mutable its write cap). Server failures during the repair are listed in the
    result's ``failures``.
    """
    if before is None:
        before = await check(cap, servers, verify=verify, happy=params.happy)
    if isinstance(cap, LiteralCap):
        return RepairResult(before, before, False, "none")
    if isinstance(cap, (ImmutableReadCap, ImmutableVerifyCap)):
        return await _ImmutableRepair(cap, servers, secrets, before).run()
    if isinstance(cap, (ChunkedCap, ChunkedVerifyCap)):
        # One node of a chunk tree, an immutable object (deep_check reaches the others).
        return await _ImmutableRepair(cap.node, servers, secrets, before).run()
    return await _repair_mutable(cap, servers, secrets, params, before)


def _unrecoverable(before: CheckResult, what: str) -> NotEnoughShares:
    si = b32encode(before.storage_index) if before.storage_index else "?"
    return NotEnoughShares(
        f"cannot repair the {what} with storage index {si}: {before.k} intact shares are"
        f" needed to rebuild it, only {before.shares_good} were found"
        f" ({before.shares_found} share(s) listed by {before.servers_queried} server(s),"
        f" {len(before.corrupt_shares)} corrupt, {len(before.unreachable)} server(s) unreachable)"
    )


# --- immutable ----------------------------------------------------------------------


@define(eq=False)
class _WithoutShares:
    """A server as the reader sees it during a repair: its known-corrupt shares hidden."""

    server: IStorageClient
    hidden: frozenset[int]

    @property
    def server_id(self) -> bytes:
        return cast(bytes, self.server.server_id)

    async def list_immutable(self, storage_index: bytes) -> frozenset[int]:
        return cast(frozenset[int], await self.server.list_immutable(storage_index)) - self.hidden

    async def read_immutable(
        self, storage_index: bytes, share_number: int, offset: int, length: int
    ) -> bytes:
        return cast(
            bytes, await self.server.read_immutable(storage_index, share_number, offset, length)
        )

    async def advise_corrupt_immutable(
        self, storage_index: bytes, share_number: int, reason: str
    ) -> None:
        await self.server.advise_corrupt_immutable(storage_index, share_number, reason)


@define(eq=False)
class _ImmutableRepair:
    """One repair of one immutable file: plan, allocate, re-encode, write, re-check."""

    cap: ImmutableReadCap | ImmutableVerifyCap
    servers: Sequence[IStorageClient]
    secrets: GatewaySecrets
    before: CheckResult
    held: dict[IStorageClient, set[int]] = field(factory=dict)
    """Every share number each server holds (good or not) or has accepted from us."""
    allocated: dict[IStorageClient, set[int]] = field(factory=dict)
    failures: list[str] = field(factory=list)
    dead: set[IStorageClient] = field(factory=set)

    @property
    def si(self) -> bytes:
        return self.cap.storage_index

    async def run(self) -> RepairResult:
        before = self.before
        missing = sorted(set(range(self.cap.n)) - before.good_share_numbers)
        if not missing and before.happiness >= (before.happy or 0):
            return RepairResult(before, before, False, "none")
        if not isinstance(self.cap, ImmutableReadCap):
            raise NotWritable(
                "repairing an immutable file needs its read cap: a verify cap can check"
                " and verify it but not re-create its shares"
            )
        if not before.recoverable:
            raise _unrecoverable(before, "file")
        cap = self.cap
        for report in before.shares:
            self.held.setdefault(report.server, set()).add(report.share_number)
        self.dead.update(before.unreachable)
        layout = await self._layout(cap)
        for share in missing:
            await self._place(share, layout.share_size)
        await self._add_copies_for_happiness(layout.share_size)
        if not self.allocated:
            after = await self._after()
            return RepairResult(before, after, False, "none", (), tuple(self.failures))
        try:
            await self._encode_and_write(cap, layout)
        except BaseException:
            await self._abort_all()
            raise
        placed = tuple(
            PlacedShare(share, server)
            for server in permuted_ring(self.allocated, self.si)
            for share in sorted(self.allocated[server])
        )
        after = await self._after()
        return RepairResult(before, after, bool(placed), "re-encoded", placed, tuple(self.failures))

    async def _after(self) -> CheckResult:
        return await check(
            self.cap, self.servers, verify=self.before.verified, happy=self.before.happy
        )

    async def _layout(self, cap: ImmutableReadCap) -> fmt.ShareLayout:
        """The file's share layout, from the first share whose prefix verifies."""
        for report in self.before.current_shares:
            try:
                prefix = await report.server.read_immutable(
                    self.si, report.share_number, 0, fmt.prefix_length(cap.n)
                )
                return fmt.verify_prefix(cap, report.share_number, prefix).layout
            except (CorruptShare, CorruptObject, *SERVER_FAILURES):
                continue
        raise _unrecoverable(self.before, "file")

    # -- placement --

    def _candidates(self, share: int) -> list[IStorageClient]:
        """Live servers without ``share``: fewest shares first, ring order among equals."""
        ring = [s for s in permuted_ring(self.servers, self.si) if s not in self.dead]
        return sorted(
            (s for s in ring if share not in self.held.get(s, set())),
            key=lambda s: len(self.held.get(s, set())),
        )

    async def _place(self, share: int, share_size: int) -> bool:
        """Allocate ``share`` on the best server that accepts it."""
        for server in self._candidates(share):
            if await self._allocate(server, share, share_size):
                return True
        self.failures.append(f"no server would accept share {share}")
        return False

    async def _allocate(self, server: IStorageClient, share: int, share_size: int) -> bool:
        sid = server.server_id
        try:
            result = await server.allocate_buckets(
                self.si,
                frozenset({share}),
                share_size,
                self.secrets.upload_secret(sid, self.si),
                self.secrets.renew_secret(sid, self.si),
                self.secrets.cancel_secret(sid, self.si),
            )
        except SERVER_FAILURES as e:
            self.dead.add(server)
            self.failures.append(f"{server.nickname} failed to allocate share {share}: {e}")
            return False
        self.held.setdefault(server, set()).update(result.already_have)
        if share not in result.allocated:
            return False
        self.held[server].add(share)
        self.allocated.setdefault(server, set()).add(share)
        return True

    async def _add_copies_for_happiness(self, share_size: int) -> None:
        """Copy shares onto servers holding nothing while that raises happiness to ``happy``."""
        good: dict[IStorageClient, set[int]] = {}
        for holder, shares in self.before.holders.items():
            good[holder] = set(shares)
        for server, shares in self.allocated.items():
            good.setdefault(server, set()).update(shares)
        happy = self.before.happy or 0
        for server in permuted_ring(self.servers, self.si):
            if happiness(good) >= happy:
                return
            # A server whose only shares are corrupt counts as holding nothing: it may
            # take a copy of another share number (never one it already holds).
            if server in self.dead or good.get(server):
                continue
            held = self.held.get(server, set())
            current = happiness(good)
            for share in range(self.cap.n):
                if share in held:
                    continue
                if happiness({**good, server: {share}}) > current:
                    if await self._allocate(server, share, share_size):
                        good[server] = {share}
                    break

    # -- writing --

    async def _encode_and_write(self, cap: ImmutableReadCap, layout: fmt.ShareLayout) -> None:
        corrupt: dict[IStorageClient, set[int]] = {}
        for report in self.before.shares:
            if report.status is ShareStatus.CORRUPT:
                corrupt.setdefault(report.server, set()).add(report.share_number)
        views = [_WithoutShares(s, frozenset(corrupt.get(s, ()))) for s in self.servers]
        # The views provide the three reading methods ImmutableReader uses.
        reader = ImmutableReader(cap, cast(Sequence[IStorageClient], views))
        builder = fmt.ShareSetBuilder(cap.key, layout)
        segment = 0
        async for plaintext in reader.iter_range(0, cap.size):
            await self._write(builder.add_segment(plaintext), layout.block_offset(segment))
            segment += 1
        rebuilt, prefixes = builder.finish()
        if rebuilt != cap:
            raise CorruptObject(
                f"re-encoding the file with storage index {b32encode(self.si)} did not reproduce"
                " its capability; no share was completed"
            )
        await self._write(prefixes, 0)

    async def _write(self, pieces: Sequence[bytes], offset: int) -> None:
        """Write each allocated share's piece at ``offset``; drop servers that fail."""

        async def to_server(server: IStorageClient, shares: set[int]) -> None:
            secret = self.secrets.upload_secret(server.server_id, self.si)
            for share in sorted(shares):
                await server.write_immutable(self.si, share, secret, offset, pieces[share])

        targets = list(self.allocated.items())
        results = await gather(to_server(s, shares) for s, shares in targets)
        for (server, shares), result in zip(targets, results, strict=True):
            if isinstance(result, SERVER_FAILURES):
                numbers = ", ".join(map(str, sorted(shares)))
                self.failures.append(
                    f"{server.nickname} failed writing share(s) {numbers}: {result}"
                )
                await self._abort(server)
            elif isinstance(result, Exception):
                raise result

    async def _abort(self, server: IStorageClient) -> None:
        secret = self.secrets.upload_secret(server.server_id, self.si)
        for share in sorted(self.allocated.pop(server, set())):
            try:
                await server.abort_immutable(self.si, share, secret)
            except SERVER_FAILURES:
                pass

    async def _abort_all(self) -> None:
        for server in list(self.allocated):
            await self._abort(server)


# --- mutable ------------------------------------------------------------------------


async def _repair_mutable(
    cap: Capability,
    servers: Sequence[IStorageClient],
    secrets: GatewaySecrets,
    params: fmt.EncodingParams,
    before: CheckResult,
) -> RepairResult:
    if before.healthy and not before.corrupt_shares:
        return RepairResult(before, before, False, "none")
    writer = cap.node if isinstance(cap, DirectoryWriteCap) else cap
    if not isinstance(writer, MutableWriteCap):
        raise NotWritable(
            f"repairing a {before.kind} object needs its write cap: its shares are rewritten"
            " as a new signed version"
        )
    newest = before.newest
    if newest is None or not before.recoverable:
        raise _unrecoverable(before, f"{before.kind} object")
    shape = evolve(params, k=newest.k, n=newest.n, happy=min(params.happy, newest.n))
    client = MutableClient(servers, secrets, shape)
    contents, version = await client.read(writer)
    failures: list[str] = []
    published = None
    try:
        published = await client.write(writer, contents, version)
    except (UploadUnhappy, UncoordinatedWriteError) as e:
        failures.append(str(e))
    else:
        after = await check(cap, servers, verify=False, happy=before.happy)
        failures += await _refresh_stale(writer, contents, after, servers, secrets)
    after = await check(cap, servers, verify=before.verified, happy=before.happy)
    placed = tuple(
        PlacedShare(r.share_number, r.server)
        for r in after.current_shares
        if published is not None and r.seqnum == published.seqnum
    )
    return RepairResult(
        before,
        after,
        published is not None,
        "republished",
        placed,
        tuple(failures),
        published.seqnum if published is not None else None,
    )


async def _refresh_stale(
    writer: MutableWriteCap,
    contents: bytes,
    after: CheckResult,
    servers: Sequence[IStorageClient],
    secrets: GatewaySecrets,
) -> list[str]:
    """Overwrite shares of older versions with the new version's shares; returns failures."""
    newest = after.newest
    current = after.current_shares
    if newest is None or not current:
        return []
    stale = [
        r
        for r in after.shares
        if r.seqnum is not None
        and (r.seqnum, r.ueb_hash) != (newest.seqnum, newest.ueb_hash)
        and r.share_number < newest.n
    ]
    if not stale:
        return []
    si = writer.storage_index
    reader = writer.get_read_cap()
    header = await current[0].server.read_mutable(
        si, current[0].share_number, 0, mutable.HEADER_SIZE
    )
    version = mutable.parse_header(reader, header)
    shape = fmt.EncodingParams(version.k, 1, version.n, version.segment_size)
    encoded, shares = fmt.encode_bytes(
        contents, mutable_data_key(reader.read_key, version.salt), shape
    )
    if encoded.ueb_hash != version.ueb_hash:
        return ["the new version could not be re-encoded identically; stale shares were kept"]
    master = write_enabler_master(writer.signing_seed)

    async def overwrite(server: IStorageClient, share: int) -> bool:
        old = await server.read_mutable(si, share, 0, mutable.HEADER_SIZE)
        sid = server.server_id
        vectors = {
            share: TestWriteVectors(
                test=(TestVector(8, 72, old[8:80]),),  # seqnum, salt, UEB hash
                write=(WriteVector(0, header + shares[share]),),
                new_length=mutable.HEADER_SIZE + len(shares[share]),
            )
        }
        result = await server.read_test_write(
            si,
            write_enabler(master, sid, si),
            secrets.renew_secret(sid, si),
            secrets.cancel_secret(sid, si),
            vectors,
            (),
        )
        return bool(result.success)

    outcomes = await gather(overwrite(r.server, r.share_number) for r in stale)
    failures = []
    for report, outcome in zip(stale, outcomes, strict=True):
        if outcome is not True:
            failures.append(
                f"{report.server.nickname} kept an old version of share {report.share_number}"
                + (f": {outcome}" if isinstance(outcome, Exception) else "")
            )
    return failures
