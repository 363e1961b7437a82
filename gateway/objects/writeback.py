"""Directory write-back: a change is answered once journaled locally and published after.

A directory change (mkdir, rename, rmdir, remove, symlink, setstat, a file's link) is
decided by :class:`~gateway.objects.dirnode.DirectoryNode` against the contents this
gateway knows (the client gets ChildExists, NoSuchChild as before), appended to a local
journal and answered, with no round trip to the grid. It is visible at once to every
session of this gateway (all nodes of a directory see one view, kept here). A publish
``window`` seconds later carries every change made to that directory by then; changes that
cancel out (mkdir, rename, rmdir of one directory) cost no publish at all.

Each commit is one intent of the journal (:mod:`gateway.objects.dirjournal`:
every change it made, to one or more directories, in one record), and done
once every directory it changed is published. The client is answered once the
record is written (a killed or crashed gateway loses nothing: the kernel holds
it); its ``fdatasync`` starts ``JOURNAL_DELAY`` (2 ms) later, in a thread, shared
with the commits made meanwhile (group commit), so only a power loss in the next
milliseconds can lose an answered change, as on a local filesystem, whose directory changes
are durable only once the directory is fsynced. Waiting for the flush cost a
mkdir, rename or rmdir three quarters of its time. Whatever must not outlive a
change's record waits for :meth:`DirectoryWriteBack.durable`: an upload is not
marked done, and a CLOSE not answered, before the directory changes made
before it are on disk. A flush that fails is logged, and later changes are
refused with its error until the journal can be flushed again. It is
replayed at start: changes not yet published are published again, on top
of whatever the grid then holds. What is kept of each directory, and how it
is read and published, is in :mod:`gateway.objects.dirstate`. Publishing
re-applies each change *leniently* (:mod:`gateway.objects.dirchanges`):
another writer's work is never undone, and a name another writer took
meanwhile gets a conflict name instead of a lost entry. A directory made here
is published before any directory that links it.

A failed publish (servers down, not enough of them) is retried with a growing pause of at
most ``max_retry`` seconds; meanwhile the gateway keeps serving its own view. Publishes
take turns with clients (:mod:`gateway.intents.turns`), but for those someone waits for:
:meth:`flush` publishes given directories now (``fsync`` of a file needs its directory
chain in the grid); :meth:`stop` publishes what it can within a grace period.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from operator import attrgetter
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gateway.intents.pacing import ClientActivity, retry_delay
from gateway.intents.turns import BackgroundTurns, run_in_background
from gateway.objects.caps import DirectoryWriteCap, b32encode
from gateway.objects.concurrency import shared
from gateway.objects.dirchanges import Change, Create, Link, MutableRecords, Undo
from gateway.objects.dirflush import JOURNAL_DELAY, JournalFlushes
from gateway.objects.dirformat import Record
from gateway.objects.dirjournal import commit_record, open_journal, read_commit, reason
from gateway.objects.dirpublish import JournaledDirectory
from gateway.objects.dirstate import KEEP_ENTRIES, DirectoryState, forget_clean
from gateway.objects.mutable import MutableClient
from gateway.objects.unjournaled import Unjournaled
from gateway.threads import Threads, reactor_threads

_READ_CAP = attrgetter("read_cap")

#: Seconds changes to one directory are gathered before they are published.
FLUSH_WINDOW = 0.1

#: While clients keep sending requests, publishes wait until they pause this long...
HOLD_WHILE_ACTIVE = 0.25

#: ...but never longer than this after the oldest change waiting (as uploads: see
#: ``gateway.fs.part.UPLOAD_SETTLE_LIMIT``).
HOLD_LIMIT = 2.0

#: Seconds contents read or published by this gateway are trusted to decide a change on.
REUSE_SECONDS = 10.0

#: The longest pause between attempts to publish a directory the grid does not take.
MAX_RETRY = 30.0

#: Directories whose views are kept; past this, views with nothing to publish are dropped.
KEEP_VIEWS = 4096


class DirectoryWriteBack:
    """The write-back state of one gateway: the journal, the views, the publisher."""

    log = Logger()

    def __init__(
        self,
        directory: Path,
        client: Callable[[], MutableClient],
        clock: IReactorTime,
        *,
        threads: Threads | None = None,
        window: float = FLUSH_WINDOW,
        journal_delay: float = JOURNAL_DELAY,
        reuse: float = REUSE_SECONDS,
        max_retry: float = MAX_RETRY,
        rng: random.Random | None = None,
        activity: ClientActivity | None = None,
        turns: BackgroundTurns | None = None,
        barrier: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._window = window
        self._reuse = reuse
        self._max_retry = max_retry
        self._rng = rng or random.Random()
        self._activity = activity
        self._turns = turns
        self._awaited = 0  # flushes someone waits for (an fsync): publishes take no turns
        self._threads = threads if threads is not None else reactor_threads(clock)
        self._intents, self._legacy_done = open_journal(directory)
        self._flushes = JournalFlushes(
            self._intents, clock, self._threads, journal_delay, barrier=barrier
        )
        self._unjournaled = Unjournaled(self._intents)  # (an fsync's: published at once)
        self._dirs: dict[bytes, DirectoryState] = {}
        #: Directories made here and not published yet, by read cap (until :meth:`_settled`).
        self._created: dict[str, DirectoryState] = {}
        #: For each of those, the directories whose changes linked it: the only ones that can
        #: (its cap is new, and known nowhere else until something links it).
        self._linkers: dict[str, set[bytes]] = {}
        #: The same, the other way round: by directory, the read caps of those it linked.
        self._children_made: dict[bytes, set[str]] = {}
        #: The directories each journaled commit changed and that are not yet published.
        self._commits: dict[int, set[bytes]] = {}
        self._seq = 0
        self._stopped = False
        self.damaged: list[str] = list(self._intents.damaged)
        self.publishes = 0
        self._replay()

    # -- what sessions see -----------------------------------------------------------

    def pending(self) -> int:
        """Changes journaled and not yet published."""
        return sum(len(d.changes) for d in self._dirs.values())

    def pending_directories(self) -> int:
        """Directories with changes not yet published."""
        return sum(1 for d in self._dirs.values() if d.changes)

    def view(self, storage_index: bytes, max_age: float | None) -> MutableRecords | None:
        """The contents to show without reading the grid: unpublished changes, or fresh enough."""
        d = self._dirs.get(storage_index)
        if d is None or d.view is None:
            return None
        if d.changes or d.create:
            return d.view
        if max_age is not None and self._clock.seconds() - d.read_at <= max_age:
            return d.view
        return None

    def has_view(self, storage_index: bytes) -> bool:
        """Whether there are contents of the directory to show, however old."""
        d = self._dirs.get(storage_index)
        return d is not None and d.view is not None

    async def records(self, node: JournaledDirectory, max_age: float | None) -> MutableRecords:
        """A writable directory's contents as this gateway sees them (reading when stale)."""
        view = self.view(node.storage_index, max_age)
        if view is not None:
            return view
        return await self._load(node)

    # -- changing --------------------------------------------------------------------

    async def commit(
        self, items: Sequence[tuple[JournaledDirectory, Change]], journal: bool = True
    ) -> list[Record | None]:
        """Decide changes against the views, journal them (one flush) and schedule publishes.

        All or nothing: a change that must be refused (ChildExists, NoSuchChild) or a journal
        that cannot be written leaves every view as it was. Returns each change's record,
        once it is written (flushed after; see the module docstring); without ``journal``
        (published now, awaited), only if it must be (:mod:`gateway.objects.unjournaled`).
        """
        if self._flushes.error is not None:
            await self.durable()  # raises while the journal still cannot be flushed
        while True:
            stale = [n for n, c in items if not isinstance(c, Create) and not self._usable(n)]
            if not stale:
                break
            for node in stale:
                await self._load(node)
        views: dict[bytes, MutableRecords] = {}
        results: list[Record | None] = []
        resolved: list[tuple[JournaledDirectory, Change]] = []
        undo = Undo()  # the views change in place: a refusal puts them back
        try:
            for node, change in items:
                si = node.storage_index
                view = views.get(si)
                if view is None:
                    view = {} if isinstance(change, Create) else self._dirs[si].view
                    assert view is not None
                    views[si] = view
                result, decided = undo.apply(change, view)
                results.append(result)
                resolved.append((node, decided))
            # Written now (a full disk refuses the change here, with every view unchanged)
            # and flushed below, in a thread, with the commits made meanwhile.
            seq = self._seq + 1
            record = commit_record([(_write_cap(n), c) for n, c in resolved])
            if journal:
                self._unjournaled.write()  # (the journal keeps the changes in order)
                self._intents.put(str(seq), record)
            else:
                self._unjournaled.keep(seq, record)
        except BaseException:
            undo.revert()
            raise
        self._seq = seq
        self._commits[seq] = {n.storage_index for n, _ in resolved}
        for node, decided in resolved:
            si = node.storage_index
            d = self._dirs.get(si)
            if d is None:
                d = self._dirs[si] = DirectoryState.of(_write_cap(node))
            if isinstance(decided, Create):
                d.create = True
                d.read_at = self._clock.seconds()
                self._created[d.read_cap] = d
            if not d.changes:
                d.waiting_since = self._clock.seconds()
            d.changes.append((seq, decided))
            d.view = views[si]
            self._schedule(d)
        self._note_links(resolved)
        for read_cap in undo.replaced() if self._created else ():  # (rmdir, link over)
            self._drop_if_unlinked(read_cap)
        # Sessions see the change at once; it is on disk once the flush started just after
        # (with the changes made meanwhile) ends.
        if journal:
            self._flushes.soon()
        return results

    async def durable(self) -> None:
        """Wait until every change made so far is on disk, those kept out of the journal
        written now (raises the flush's OSError); a put-off flush starts now."""
        self._unjournaled.write()
        await self._flushes.durable()

    async def flush(self, storage_indexes: Iterable[bytes]) -> None:
        """Publish these directories' changes now (and the new directories they link)."""
        self._awaited += 1
        try:
            for si in storage_indexes:
                d = self._dirs.get(si)
                if d is not None and d.changes:
                    await self._flush(d, frozenset())
        finally:
            self._awaited -= 1

    async def flush_all(self) -> None:
        """Publish every change made so far."""
        while dirty := [si for si, d in self._dirs.items() if d.changes]:
            await self.flush(dirty)

    async def stop(self, grace: float) -> None:
        """Publish what can be within ``grace`` seconds; the rest stays journaled for the next
        start."""
        self._stopped = True
        for d in self._dirs.values():
            if d.timer is not None and d.timer.active():
                d.timer.cancel()
        if self.pending():
            everything = Deferred.fromCoroutine(self.flush_all())
            everything.addTimeout(grace, self._clock)
            try:
                await everything
            except Exception as e:
                self.log.warn(
                    "{n} directory changes stay journaled for the next start ({why})",
                    n=self.pending(),
                    why=type(e).__name__,
                )
        self._unjournaled.write_at_stop()
        self._flushes.close()  # what the last flushes had not covered yet

    # -- internals -------------------------------------------------------------------

    def _usable(self, node: JournaledDirectory) -> bool:
        """Whether a change can be decided on the view without reading first."""
        return self.view(node.storage_index, self._reuse) is not None

    async def _load(self, node: JournaledDirectory) -> MutableRecords:
        """Read a directory from the grid: its view is what it holds plus our changes."""
        si = node.storage_index
        d = self._dirs.get(si)
        if d is None:
            forget_clean(self._dirs, KEEP_VIEWS, KEEP_ENTRIES)
            d = self._dirs[si] = DirectoryState.of(_write_cap(node))
        loading = d.loading
        if loading is None:  # one read at a time; everyone else waits for it
            loading = Deferred.fromCoroutine(d.read(node, self._clock))
            if not loading.called:
                d.loading = loading
        error = await shared(loading)
        if d.loading is loading:
            d.loading = None
        if error is not None:
            raise error
        if d.view is None:  # a publish overlapped the read: read again
            return await self._load(node)
        return d.view

    def _schedule(self, d: DirectoryState, delay: float | None = None) -> None:
        if self._stopped or (d.timer is not None and d.timer.active()):
            return
        d.timer = self._clock.callLater(
            self._window if delay is None else delay, self._publish_later, d
        )

    def _publish_later(self, d: DirectoryState) -> None:
        d.timer = None
        if self._activity is not None and d.changes and not d.failures:
            # A client is busy (``cp -r``, ``tar``): publish once it pauses, as uploads do.
            wait = self._activity.hold_until(d.waiting_since, HOLD_WHILE_ACTIVE, HOLD_LIMIT)
            if wait > self._clock.seconds():
                self._schedule(d, wait - self._clock.seconds())
                return
        Deferred.fromCoroutine(self._flush_or_retry(d))

    async def _flush_or_retry(self, d: DirectoryState) -> None:
        await run_in_background(self._turns, lambda: self._awaited > 0)
        try:
            await self._flush(d, frozenset())
        except Exception as e:
            d.failures += 1
            delay = retry_delay(d.failures, 0.5, self._max_retry)
            self.log.warn(
                "publishing directory {si} failed ({why}); {n} changes wait, next try in {delay} s",
                si=b32encode(d.cap.storage_index)[:8],
                why=reason(e),
                n=len(d.changes),
                delay=round(delay, 2),
            )
            self._schedule(d, delay)
        else:
            d.failures = 0
            if d.changes:
                self._schedule(d)

    def _note_links(
        self, changes: Iterable[tuple[JournaledDirectory | DirectoryState, Change]]
    ) -> None:
        """Remember which directories' changes link directories made here and unpublished."""
        if not self._created:
            return
        for directory, change in changes:
            if isinstance(change, Link):
                for _, record in change.entries:
                    read_cap = record.read_cap
                    if read_cap is not None and read_cap in self._created:
                        si = directory.cap.storage_index
                        self._linkers.setdefault(read_cap, set()).add(si)
                        self._children_made.setdefault(si, set()).add(read_cap)

    def _settled(self, d: DirectoryState) -> None:
        """``d`` is published (or forgotten): no longer a directory made here and unpublished."""
        if self._created.get(d.read_cap) is not d:
            return
        del self._created[d.read_cap]
        for si in self._linkers.pop(d.read_cap, ()):
            made = self._children_made.get(si)
            if made is not None:
                made.discard(d.read_cap)
                if not made:
                    del self._children_made[si]

    def _drop_if_unlinked(self, read_cap: str) -> None:
        """A directory made here, never published and linked nowhere any more (rmdir, a
        link over it) has nothing to publish: forget it now, not at its timer (a ``cp -r``
        then ``rm -r`` left a timer per directory, each making the reactor's others dearer)."""
        d = self._created.get(read_cap)
        if d is None or not d.create or d.lock.locked or d.loading is not None:
            return
        if not self._linked(d):
            self._forget(d, list(d.changes))

    def _new_children(self, d: DirectoryState) -> list[DirectoryState]:
        """Directories made here, not yet published, that ``d`` links.

        Only directories whose changes linked one can link it, so only those are read:
        a publish costs what it publishes, not a walk of every directory known here.
        """
        made = self._children_made.get(d.cap.storage_index)
        if not made:
            return []
        links = {r.read_cap for r in d.links()}
        children = []
        for read_cap in made:
            child = self._created.get(read_cap)
            if child is not None and child is not d and child.create and read_cap in links:
                children.append(child)
        return children

    def _linked(self, d: DirectoryState) -> bool:
        """Whether any directory known here links ``d`` (made here, not yet published)."""
        for si in self._linkers.get(d.read_cap, ()):
            other = self._dirs.get(si)
            if other is not None and other is not d:
                if d.read_cap in map(_READ_CAP, other.links()):  # (a scan in C)
                    return True
        return False

    async def _flush(self, d: DirectoryState, chain: frozenset[bytes]) -> None:
        si = d.cap.storage_index
        while True:
            # New directories this one links go first, with no lock held (no lock-order
            # deadlocks); ``chain`` keeps a cycle of moves from waiting on itself.
            for child in self._new_children(d):
                if child.cap.storage_index not in chain:
                    await self._flush(child, chain | {si})
            await d.lock.acquire()
            if not any(c.cap.storage_index not in chain for c in self._new_children(d)):
                break
            d.lock.release()  # more were made meanwhile
        try:
            if not d.changes:
                return
            snapshot = list(d.changes)
            if d.create and not self._linked(d):
                # Made and unlinked again before it was ever published: nothing to publish.
                self._forget(d, snapshot)
                return
            snapshot = await d.publish(self._client(), self._clock, self._rng)
            self.publishes += 1
            self._settled(d)
            self._published(si, snapshot)
            for read_cap in list(self._children_made.get(si, ())):  # linked over since
                self._drop_if_unlinked(read_cap)  # (or its commit is never done)
        finally:
            d.lock.release()

    def _published(self, si: bytes, snapshot: list[tuple[int, Change]]) -> None:
        """A directory's changes are in the grid: commits with nothing else left are done
        (not flushed: a change published again after a crash changes nothing)."""
        for seq, _ in snapshot:
            left = self._commits.get(seq)
            if left is None:
                continue
            left.discard(si)
            if not left:
                del self._commits[seq]
                self._unjournaled.published(seq)
                self._intents.done(str(seq))

    def _forget(self, d: DirectoryState, snapshot: list[tuple[int, Change]]) -> None:
        self._settled(d)
        del d.changes[: len(snapshot)]
        self._published(d.cap.storage_index, snapshot)
        if not d.changes:
            if d.timer is not None and d.timer.active():
                d.timer.cancel()
            del self._dirs[d.cap.storage_index]

    def _replay(self) -> None:
        """Rebuild the unpublished changes from the journal."""
        for key, record in list(self._intents.live.items()):
            seq = int(key) if key.isdigit() else 0
            self._seq = max(self._seq, seq)
            left: set[bytes] = set()
            for cap, change in read_commit(record, self.damaged):
                si = cap.storage_index
                if seq <= self._legacy_done.get(si, 0):
                    continue
                d = self._dirs.get(si)
                if d is None:
                    d = self._dirs[si] = DirectoryState.of(cap)
                if isinstance(change, Create):
                    d.create = d.maybe_exists = True
                    self._created[d.read_cap] = d
                d.changes.append((seq, change))
                left.add(si)
            if left:
                self._commits[seq] = left
            else:
                self._intents.done(key)
        self._note_links((d, change) for d in self._dirs.values() for _, change in d.changes)
        for d in self._dirs.values():
            self.log.info(
                "{n} journaled changes of directory {si} to publish",
                n=len(d.changes),
                si=b32encode(d.cap.storage_index)[:8],
            )
            self._schedule(d)


def _write_cap(node: JournaledDirectory) -> DirectoryWriteCap:
    cap = node.cap
    if not isinstance(cap, DirectoryWriteCap):
        raise TypeError("only a writable directory has changes to journal")
    return cap
