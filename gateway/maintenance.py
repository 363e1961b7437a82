"""Lease renewal: keep every share the gateway's accounts can reach from expiring.

Storage servers keep a share while some lease on it runs (31 days from its
last renewal) and may delete it afterwards. Every share this gateway places
gets a lease at upload; this module renews them. Every ``[grid]
lease_renewal_interval`` (default 7 days) :class:`PeriodicRenewal` walks the
tree under each account's root directory — directories and the files and
directories they link, and every node and extent of each chunked file (see
:mod:`gateway.objects.chunk_format`; versions share extents), each object once
even when linked many times — and asks
every server to renew the gateway's lease on that object's storage index
(secrets from :class:`~gateway.objects.crypto.GatewaySecrets`, per server and
index). A server that holds no share of the object says so and is skipped.

Objects no account's tree links (e.g. a file put without a target) are not
renewed: a capability alone is not remembered anywhere. The time of the last
complete walk is kept in ``state/lease-renewal.json``, so restarts do not
postpone renewal forever.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from gateway.accounts import AccountError, AccountStore, accounts_path
from gateway.fs.part import FilesystemPart
from gateway.grid.interfaces import IStorageClient
from gateway.intents.turns import BackgroundTurns, run_in_background
from gateway.nodedir import NodeDir, write_atomic
from gateway.objects.caps import (
    Capability,
    ChunkedCap,
    DirectoryReadCap,
    DirectoryWriteCap,
    LiteralCap,
    b32encode,
    parse,
)
from gateway.objects.chunked import node_children
from gateway.objects.concurrency import gather
from gateway.objects.errors import ObjectError
from gateway.objects.immutable import SERVER_FAILURES
from gateway.objects.store import ObjectStore
from gateway.service import NodePart
from storage.errors import NoSuchShare

FIRST_RUN_DELAY = 60.0
"""Seconds after start before a renewal that is due runs (the node settles first)."""

STATE_FILE = "lease-renewal.json"
"""In the node's ``state/`` folder: when the last walk finished."""


@frozen
class RenewalReport:
    """What one walk did (storage indexes and counts only, never a capability)."""

    started: float
    finished: float
    objects: int
    """Distinct objects visited (literal files, which nothing stores, not counted)."""
    leases_renewed: int
    """Server × object pairs whose lease was renewed."""
    not_found: int
    """Objects every server said it held no share of."""
    failures: tuple[str, ...] = ()
    """Servers that failed and directories that could not be listed."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able summary for the status page."""
        return {
            "started": self.started,
            "finished": self.finished,
            "objects": self.objects,
            "leases_renewed": self.leases_renewed,
            "not_found": self.not_found,
            "failures": list(self.failures[:20]),
        }


def _identity(cap: Capability) -> Hashable:
    return cap.get_verify_cap()


@define(eq=False)
class LeaseRenewer:
    """One walk over trees of objects, renewing the gateway's lease on each."""

    store: ObjectStore
    clock: IReactorTime

    async def renew(self, roots: Iterable[Capability]) -> RenewalReport:
        """Renew leases on everything reachable from ``roots``, each object once."""
        started = float(self.clock.seconds())
        servers = list(self.store.servers)
        queue: deque[Capability] = deque()
        seen: set[Hashable] = set()
        for root in roots:
            if not isinstance(root, LiteralCap) and _identity(root) not in seen:
                seen.add(_identity(root))
                queue.append(root)
        renewed = not_found = 0
        failures: list[str] = []
        # Shares renewed by storage index: an object is reached once as the node of a
        # chunk tree and maybe again as the object keeping another version's leaf inline.
        counts: dict[bytes, int] = {}
        while queue:
            cap = queue.popleft()
            si = cap.storage_index
            assert si is not None  # literal caps never enter the queue
            count = counts.get(si)
            if count is None:
                count, problems = await self._renew_one(si, servers)
                counts[si] = count
                renewed += count
                failures.extend(problems)
                not_found += 0 if count or problems else 1
            if count == 0:
                continue  # no share found: no children to list either
            if isinstance(cap, ChunkedCap):
                try:
                    parts = await node_children(cap, servers, self.store.nodes)
                except (ObjectError, *SERVER_FAILURES) as e:
                    failures.append(f"could not read chunk tree node {b32encode(si)}: {e}")
                    continue
                for part in parts:
                    if not isinstance(part, LiteralCap) and _identity(part) not in seen:
                        seen.add(_identity(part))
                        queue.append(part)
            if isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
                try:
                    entries = await self.store.directory(cap).list()
                except (ObjectError, *SERVER_FAILURES) as e:
                    failures.append(f"could not list directory {b32encode(si)}: {e}")
                    continue
                for entry in entries.values():
                    child = entry.cap
                    if child is None or isinstance(child, LiteralCap):
                        continue
                    if _identity(child) not in seen:
                        seen.add(_identity(child))
                        queue.append(child)
        return RenewalReport(
            started,
            float(self.clock.seconds()),
            len(counts),
            renewed,
            not_found,
            tuple(failures),
        )

    async def _renew_one(
        self, si: bytes, servers: Sequence[IStorageClient]
    ) -> tuple[int, list[str]]:
        secrets = self.store.secrets

        async def renew(server: IStorageClient) -> bool:
            sid = server.server_id
            try:
                await server.add_or_renew_lease(
                    si, secrets.renew_secret(sid, si), secrets.cancel_secret(sid, si)
                )
            except NoSuchShare:
                return False
            return True

        outcomes = await gather(renew(s) for s in servers)
        renewed = 0
        problems: list[str] = []
        for server, outcome in zip(servers, outcomes, strict=True):
            if outcome is True:
                renewed += 1
            elif isinstance(outcome, SERVER_FAILURES):
                problems.append(f"{server.nickname}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
        return renewed, problems


@define(eq=False)
class PeriodicRenewal:
    """Runs a :class:`LeaseRenewer` walk every ``interval`` seconds on ``clock``.

    ``roots`` is asked for the root capability strings at each walk (accounts
    come and go). The first walk runs ``first_delay`` seconds after
    :meth:`start`, or later if the last walk (remembered in ``state_file``)
    finished less than ``interval`` ago.
    """

    clock: IReactorTime
    interval: float
    store: Callable[[], ObjectStore]
    roots: Callable[[], Iterable[str]]
    state_file: Path | None = None
    first_delay: float = FIRST_RUN_DELAY
    #: The walk's requests take turns with clients' (see :mod:`gateway.intents.turns`).
    turns: BackgroundTurns | None = None
    last: RenewalReport | None = None
    log: Logger = field(factory=Logger, repr=False)
    _call: IDelayedCall | None = field(default=None, init=False, repr=False)
    _running: Deferred[None] | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Schedule the first walk."""
        delay = self.first_delay
        finished = self._last_finished()
        if finished is not None:
            delay = max(delay, finished + self.interval - self.clock.seconds())
        self._call = self.clock.callLater(delay, self._run)

    def next_run(self) -> float | None:
        """When the next walk starts (clock seconds), None while one runs or when stopped."""
        return self._call.getTime() if self._call is not None else None

    async def stop(self) -> None:
        """Cancel the next walk and abandon a walk in progress (it resumes next start)."""
        if self._call is not None:
            self._call.cancel()
            self._call = None
        running, self._running = self._running, None
        if running is not None:
            running.cancel()
            try:
                await running
            except CancelledError:
                pass

    def _run(self) -> None:
        self._call = None
        self._running = Deferred.fromCoroutine(self.run_once())
        self._running.addErrback(self._failed)
        self._running.addCallback(self._schedule)

    def _failed(self, failure: Any) -> Any:
        if failure.check(CancelledError):
            return failure
        self.log.failure("lease renewal failed", failure)
        return None

    def _schedule(self, _: object) -> None:
        self._running = None
        self._call = self.clock.callLater(self.interval, self._run)

    async def run_once(self) -> None:
        """Walk every root now and remember the result."""
        await run_in_background(self.turns, lambda: False)
        roots: list[Capability] = []
        for text in self.roots():
            try:
                roots.append(parse(text))
            except ObjectError:
                self.log.warn("an account's root capability is damaged; skipped")
        report = await LeaseRenewer(self.store(), self.clock).renew(roots)
        self.last = report
        self._remember(report)
        self.log.info(
            "renewed leases: {objects} objects, {renewed} leases, {missing} not found,"
            " {failures} failures",
            objects=report.objects,
            renewed=report.leases_renewed,
            missing=report.not_found,
            failures=len(report.failures),
        )

    def _last_finished(self) -> float | None:
        if self.state_file is None:
            return None
        try:
            value = json.loads(self.state_file.read_text())["last_finished"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return float(value) if isinstance(value, int | float) else None

    def _remember(self, report: RenewalReport) -> None:
        if self.state_file is None:
            return
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_file, json.dumps({"last_finished": report.finished}).encode())
        except OSError as e:
            self.log.warn("cannot record the lease renewal time: {error}", error=e.strerror)


class LeaseRenewalPart(NodePart):
    """The node part that runs :class:`PeriodicRenewal` over every account's root."""

    def __init__(self, reactor: Any, nd: NodeDir, fs: FilesystemPart, interval: float):
        super().__init__("leases")
        self._fs = fs
        self._accounts = AccountStore(accounts_path(nd.root))
        self.job = PeriodicRenewal(
            reactor, interval, self._store, self._roots, nd.state / STATE_FILE, turns=fs.turns
        )

    def _store(self) -> ObjectStore:
        assert self._fs.store is not None, "filesystem not started"
        return self._fs.store

    def _roots(self) -> list[str]:
        try:
            return [self._accounts.get(a.name).root_cap for a in self._accounts.list()]
        except AccountError as e:
            self.job.log.warn("cannot read accounts for lease renewal: {error}", error=str(e))
            return []

    async def start(self) -> None:
        """Schedule the first walk."""
        self.job.start()

    async def stop(self) -> None:
        """Stop walking."""
        await self.job.stop()

    def status(self) -> dict[str, Any]:
        """The interval, the next walk and the last walk's counts."""
        return {
            "interval_seconds": self.job.interval,
            "next_run": self.job.next_run(),
            "last": self.job.last.to_json() if self.job.last is not None else None,
        }
