"""Check, verify and deep-check objects on the grid: who holds which share, and is it intact.

*Check* asks every server which shares of an object it holds (one ``list``
request per server, all at once; for mutable objects also each share's signed
header, to learn which version it holds). It reads no block, so a corrupt block
goes unnoticed: a checked share is only "present".

*Verify* is a check that also downloads every block of every share found and
hashes it against the commitments of the capability (the share tree root in the
UEB the cap hashes, or the signed header of a mutable version). Each share is
then "good" or "corrupt" (with a reason); the server holding a corrupt share is
told with ``advise_corrupt_*``. Verification needs only a verify cap.

Health, and the results' value objects, are described in
:mod:`gateway.objects.check_results` (whose names are re-exported here).

:func:`gateway.objects.deepcheck.deep_check` walks a tree of objects, checking
each reachable object once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from gateway.grid.interfaces import IStorageClient
from gateway.objects import immutable_format as fmt
from gateway.objects import merkle
from gateway.objects.caps import (
    Capability,
    ChunkedVerifyCap,
    DirectoryVerifyCap,
    ImmutableReadCap,
    ImmutableVerifyCap,
    LiteralCap,
    MutableReadCap,
    MutableVerifyCap,
)
from gateway.objects.check_results import (
    USABLE,
    CheckResult,
    ShareReport,
    ShareStatus,
    VersionReport,
)
from gateway.objects.concurrency import gather
from gateway.objects.crypto import HASH_SIZE
from gateway.objects.errors import CorruptObject, CorruptShare
from gateway.objects.immutable import SERVER_FAILURES
from gateway.objects.mutable_format import HEADER_SIZE as MUTABLE_HEADER_SIZE
from gateway.objects.mutable_format import MutableVersion, parse_header
from gateway.objects.placement import permuted_ring

__all__ = [
    "USABLE",
    "VERIFY_READ_SIZE",
    "CheckResult",
    "ReadShare",
    "ShareReport",
    "ShareStatus",
    "VersionReport",
    "check",
    "default_happy",
    "verify_share",
]

VERIFY_READ_SIZE = 1 << 20
"""Bytes of blocks fetched per request while verifying one share."""

ReadShare = Callable[[int, int], Awaitable[bytes]]
"""Reads ``(offset, length)`` of one immutable-format share."""


def default_happy(n: int, happy: int | None = None) -> int:
    """The happiness a healthy object needs: ``happy`` (default: the grid's), at most ``n``."""
    return min(n, happy if happy is not None else fmt.EncodingParams().happy)


async def check(
    cap: Capability,
    servers: Sequence[IStorageClient],
    *,
    verify: bool = False,
    happy: int | None = None,
) -> CheckResult:
    """Check (or with ``verify``, verify) one object; any cap kind works, verify caps included.

    ``happy`` is the servers-of-happiness a healthy object needs (see
    :func:`default_happy`; never more than its ``n``). Server failures are reported in the
    result, not raised.
    """
    if isinstance(cap, LiteralCap):
        return CheckResult.literal()
    verifier = cap.get_verify_cap()
    if isinstance(verifier, ImmutableVerifyCap):
        return await _check_immutable(verifier, servers, verify, happy)
    if isinstance(verifier, ChunkedVerifyCap):
        return await _check_immutable(verifier.node, servers, verify, happy, "chunk tree node")
    if isinstance(verifier, DirectoryVerifyCap):
        return await _check_mutable(verifier.node, "directory", servers, verify, happy)
    return await _check_mutable(verifier, "mutable", servers, verify, happy)


def _commitment(verifier: ImmutableVerifyCap) -> ImmutableReadCap:
    # verify_prefix reads only k, n, size and ueb_hash, which a verify cap also has:
    # verification never needs the read key.
    return cast(ImmutableReadCap, verifier)


async def verify_share(read: ReadShare, verifier: ImmutableVerifyCap, share_number: int) -> None:
    """Download one immutable-format share and check every byte that matters, or raise.

    Raises CorruptShare (or CorruptObject) naming what failed; server errors
    pass through.
    """
    prefix = await read(0, fmt.prefix_length(verifier.n))
    verified = fmt.verify_prefix(_commitment(verifier), share_number, prefix)
    layout = verified.layout
    tree_length = merkle.tree_size(layout.num_segments) * HASH_SIZE
    tree = await read(layout.tree_offset, tree_length)
    if len(tree) != tree_length:
        raise CorruptShare(f"share {share_number} has a truncated block hash tree")
    nodes = {i: tree[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(tree_length // HASH_SIZE)}
    per_read = max(1, VERIFY_READ_SIZE // layout.block_length(0))
    for first in range(0, layout.num_segments, per_read):
        last = min(layout.num_segments, first + per_read) - 1
        start = layout.block_offset(first)
        data = await read(start, layout.block_offset(last) + layout.block_length(last) - start)
        for segment in range(first, last + 1):
            offset = layout.block_offset(segment) - start
            block = data[offset : offset + layout.block_length(segment)]
            fmt.verify_block(verified, segment, block, nodes)


async def _verify_status(
    read: ReadShare, verifier: ImmutableVerifyCap, share: int
) -> tuple[ShareStatus, str | None]:
    """Verify one share: its status and, unless good, why."""
    try:
        await verify_share(read, verifier, share)
    except (CorruptShare, CorruptObject) as e:
        return ShareStatus.CORRUPT, str(e)
    except SERVER_FAILURES as e:
        return ShareStatus.UNREADABLE, str(e)
    return ShareStatus.GOOD, None


async def _advise(reports: Sequence[ShareReport], storage_index: bytes, mutable: bool) -> None:
    """Tell each server about its corrupt shares (failures to tell are ignored)."""

    async def advise(report: ShareReport) -> None:
        server, reason = report.server, report.reason or "corrupt"
        if mutable:
            await server.advise_corrupt_mutable(storage_index, report.share_number, reason)
        else:
            await server.advise_corrupt_immutable(storage_index, report.share_number, reason)

    results = await gather(advise(r) for r in reports if r.status is ShareStatus.CORRUPT)
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, SERVER_FAILURES):
            raise result


async def _list(
    servers: Sequence[IStorageClient], storage_index: bytes, mutable: bool
) -> tuple[list[tuple[IStorageClient, int]], list[IStorageClient]]:
    """Ask every server for its shares: (server, share) pairs in ring order, and failed servers."""
    ring = permuted_ring(servers, storage_index)
    listed = await gather(
        (s.list_mutable(storage_index) if mutable else s.list_immutable(storage_index))
        for s in ring
    )
    found: list[tuple[IStorageClient, int]] = []
    unreachable: list[IStorageClient] = []
    for server, result in zip(ring, listed, strict=True):
        if isinstance(result, SERVER_FAILURES):
            unreachable.append(server)
        elif isinstance(result, Exception):
            raise result
        else:
            found.extend((server, share) for share in sorted(result))
    return found, unreachable


async def _check_immutable(
    verifier: ImmutableVerifyCap,
    servers: Sequence[IStorageClient],
    verify: bool,
    happy: int | None,
    kind: str = "immutable",
) -> CheckResult:
    si = verifier.storage_index
    found, unreachable = await _list(servers, si, mutable=False)
    found = [(server, share) for server, share in found if share < verifier.n]
    if verify:

        def reader(server: IStorageClient, share: int) -> ReadShare:
            return lambda offset, length: server.read_immutable(si, share, offset, length)

        outcomes = await gather(_verify_status(reader(s, sh), verifier, sh) for s, sh in found)
        reports = [
            _verified_report(share, server, outcome)
            for (server, share), outcome in zip(found, outcomes, strict=True)
        ]
        await _advise(reports, si, mutable=False)
    else:
        reports = [ShareReport(share, server, ShareStatus.PRESENT) for server, share in found]
    return CheckResult(
        kind,
        si,
        verify,
        verifier.k,
        verifier.n,
        default_happy(verifier.n, happy),
        len(servers),
        tuple(reports),
        tuple(unreachable),
    )


def _verified_report(
    share: int,
    server: IStorageClient,
    outcome: tuple[ShareStatus, str | None] | Exception,
    seqnum: int | None = None,
    ueb_hash: bytes | None = None,
) -> ShareReport:
    if isinstance(outcome, Exception):
        raise outcome
    status, reason = outcome
    return ShareReport(share, server, status, seqnum, ueb_hash, reason)


async def _check_mutable(
    verifier: MutableVerifyCap,
    kind: str,
    servers: Sequence[IStorageClient],
    verify: bool,
    happy: int | None,
) -> CheckResult:
    si = verifier.storage_index
    found, unreachable = await _list(servers, si, mutable=True)
    headers = await gather(s.read_mutable(si, sh, 0, MUTABLE_HEADER_SIZE) for s, sh in found)
    # parse_header uses only the public key and storage index, which the verify cap has.
    header_cap = cast(MutableReadCap, verifier)
    reports: list[ShareReport] = []
    versions: dict[tuple[int, bytes], MutableVersion] = {}
    for (server, share), header in zip(found, headers, strict=True):
        if isinstance(header, SERVER_FAILURES):
            reports.append(ShareReport(share, server, ShareStatus.UNREADABLE, reason=str(header)))
            continue
        if isinstance(header, Exception):
            raise header
        try:
            version = parse_header(header_cap, header)
            if share >= version.n:
                raise CorruptShare(f"share {share} lies outside its version's {version.n} shares")
        except CorruptShare as e:
            reports.append(ShareReport(share, server, ShareStatus.CORRUPT, reason=str(e)))
            continue
        versions.setdefault((version.seqnum, version.ueb_hash), version)
        reports.append(
            ShareReport(share, server, ShareStatus.PRESENT, version.seqnum, version.ueb_hash)
        )
    if verify:
        reports = await _verify_mutable(si, reports, versions)
    await _advise(reports, si, mutable=True)
    found_versions = [
        VersionReport(
            v.seqnum,
            v.ueb_hash,
            v.k,
            v.n,
            frozenset(
                r.share_number
                for r in reports
                if r.usable and (r.seqnum, r.ueb_hash) == (v.seqnum, v.ueb_hash)
            ),
        )
        for _, v in sorted(versions.items(), reverse=True)
    ]
    newest = found_versions[0] if found_versions else None
    return CheckResult(
        kind,
        si,
        verify,
        newest.k if newest else None,
        newest.n if newest else None,
        default_happy(newest.n, happy) if newest else None,
        len(servers),
        tuple(reports),
        tuple(unreachable),
        tuple(found_versions),
    )


async def _verify_mutable(
    storage_index: bytes,
    reports: list[ShareReport],
    versions: dict[tuple[int, bytes], MutableVersion],
) -> list[ShareReport]:
    """Verify the immutable-format body of every share whose signed header was valid."""
    pending = [r for r in reports if r.status is ShareStatus.PRESENT]

    def reader(report: ShareReport) -> ReadShare:
        server, share = report.server, report.share_number
        return lambda offset, length: server.read_mutable(
            storage_index, share, MUTABLE_HEADER_SIZE + offset, length
        )

    def shape(report: ShareReport) -> ImmutableVerifyCap:
        assert report.seqnum is not None and report.ueb_hash is not None
        v = versions[report.seqnum, report.ueb_hash]
        return ImmutableVerifyCap(storage_index, v.ueb_hash, v.k, v.n, v.size)

    outcomes = await gather(_verify_status(reader(r), shape(r), r.share_number) for r in pending)
    verified = {
        id(r): _verified_report(r.share_number, r.server, outcome, r.seqnum, r.ueb_hash)
        for r, outcome in zip(pending, outcomes, strict=True)
    }
    return [verified.get(id(r), r) for r in reports]
