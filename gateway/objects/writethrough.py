"""Directory write-through: a change is answered once it is published to the grid.

The other commit path of a :class:`~gateway.objects.dirnode.DirectoryNode`
(beside :mod:`~gateway.objects.writeback`, which journals changes and
publishes them later). A commit is a list of changes to one or more
directories, in order; write-through publishes each directory's changes in
turn, so a move links the entry at its destination before it unlinks it at its
source, and a crash in between leaves it in both places, never in neither. A
new directory (:class:`~gateway.objects.dirchanges.Create`, with any first
entries) is created in one publish, before the directory that links it is
published.

A change is applied *strictly* to fresh contents, read-modify-write, and
tried again on races (:mod:`gateway.objects.dirupdates`): a taken name raises
ChildExists, a missing one NoSuchChild. An earlier attempt whose publish
landed although it was reported lost counts as done (each change type says
what "landed" means).

Group commit: with ``share_publishes`` (what a gateway's object store gives
its nodes), changes to one directory that arrive while a publish of it is
under way wait for it and are then published together, in one
read-modify-write: many files closed at once, linked into one directory, cost
two publishes, not one each. Each change is still decided on its own: one
refused (ChildExists) fails alone, and a failed publish fails every change it
carried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from attrs import define, field
from twisted.internet.defer import Deferred

from gateway.objects.dirchanges import Change, Create, MutableRecords
from gateway.objects.dirformat import Record
from gateway.objects.dirupdates import DirectoryUpdates

Results = list[Record | None]


class PublishedDirectory(Protocol):
    """What write-through needs of a directory node: which directory, and its grid side."""

    @property
    def storage_index(self) -> bytes:
        """The directory's storage index."""

    @property
    def updates(self) -> DirectoryUpdates:
        """How the node reads and publishes the directory."""


def write_through(changes: Sequence[Change]) -> Callable[[MutableRecords], Results]:
    """The edit that publishes one directory's ``changes`` at once (a read-modify-write,
    tried again on races): every change applied strictly, all or none, except that an
    earlier attempt whose publish landed although it was reported lost counts as done."""
    attempts = 0
    results: Results = [None] * len(changes)

    def apply(records: MutableRecords) -> Results:
        outcome = list(results)
        for i, change in enumerate(changes):
            if attempts > 1 and change.landed(records, outcome[i]):
                continue
            outcome[i], _ = change.apply_strict(records)
        results[:] = outcome  # only what an attempt that was not refused decided
        return outcome

    def edit(records: MutableRecords) -> Results:
        nonlocal attempts
        attempts += 1
        if len(changes) == 1:  # a strict apply that refuses changes nothing
            return apply(records)
        trial = dict(records)
        outcome = apply(trial)
        records.clear()
        records.update(trial)
        return outcome

    return edit


class _NothingToPublish(Exception):
    """Every change of a shared publish was refused."""


@define(eq=False)
class _Waiting:
    """One directory's changes of a commit, waiting for a shared publish."""

    node: PublishedDirectory
    edit: Callable[[MutableRecords], Results]
    done: Deferred[Results] = field(factory=Deferred)


@define(eq=False)
class WriteThrough:
    """Publishes commits at once; with ``share_publishes``, concurrent changes to one
    directory share a publish."""

    share_publishes: bool = False
    #: Publishes made of directories that already existed (shared ones count once).
    publishes: int = 0
    _queued: dict[bytes, list[_Waiting]] = field(factory=dict, init=False, repr=False)
    _publishing: set[bytes] = field(factory=set, init=False, repr=False)

    async def commit(
        self, items: Sequence[tuple[PublishedDirectory, Change]], journal: bool = True
    ) -> Results:
        """Publish the changes, one directory after another in their order; each one's
        record (see the change types). There is no journal: ``journal`` changes nothing."""
        results: Results = []
        start = 0
        while start < len(items):
            node = items[start][0]
            end = start + 1
            while end < len(items) and items[end][0] is node:
                end += 1
            results += await self._commit(node, [change for _, change in items[start:end]])
            start = end
        return results

    async def _commit(self, node: PublishedDirectory, changes: list[Change]) -> Results:
        if isinstance(changes[0], Create):  # a new directory: nobody else changes it yet
            records: MutableRecords = {}
            results = write_through(changes)(records)
            await node.updates.create(records)
            return results
        edit = write_through(changes)
        if not self.share_publishes:
            results = await node.updates.modify(edit)
            self.publishes += 1
            return results
        si = node.storage_index
        waiting = _Waiting(node, edit)
        self._queued.setdefault(si, []).append(waiting)
        if si not in self._publishing:
            self._publishing.add(si)
            Deferred.fromCoroutine(self._publish_all(si))
        return await waiting.done

    async def _publish_all(self, si: bytes) -> None:
        """Publish the directory's waiting changes, and those that arrive meanwhile, until
        none are left."""
        try:
            while si in self._queued:
                await self._publish(self._queued.pop(si))
        finally:
            self._publishing.discard(si)

    async def _publish(self, batch: list[_Waiting]) -> None:
        outcomes: list[Results | Exception] = []

        def edit(records: MutableRecords) -> None:
            outcomes.clear()
            for waiting in batch:
                try:
                    outcomes.append(waiting.edit(records))
                except Exception as e:  # refused (ChildExists, NoSuchChild, …): this one only
                    outcomes.append(e)
            if all(isinstance(outcome, Exception) for outcome in outcomes):
                raise _NothingToPublish()

        leader = batch[0].node.updates
        try:
            await leader.modify(edit)
            self.publishes += 1
        except _NothingToPublish:
            pass
        except Exception as e:  # the publish failed: so did every change it carried
            for waiting in batch:
                waiting.done.errback(e)
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if waiting.node.updates is not leader:
                waiting.node.updates.learn(leader)
            if isinstance(outcome, Exception):
                waiting.done.errback(outcome)
            else:
                waiting.done.callback(outcome)
