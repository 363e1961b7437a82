"""Directory changes an fsync publishes at once: journaled only when they must be.

An fsync links its file's new version into the directory and publishes the
directory before it answers (:meth:`gateway.fs.volume.Volume.upload`). Its
journal record (the commit, with the file's cap: tens of KiB when the cap
carries an overlay, :mod:`gateway.objects.overlay`) was written, then marked
done once the publish was in the grid, and every few fsyncs the emptied journal
was reset with a flush of its own: about 6 % of an fsync's time (``docs/performance.rst``)
for a record nobody needed. The client is answered only once the change is in the
grid, so a crash before that loses nothing it was told it had.

Such a commit is kept here instead (:meth:`DirectoryWriteBack.commit` with
``journal=False``), and written to the journal only when it must be:

- before any commit that is journaled, so the journal keeps every change in
  order (a rename of the file made while its publish runs replays over it);
- when someone waits for the journal to be durable
  (:meth:`DirectoryWriteBack.durable`: the file moved meanwhile and its link is
  published later, or a CLOSE), and at stop for whatever was not published.

Once published it is dropped, never written.
"""

from __future__ import annotations

from typing import Any

from gateway.intents.log import IntentLog


class Unjournaled:
    """The commits kept out of the journal, by sequence number, oldest first."""

    def __init__(self, intents: IntentLog) -> None:
        self._intents = intents
        self._records: dict[int, Any] = {}

    def keep(self, seq: int, record: Any) -> None:
        """Keep a commit's record instead of journaling it."""
        self._records[seq] = record

    def published(self, seq: int) -> None:
        """A commit is in the grid: it is never written."""
        self._records.pop(seq, None)

    def write(self) -> None:
        """Journal every commit kept, oldest first (not flushed: the caller's flush covers
        them). Raises the OSError of a write that fails; the commits not written stay."""
        for seq in sorted(self._records):
            self._intents.put(str(seq), self._records[seq])
            del self._records[seq]

    def write_at_stop(self) -> None:
        """At stop: journal what was not published, for the next start. A write that fails
        (a full disk) loses them as a crash would: none was answered."""
        try:
            self.write()
        except OSError:
            pass
