"""One version of a file that lives on the gateway before (and while) it reaches the grid.

A :class:`LocalFile` is made by the first OPEN for writing of a path (or by an
fsync's snapshot, or by replaying the upload journal at start) and lives
through one explicit state machine until it is linked into its directory or
given up. Every handle open on the path shares it and its staged file, so
writes through one are seen by the others (sshfs opens several)::

    OPENING --ready--> OPEN --close--> CLOSING --journaled--> JOURNALED
       |                 |                |                     |   ^
     failed           release          unsaved               upload |retry
       v                 v                v                     v   |
    DROPPED           DROPPED          DROPPED               UPLOADING --link--> LINKED

(a CLOSING file whose record the queue found durable before its CLOSE did may go
straight to UPLOADING)

and ``abandon`` (a remove, or a rename onto the path) takes any live state to
ABANDONED. :data:`TRANSITIONS` is the whole machine; :meth:`LocalFile.fire`
is the only way a phase changes, and the overlay's transitions
(:mod:`gateway.fs.overlay`) are the only code that files it under a path.
``docs/state-machines/local-file.dot`` is drawn from the same table.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock

from gateway.fs.interfaces import FileAttributes
from gateway.fs.paths import Path
from gateway.fs.sparse import Base, Ranges, changed_ranges, holes
from gateway.fs.staging import StagedFile
from gateway.fs.under import Under
from gateway.objects.concurrency import shared
from gateway.uploads.journal import INLINE_BYTES


class Phase(enum.Enum):
    """Where a local file is in its life."""

    OPENING = "opening"
    """Registered by an OPEN (a STAT pipelined behind it sees the file); its starting
    contents are being prepared."""
    OPEN = "open"
    """At least one handle is open on it."""
    CLOSING = "closing"
    """Its last CLOSE is making it durable: the staged bytes are synced and its upload
    is journaled. An OPEN of the path waits for the end of this phase."""
    JOURNALED = "journaled"
    """The CLOSE is acknowledged: the journal record is durable; the upload waits."""
    UPLOADING = "uploading"
    """The upload queue is uploading it (or linking it) now."""
    LINKED = "linked"
    """In the grid, linked into its directory: gone from the overlay."""
    DROPPED = "dropped"
    """Gone with nothing published: unchanged, never closed by a client, or not saved."""
    ABANDONED = "abandoned"
    """Removed, or replaced by a rename, while local: it publishes nothing."""


class Event(enum.Enum):
    """What moves a local file from one phase to the next."""

    READY = "ready"
    FAILED = "failed"
    CLOSE = "close"
    RELEASE = "release"
    JOURNALED = "journaled"
    UNSAVED = "unsaved"
    UPLOAD = "upload"
    RETRY = "retry"
    LINK = "link"
    ABANDON = "abandon"


#: The machine: (phase, event) -> next phase. Anything else is a bug, raised at once.
TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.OPENING, Event.READY): Phase.OPEN,
    (Phase.OPENING, Event.FAILED): Phase.DROPPED,
    (Phase.OPEN, Event.CLOSE): Phase.CLOSING,
    (Phase.OPEN, Event.RELEASE): Phase.DROPPED,
    (Phase.CLOSING, Event.JOURNALED): Phase.JOURNALED,
    (Phase.CLOSING, Event.UNSAVED): Phase.DROPPED,
    (Phase.JOURNALED, Event.UPLOAD): Phase.UPLOADING,
    # The queue starts a job only once its record is durable; the CLOSE that made it may
    # not have seen that yet.
    (Phase.CLOSING, Event.UPLOAD): Phase.UPLOADING,
    (Phase.UPLOADING, Event.RETRY): Phase.JOURNALED,
    (Phase.UPLOADING, Event.LINK): Phase.LINKED,
    **{
        (phase, Event.ABANDON): Phase.ABANDONED
        for phase in (Phase.OPENING, Phase.OPEN, Phase.CLOSING, Phase.JOURNALED, Phase.UPLOADING)
    },
}

#: Phases in which the file is published by nobody and holds nothing any more.
FINAL = frozenset({Phase.LINKED, Phase.DROPPED, Phase.ABANDONED})


class IllegalTransition(Exception):
    """An event that the machine does not allow in the file's phase (a bug)."""


@define(eq=False)
class Changes:
    """What a file's writes changed since some moment: the ranges written, and the offset
    below which its contents of that moment still show (a truncation lowers it)."""

    ranges: Ranges
    limit: int

    @classmethod
    def from_now(cls, size: int) -> Changes:
        """Nothing changed yet, in a file of ``size`` bytes."""
        return cls(Ranges(), size)

    def wrote(self, start: int, end: int) -> None:
        """``[start, end)`` was written."""
        self.ranges.add(start, end)

    def truncated(self, size: int) -> None:
        """The file was truncated (or extended) to ``size``."""
        self.ranges.cut(size)
        self.limit = min(self.limit, size)


@define(eq=False)
class LocalMeta:
    """What the client set on a file that is not (yet) in the grid."""

    mode: int | None = None
    mtime: float | None = None
    atime: float | None = None
    ctime: float = 0.0


@define(eq=False)
class LocalFile:
    """One local version of a file, with its phase, handles, staged bytes and upload job."""

    path: Path
    meta: LocalMeta
    generation: int
    phase: Phase = Phase.OPENING
    staged: StagedFile | None = None
    #: The grid version the changes lie over (None: the staged file holds all the contents).
    base: Base | None = None
    #: Where the contents differ from the base's (see :mod:`gateway.fs.sparse`).
    changed: Ranges = field(factory=Ranges)
    #: The base's bytes show below this offset only.
    limit: int = 0
    #: While an fsync uploads a snapshot: what changed since it was taken (then the
    #: snapshot's version becomes the base, and this is what differs from it).
    since: Changes | None = None
    #: Opened while an older version of its path was waiting for the grid (its changes
    #: copied): that version, until it is stored, and what changed since the open. Its
    #: stored version then becomes the base (:meth:`rebase`), so an fsync or CLOSE stores
    #: what changed since the open, not that version's changes again.
    over: LocalFile | None = None
    since_open: Changes | None = None
    #: That version's changes, when not copied at the open (:mod:`gateway.fs.under`): the
    #: contents are this file's changes over them, below ``limit``.
    under: Under | None = None
    handles: int = 0
    #: Changed since it was opened: the last CLOSE has something to publish.
    dirty: bool = False
    #: Whether any handle was closed by its client (rather than lost with its session).
    closed_by_client: bool = False
    #: Fires when OPENING ends (either way); ``failure`` says why it failed.
    ready: Deferred[None] = field(factory=Deferred)
    failure: BaseException | None = None
    #: Fires when CLOSING ends (either way).
    closed: Deferred[None] | None = None
    #: The upload job, once journaled.
    job_id: str | None = None
    #: An older version of its path was pending when it was journaled: its upload, once
    #: linked, drops the older versions' records (``UploadQueue.superseded``).
    superseding: bool = False
    #: Held while the upload links the file and while a rename or remove changes it.
    lock: DeferredLock = field(factory=DeferredLock)
    #: Held by an fsync while it stores a snapshot (one at a time per file).
    syncing: DeferredLock = field(factory=DeferredLock)
    #: What the upload stored (set by the upload, for an fsync to take as its new base).
    stored: Base | None = None
    #: While the changes are copied (an fsync's snapshot, a reopening): fires when done
    #: (writes and truncates wait for it; see :meth:`writes_held`).
    copying: Deferred[None] | None = None

    async def not_copying(self) -> None:
        """Return once nobody is copying this file's changes (at once, mostly)."""
        while self.copying is not None:
            await shared(self.copying)

    @asynccontextmanager
    async def writes_held(self) -> AsyncIterator[None]:
        """Writes and truncates of the file wait while this is entered (its changes are
        being copied, in a thread when large); one holder at a time."""
        await self.not_copying()
        copying = self.copying = Deferred()
        try:
            yield
        finally:
            self.copying = None
            copying.callback(None)

    def fire(self, event: Event) -> Phase:
        """Move to the phase ``event`` leads to from this one; the new phase."""
        try:
            self.phase = TRANSITIONS[(self.phase, event)]
        except KeyError:
            raise IllegalTransition(
                f"{event.value} is not possible for a file that is {self.phase.value}"
            ) from None
        return self.phase

    @property
    def abandoned(self) -> bool:
        """Whether a client removed or replaced the file while it was local."""
        return self.phase is Phase.ABANDONED

    @property
    def size(self) -> int:
        """The file's size now."""
        return self.staged.size if self.staged is not None else 0

    @property
    def unchanged_base(self) -> Base | None:
        """The base, when the contents are exactly it (a copy of a grid file, or a file
        opened for writing and not changed): publishing it links the base again. Not one
        with an overlay: its upload stores the overlay in a tree."""
        base = self.base
        if base is None or self.changed or self.limit < base.size or self.size != base.size:
            return None
        return None if base.overlaid else base

    def wrote(self, start: int, end: int) -> None:
        """Note that ``[start, end)`` was written (into the staged file)."""
        self.changed.add(start, end)
        if self.since is not None:
            self.since.wrote(start, end)
        if self.since_open is not None:
            self.since_open.wrote(start, end)

    def truncated(self, size: int) -> None:
        """Note that the file was truncated (or extended) to ``size``."""
        self.changed.cut(size)
        self.limit = min(self.limit, size)
        if self.since is not None:
            self.since.truncated(size)
        if self.since_open is not None:
            self.since_open.truncated(size)

    def rebase(self, stored: Base, since: Changes) -> Base | None:
        """Lie over ``stored`` from now on, a version of this file's contents as they were
        when ``since`` started: what differs from it is what changed since. The base it
        lay over before (its readers may be forgotten)."""
        old, self.base = self.base, stored
        self.changed = since.ranges
        self.limit = min(stored.size, since.limit)
        return old

    def on_base(self, base: Base | None) -> None:
        """Start over ``base``, unchanged (the staged file must be empty, of its size)."""
        self.base = base
        self.changed = Ranges()
        self.limit = base.size if base is not None else 0
        if self.staged is not None and base is not None:
            self.staged.truncate(base.size)  # a hole: nothing copied, no quota used

    def over_stored(self) -> bool:
        """Lie over the version it was opened over (``over``), once that is stored; whether
        it does now. Its journal record, if any, still names the older base: as good."""
        over, since = self.over, self.since_open
        if over is None or over.stored is None or since is None:
            return False
        self.rebase(over.stored, since)
        self.over = self.since_open = None
        self.drop_under()  # (its changes are only its own: the same ranges as ``since``)
        return True

    def drop_under(self) -> None:
        """Stop reading the version it was opened over from that version's staged file."""
        if self.under is not None:
            self.under.drop()
            self.under = None

    def held_bytes(self) -> int:
        """How many bytes its staged file holds of its contents (see :meth:`held_ranges`)."""
        return self.changed.covered if self.over_grid else self.size

    @property
    def over_grid(self) -> bool:
        """Whether its staged file holds its changes only (over a base, or a version not
        copied), not all of its contents."""
        return self.base is not None or self.under is not None

    def staged_bytes(self) -> Ranges:
        """Where its staged file holds bytes of its contents (its changes over a base, or
        what was written, the rest being zeros), to copy them."""
        assert self.staged is not None
        return self.changed if self.over_grid else self.staged.written

    def held_ranges(self) -> list[tuple[int, int]]:
        """The ranges of the contents its staged file holds: its changes over a base, or
        everything up to its size without one."""
        if self.over_grid:
            return list(self.changed)
        return [(0, self.size)] if self.size else []

    def journaled_inline(self) -> bool:
        """Whether the bytes its staged file holds go into its journal record (at most
        INLINE_BYTES): one flush then makes its CLOSE durable, with no fsync of the staged
        file, which a crash rebuilds from the record (:meth:`Volume.publish`)."""
        return self.held_bytes() <= INLINE_BYTES

    def upload_ranges(self) -> list[tuple[int, int]]:
        """Where the contents may differ from the base: what an upload must store."""
        assert self.under is None, "uploading a file whose older version was not copied"
        if self.base is None:
            return [(0, self.size)] if self.size else []
        return changed_ranges(self.changed, self.limit, self.size)

    def zero_ranges(self) -> list[tuple[int, int]]:
        """Where the contents are zeros nobody wrote (a sparse file's holes, a truncated file
        grown again): an upload stores them without reading them."""
        if self.base is not None:
            return holes(self.changed, min(self.limit, self.size), self.size)
        if self.staged is None:
            return []
        return holes(self.staged.written, 0, self.size)  # what was written is all it holds

    def attributes(self, now: float) -> FileAttributes:
        """What stat says about the file while it is local (the upload changes none of it)."""
        meta = self.meta
        ctime = meta.ctime or now
        mtime = meta.mtime if meta.mtime is not None else ctime
        return FileAttributes(
            kind="file",
            size=self.size,
            mode=meta.mode if meta.mode is not None else 0o644,
            mtime=mtime,
            atime=mtime,
            ctime=ctime,
        )
