"""The overlay: the local files of one root directory, by path, and their transitions.

Stat, readdir, rename and remove consult the overlay before the grid, so a
file is visible with its current size from the moment its OPEN starts until
its upload has linked it, and a rename or remove of a file still open or still
uploading re-targets or abandons it. The maps below change only here, in one
method per transition of :mod:`gateway.fs.localfile`'s machine:

- ``writing``: path -> the file open for writing there (OPENING, OPEN, CLOSING);
- ``pending``: path -> the newest closed version waiting for the grid
  (CLOSING once its record is appended, JOURNALED, UPLOADING);
- ``by_job``: upload job -> its file, until the job has finished (abandoned
  files stay, so the job can drop their staged bytes);
- ``linked``: path -> the newest generation linked there (an older upload never
  replaces a newer version).
"""

from __future__ import annotations

from collections.abc import Iterator

from twisted.internet.defer import Deferred

from gateway.fs.localfile import FINAL, Event, LocalFile, LocalMeta, Phase
from gateway.fs.paths import Path
from gateway.fs.pathtable import PathTable

LINKED_KEPT = 1024
"""Linked generations kept before those of paths with nothing in flight are dropped."""


class Overlay:
    """Open-for-write and pending files of one root, by path."""

    def __init__(self) -> None:
        # By path, indexed by directory: a rename or a listing looks at what lies under
        # its paths, not at every file in flight (see gateway.fs.pathtable).
        self.writing: PathTable[LocalFile] = PathTable()
        self.pending: PathTable[LocalFile] = PathTable()
        self.by_job: dict[str, LocalFile] = {}
        self.linked: PathTable[int] = PathTable()
        self._generation = 0

    def next_generation(self) -> int:
        """A number ordering the versions of files as they were closed."""
        self._generation += 1
        return self._generation

    # -- looking ---------------------------------------------------------------------

    def local(self, path: Path) -> LocalFile | None:
        """The local file at a path, the one open for writing first."""
        return self.writing.get(path) or self.pending.get(path)

    def children(self, directory: Path) -> Iterator[tuple[str, LocalFile]]:
        """Local files directly inside ``directory``."""
        for table in (self.pending, self.writing):
            for path in table.children(directory):
                yield path[-1], table[path]

    def has_under(self, directory: Path) -> bool:
        """Whether any local file lies inside ``directory`` (at any depth)."""
        return self.pending.has_under(directory) or self.writing.has_under(directory)

    def pending_at_or_under(self, path: Path) -> list[LocalFile]:
        """The files waiting for the grid at ``path`` or inside it."""
        return [self.pending[p] for p in self.pending.at_or_under(path)]

    # -- transitions -------------------------------------------------------------------

    def opening(self, path: Path, meta: LocalMeta) -> LocalFile:
        """OPEN of a path with no file open there: a new file, registered at once."""
        file = LocalFile(path, meta, self.next_generation(), handles=1)
        self.writing[path] = file
        return file

    def snapshot(self, file: LocalFile, meta: LocalMeta) -> LocalFile:
        """fsync of an open file: a new version of it that goes straight to CLOSING (it is
        never open; the open file stays as it is, and a later close of it is newer)."""
        copy = LocalFile(file.path, meta, self.next_generation(), phase=Phase.CLOSING)
        copy.ready.callback(None)  # (never opening)
        file.generation = self.next_generation()
        return copy

    def ready(self, file: LocalFile) -> None:
        """Its starting contents are in place: handles may use it."""
        file.fire(Event.READY)
        file.ready.callback(None)

    def failed(self, file: LocalFile, error: BaseException) -> None:
        """Its OPEN failed: it goes, and every handle waiting for it gets ``error``."""
        file.failure = error
        if file.phase is Phase.OPENING:
            file.fire(Event.FAILED)
        self._unfile_writing(file)
        file.ready.callback(None)

    def released(self, file: LocalFile) -> None:
        """Its last handle went with nothing to publish (unchanged, or no handle closed by
        a client): it goes."""
        if file.phase is Phase.OPEN:
            file.fire(Event.RELEASE)
        self._unfile_writing(file)

    def closing(self, file: LocalFile) -> Deferred[None]:
        """Its last CLOSE starts making it durable. OPENs of the path wait for the end of
        that: the caller fires the Deferred returned, however the CLOSE ends."""
        file.fire(Event.CLOSE)
        file.closed = Deferred()
        return file.closed

    def appended(self, file: LocalFile, job_id: str) -> None:
        """Its upload record is appended (durable once flushed): from now on it is the
        path's pending version, and its job's."""
        assert file.phase is Phase.CLOSING
        self._unfile_writing(file)
        file.job_id = job_id
        file.superseding = file.path in self.pending
        self.pending[file.path] = file
        self.by_job[job_id] = file

    def journaled(self, file: LocalFile) -> None:
        """Its upload record is durable: the CLOSE is acknowledged (a file abandoned
        meanwhile stays abandoned; its job drops it)."""
        if file.phase is Phase.CLOSING:
            file.fire(Event.JOURNALED)

    def unsaved(self, file: LocalFile) -> None:
        """It could not be made durable: it goes, as if never closed (the CLOSE fails)."""
        if file.phase is Phase.CLOSING:
            file.fire(Event.UNSAVED)
        self._unfile_writing(file)
        self._unfile_pending(file)
        if file.job_id is not None:
            self.by_job.pop(file.job_id, None)

    def adopted(self, file: LocalFile, job_id: str) -> None:
        """A file journaled by an earlier run, visible again until it is linked."""
        file.phase = Phase.JOURNALED
        file.ready.callback(None)  # (never opening)
        file.job_id = job_id
        file.superseding = file.path in self.pending
        self.pending[file.path] = file
        self.by_job[job_id] = file

    def uploading(self, file: LocalFile) -> None:
        """The upload queue starts its upload (of a file journaled and not abandoned)."""
        file.fire(Event.UPLOAD)

    def retry(self, file: LocalFile) -> None:
        """Its upload failed; the queue will try again."""
        if file.phase is Phase.UPLOADING:
            file.fire(Event.RETRY)

    def may_link(self, file: LocalFile) -> bool:
        """Whether this version may be linked at its path (no newer one was), reserving
        the path for it when it may: an older version still uploading must not be linked
        after it, even by a later batch."""
        if file.abandoned or file.generation < self.linked.get(file.path, 0):
            return False
        self.linked[file.path] = file.generation
        if len(self.linked) > max(LINKED_KEPT, 2 * (len(self.by_job) + len(self.pending))):
            self._forget_settled_links()
        return True

    def jobs_at(self, path: Path) -> Iterator[tuple[str, LocalFile]]:
        """The upload jobs of the versions of ``path`` (renames re-target them), with
        their files."""
        return ((job_id, f) for job_id, f in self.by_job.items() if f.path == path)

    def superseded_by(self, file: LocalFile) -> list[str]:
        """This version is linked: the jobs of older versions of its path, which are never
        linked now (abandoned: a rename of the path, which moves only what is in flight
        at it, must not leave them to link where it was); none looked for unless one was
        pending when it was journaled (a walk of every job in flight per upload cost a
        ``cp -r`` its square)."""
        if not file.superseding:
            return []
        older = [(j, f) for j, f in self.jobs_at(file.path) if f.generation < file.generation]
        for _, version in older:
            _abandoned(version)
        return [job_id for job_id, _ in older]

    def _forget_settled_links(self) -> None:
        """Drop the linked generations of paths with no version in flight: only a job's file
        (or one still open or pending) can ask :meth:`may_link` later, and every version made
        from now on is newer. Keeps the table (and every rename's walk of it) the size of
        what is in flight, not of every path ever written."""
        live = {f.path for f in self.by_job.values()}
        live.update(self.pending, self.writing)
        self.linked = PathTable((path, g) for path, g in self.linked.items() if path in live)

    def finished(self, job_id: str) -> LocalFile | None:
        """The job is over (linked, dropped as obsolete, or abandoned): the file goes."""
        file = self.by_job.pop(job_id, None)
        if file is None:
            return None
        if file.phase is Phase.UPLOADING:
            file.fire(Event.LINK)
        self._unfile_pending(file)
        return file

    def abandon_writing(self, path: Path) -> LocalFile | None:
        """A remove (or a rename onto the path) of a file open for writing: its handles
        publish nothing. The file abandoned, if any."""
        return _abandoned(self.writing.pop(path, None))

    def abandon_pending(self, path: Path) -> LocalFile | None:
        """A remove (or a rename onto the path) of a file waiting for the grid: it is never
        linked. The caller holds the file's lock, so no upload is linking it meanwhile."""
        return _abandoned(self.pending.pop(path, None))

    def older_versions(self, newest: list[LocalFile]) -> list[LocalFile]:
        """The older versions still in flight of the paths of these pending files (each the
        newest of its path): a rename moves them too and a remove abandons them too, or
        their uploads would link them where the file no longer is. Looked for only when one
        of them was journaled over an older version (walking every job in flight at each
        rename would cost an ``rsync`` of many files its square)."""
        paths = {file.path for file in newest if file.superseding}
        if not paths:
            return []
        return [
            file
            for file in self.by_job.values()
            if file.path in paths and file.phase not in FINAL and file not in newest
        ]

    def versions_at_or_under(self, path: Path) -> list[LocalFile]:
        """The files waiting for the grid at ``path`` or inside it, older versions too."""
        newest = self.pending_at_or_under(path)
        return newest + self.older_versions(newest)

    def abandon_version(self, file: LocalFile) -> None:
        """A remove (or a rename onto its path) of an older version still in flight: it is
        never linked (the caller holds its lock)."""
        _abandoned(file)

    def move(self, old: Path, new: Path, held: list[LocalFile]) -> list[LocalFile]:
        """Re-target every local file at or under ``old`` to the same place under ``new``,
        and the older versions among ``held`` (:meth:`versions_at_or_under`, locked by the
        caller); the versions of ``held`` still waiting for the grid, whose records must
        now name the new place."""
        depth = len(old)
        waiting = [file for file in held if file.phase not in FINAL]
        older = [file for file in waiting if self.pending.get(file.path) is not file]
        for table in (self.writing, self.pending):
            for path in table.at_or_under(old):
                file = table.pop(path)
                file.path = new + path[depth:]
                table[file.path] = file
        for file in older:
            file.path = new + file.path[depth:]
        for path in self.linked.at_or_under(new):
            del self.linked[path]  # whatever was at the target is replaced
        for path in self.linked.at_or_under(old):
            self.linked[new + path[depth:]] = self.linked.pop(path)
        return waiting

    def replaced(self, file: LocalFile) -> bool:
        """Whether a newer version of the file's path is journaled (its record durable,
        standing on its own): storing this one would be undone by it. A log appended to
        by one CLOSE after another stores its last version, not every one."""
        newest = self.pending.get(file.path)
        return (
            newest is not None
            and newest.generation > file.generation
            and newest.phase is Phase.JOURNALED
        )

    def stored(self, file: LocalFile) -> LocalFile | None:
        """A version's upload stored it: the file opened over it while it was pending, if
        still open at its path, lies over what was stored from now on (its changes are
        those made since it was opened). That file, or None."""
        state = self.writing.get(file.path)
        if state is not None and state.over is file and state.over_stored():
            return state
        return None

    def _unfile_writing(self, file: LocalFile) -> None:
        if self.writing.get(file.path) is file:
            del self.writing[file.path]

    def _unfile_pending(self, file: LocalFile) -> None:
        if self.pending.get(file.path) is file:
            del self.pending[file.path]


def _abandoned(file: LocalFile | None) -> LocalFile | None:
    if file is not None and file.phase not in FINAL:
        file.fire(Event.ABANDON)
    return file
