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

from attrs import define, field, frozen
from twisted.internet.defer import Deferred, DeferredLock

from gateway.fs.interfaces import FileAttributes
from gateway.fs.paths import Path
from gateway.fs.staging import StagedFile


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
class LocalMeta:
    """What the client set on a file that is not (yet) in the grid."""

    mode: int | None = None
    mtime: float | None = None
    atime: float | None = None
    ctime: float = 0.0


@frozen
class Clone:
    """Contents that are exactly an immutable grid file's: a server-side copy, or a file
    opened for writing and not written yet. Its bytes are read from the grid; the first
    change copies them into the staged file (and the clone is gone)."""

    cap: str = field(repr=False)  # a read capability: a secret
    size: int


@define(eq=False)
class LocalFile:
    """One local version of a file, with its phase, handles, staged bytes and upload job."""

    path: Path
    meta: LocalMeta
    generation: int
    phase: Phase = Phase.OPENING
    staged: StagedFile | None = None
    #: The contents are a grid file's, not the (empty) staged file's.
    clone: Clone | None = None
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
    #: Held while the upload links the file and while a rename or remove changes it.
    lock: DeferredLock = field(factory=DeferredLock)
    #: Held while a clone's bytes are copied into the staged file.
    copying: DeferredLock = field(factory=DeferredLock)

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
        if self.clone is not None:
            return self.clone.size
        return self.staged.size if self.staged is not None else 0

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
