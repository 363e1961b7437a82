"""Deep check: every object reachable from a directory, checked (and repaired) once each.

It walks directories and chunk trees (a large file's nodes and extents, see
:mod:`gateway.objects.chunk_format`) breadth first, checks each object it meets
(:func:`gateway.objects.checker.check`) and hands unhealthy ones to a repair
function (:func:`gateway.objects.repairer.repair`), so it sits above both.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Any

from attrs import evolve, frozen

from gateway.grid.interfaces import IStorageClient
from gateway.objects.caps import (
    Capability,
    ChunkedCap,
    ChunkedVerifyCap,
    DirectoryReadCap,
    DirectoryWriteCap,
    LiteralCap,
    b32encode,
)
from gateway.objects.checker import CheckResult, check
from gateway.objects.chunked import NodeCache, node_children
from gateway.objects.errors import ObjectError
from gateway.objects.immutable import SERVER_FAILURES
from gateway.objects.repairer import RepairResult

Children = Callable[[Capability], AsyncIterator[Capability]]
"""Lists the caps a directory cap links to (supplied by the directory layer)."""

Repair = Callable[[Capability, CheckResult], Awaitable[RepairResult]]
"""Repairs one object given its check result (see :func:`gateway.objects.repairer.repair`)."""


@frozen
class DeepCheckEntry:
    """The outcome for one object of a deep check."""

    check: CheckResult
    repair: RepairResult | None = None
    error: str | None = None
    """Why the object's children could not be listed, or its repair failed."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "check": self.check.to_json(),
            "repair": self.repair.to_json() if self.repair is not None else None,
            "error": self.error,
        }


@frozen
class DeepCheckResult:
    """Every object reachable from a root, each checked once, with totals."""

    entries: tuple[DeepCheckEntry, ...]

    @property
    def objects_checked(self) -> int:
        """Objects visited (literal files included)."""
        return len(self.entries)

    def _final(self, entry: DeepCheckEntry) -> CheckResult:
        return entry.repair.after if entry.repair is not None else entry.check

    @property
    def healthy(self) -> int:
        """Objects healthy at the end (after any repair)."""
        return sum(1 for e in self.entries if self._final(e).healthy)

    @property
    def unhealthy(self) -> int:
        """Objects not healthy at the end."""
        return self.objects_checked - self.healthy

    @property
    def unrecoverable(self) -> int:
        """Objects that cannot be rebuilt at the end."""
        return sum(1 for e in self.entries if not self._final(e).recoverable)

    @property
    def corrupt_shares(self) -> int:
        """Corrupt shares found by the checks (before any repair)."""
        return sum(len(e.check.corrupt_shares) for e in self.entries)

    @property
    def repairs_attempted(self) -> int:
        """Objects a repair re-created shares for."""
        return sum(1 for e in self.entries if e.repair is not None and e.repair.attempted)

    @property
    def repairs_succeeded(self) -> int:
        """Repairs after which the object was healthy."""
        return sum(
            1 for e in self.entries if e.repair is not None and e.repair.attempted and e.repair.ok
        )

    @property
    def errors(self) -> tuple[str, ...]:
        """Directories that could not be listed and repairs that failed."""
        return tuple(e.error for e in self.entries if e.error is not None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: totals, then one entry per object."""
        return {
            "objects_checked": self.objects_checked,
            "healthy": self.healthy,
            "unhealthy": self.unhealthy,
            "unrecoverable": self.unrecoverable,
            "corrupt_shares": self.corrupt_shares,
            "repairs_attempted": self.repairs_attempted,
            "repairs_succeeded": self.repairs_succeeded,
            "errors": list(self.errors),
            "objects": [e.to_json() for e in self.entries],
        }


def _identity(cap: Capability) -> Hashable:
    """What makes two caps the same object (a write and a read cap of one object are)."""
    return cap if isinstance(cap, LiteralCap) else cap.get_verify_cap()


async def deep_check(
    root: Capability,
    children: Children,
    servers: Sequence[IStorageClient],
    *,
    verify: bool = False,
    happy: int | None = None,
    repair: Repair | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    nodes: NodeCache | None = None,
) -> DeepCheckResult:
    """Check every object reachable from ``root``, each once (cycles are harmless).

    ``children`` is called for directory caps only and yields the caps they
    link to; the nodes of chunked files are read here (through ``nodes``, a cache, when
    given), so every node and extent of every version reached is checked, and an extent
    that several versions or places share is checked once. With ``repair``, every object
    that is not healthy (or has corrupt shares) is passed to it with its check result.
    ``on_progress(done, total_known)`` is called after each object. Directories that
    cannot be listed and repairs that fail are recorded as entry errors; the walk goes on.
    """
    nodes = nodes if nodes is not None else NodeCache(64)
    seen: set[Hashable] = {_identity(root)}
    queue: deque[Capability] = deque([root])
    entries: list[DeepCheckEntry] = []

    def visit(child: Capability) -> None:
        """Queue an object linked from the one being checked, unless already seen."""
        identity = _identity(child)
        if identity not in seen:
            seen.add(identity)
            queue.append(child)

    # Entries by storage index: an object is reached once as the node of a chunk tree and
    # maybe again as the object keeping another version's leaf inline (checked once).
    checked: dict[bytes | None, int] = {}
    while queue:
        cap = queue.popleft()
        again = checked.get(cap.storage_index)
        if again is not None:
            entry = entries[again]
        else:
            result = await check(cap, servers, verify=verify, happy=happy)
            entry = DeepCheckEntry(result)
            if repair is not None and (not result.healthy or result.corrupt_shares):
                try:
                    entry = evolve(entry, repair=await repair(cap, result))
                except (ObjectError, *SERVER_FAILURES) as e:
                    entry = evolve(entry, error=f"repair failed: {e}")
        if isinstance(cap, ChunkedVerifyCap):
            si = b32encode(cap.storage_index)
            entry = evolve(
                entry,
                error=f"chunk tree node {si}: a verify capability checks a chunked file's root"
                " node only (its chunks are named inside the encrypted node)",
            )
        if isinstance(cap, ChunkedCap):
            try:
                for part in await node_children(cap, servers, nodes):
                    visit(part)
            except (ObjectError, *SERVER_FAILURES) as e:
                si = b32encode(cap.storage_index)
                entry = evolve(entry, error=f"could not read chunk tree node {si}: {e}")
        if isinstance(cap, (DirectoryWriteCap, DirectoryReadCap)):
            try:
                async for child in children(cap):
                    visit(child)
            except (ObjectError, *SERVER_FAILURES) as e:
                si = b32encode(cap.storage_index)
                entry = evolve(entry, error=f"could not list directory {si}: {e}")
        if again is not None:
            entries[again] = entry
            continue
        if cap.storage_index is not None:
            checked[cap.storage_index] = len(entries)
        entries.append(entry)
        if on_progress is not None:
            on_progress(len(entries), len(entries) + len(queue))
    return DeepCheckResult(tuple(entries))
