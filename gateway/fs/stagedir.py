"""The staging directory's files on disk: made when asked, or ahead in a thread (spares).

Creating a file costs the filesystem a journaled inode and directory entry (0.1 to 1 ms
on ext4 under fsync load), and a client copying a tree opens a new file for each of its
files. So :meth:`StagingDirectory.take` with a thread runner hands out one of up to
``spare_files`` empty files created beforehand in a thread, and creates more in a thread
when they run low. A spare is an empty staged file no journal record names: the cleanup
of leftovers at start removes any left by a stop or crash, and :meth:`drop_spares`
(called when no upload is pending and no file is open for writing,
:mod:`gateway.fs.spares`) removes them while the node runs, so an idle staging directory
is empty. Most new files never come here: they start in memory
(:mod:`gateway.fs.staging`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from functools import partial
from pathlib import Path

from twisted.logger import Logger
from twisted.python.failure import Failure

from gateway.threads import Threads

log = Logger()


class StagingDirectory:
    """Makes the staged files of one directory, and keeps spares made ahead."""

    def __init__(
        self,
        directory: Path,
        spare_files: int,
        started: Callable[[], None],
        ended: Callable[[object], None],
    ) -> None:
        """``started``/``ended`` tell the staging area a thread call began and returned (it
        waits for them when it goes idle)."""
        self.directory = directory
        self.spare_files = spare_files
        self._started = started
        self._ended = ended
        self._spares: list[tuple[Path, int]] = []
        self._making_spares = False
        self._drop_made = False  # spares being made when they were dropped: drop them too

    def reserve_name(self) -> Path:
        """A new staged file's path, not created (a journal record may name it: a crash
        rebuilds the file from the record, :func:`gateway.fs.adopted.restore_staged`)."""
        return self.directory / f"{secrets.token_hex(12)}.staged"

    def take(self, threads: Threads | None = None) -> tuple[Path, int]:
        """A new, empty file (0600): its path and a read-write descriptor. With ``threads``,
        taken from the spares, which are made again in a thread when they run low."""
        if threads is None:
            return _new_staged_file(self.reserve_name())
        self._drop_made = False
        wanted = self.spare_files
        if wanted and len(self._spares) <= wanted // 2 and not self._making_spares:
            self._making_spares = True
            self._started()
            # As many as are missing: making ``wanted`` more, then removing what passed the
            # count on the reactor thread, cost a file created and one removed per file.
            missing = wanted - len(self._spares)
            made = threads(partial(_new_staged_files, self.directory, missing))
            made.addBoth(self._spares_made)
        if self._spares:
            return self._spares.pop()
        return _new_staged_file(self.reserve_name())

    def _spares_made(self, result: list[tuple[Path, int]] | Failure) -> None:
        self._making_spares = False
        if isinstance(result, Failure):  # a full disk, say: take() makes its own and says so
            log.info("spare staged files could not be made: {why}", why=result.getErrorMessage())
        else:
            self._spares.extend(result)
            if self._drop_made:
                self.drop_spares()
            while len(self._spares) > self.spare_files:
                _remove_spare(*self._spares.pop(0))
        self._ended(None)

    def drop_spares(self) -> None:
        """Remove the spare files (and those being made now, once they are)."""
        self._drop_made = self._making_spares
        spares, self._spares = self._spares, []
        for path, fd in spares:
            _remove_spare(path, fd)

    @property
    def spares(self) -> int:
        """Empty staged files made ahead and not handed out yet."""
        return len(self._spares)


def _new_staged_file(path: Path) -> tuple[Path, int]:
    """Create an empty staged file (0600) at ``path``: the path and a read-write descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    return path, fd


def _remove_spare(path: Path, fd: int) -> None:
    os.close(fd)
    path.unlink(missing_ok=True)


def _new_staged_files(directory: Path, count: int) -> list[tuple[Path, int]]:
    """In a thread: create ``count`` empty staged files (fewer if the disk refuses more)."""
    made: list[tuple[Path, int]] = []
    for _ in range(count):
        try:
            made.append(_new_staged_file(directory / f"{secrets.token_hex(12)}.staged"))
        except OSError:
            if not made:
                raise
            break
    return made
