"""The upload journal: a durable record per acknowledged upload not yet in the grid.

A job's record is made durable before the client is told its file is safe,
and a "done" record follows only after the upload has been published. After a
crash or a restart every job without its "done" is an upload to resume.

Records are CBOR, appended to one log (``journal.log``, the checksummed
record format of :mod:`storage.redolog`) in a 0700 directory: they hold the
target's capability, which is a secret. Each append is one ``fdatasync`` of
the log, instead of a temp file, fsync, rename and directory fsync per record.
A small file's bytes (up to :data:`INLINE_BYTES`) travel inside its record, so
the staged copy needs no flush of its own: closing a small file costs one
flush. When the log passes :data:`COMPACT_BYTES` and is more than half finished
jobs' records, it is rewritten with only the live ones. Records of earlier
versions (one ``<id>.upload`` file each) are still read, and removed when their
job is done.

Group commit. A record appended without a flush is made durable by
:meth:`UploadJournal.flushed`: the ``fdatasync`` runs in a thread (the reactor
serves other requests meanwhile), and every record appended while one flush
runs is covered by the next one, so files closed in quick succession share
flushes.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import cbor2
from attrs import evolve, field, frozen
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from gateway.threads import Threads
from storage.redolog import RedoLog, fsync_directory

RECORD_SUFFIX = ".upload"
LOG_NAME = "journal.log"

INLINE_BYTES = 64 * 1024
"""Files up to this size are journaled with their bytes."""

COMPACT_BYTES = 4 * 1024 * 1024
"""Size of the log past which finished jobs' records are dropped from it."""

"""Runs a blocking call in a thread; the Deferred fires in the reactor once it has returned."""


@frozen
class UploadJob:
    """One pending upload: the staged bytes, where they go, and how the tries went."""

    job_id: str
    staged: str
    size: int
    display: str
    target: dict[str, Any] = field(repr=False)
    created: float = 0.0
    attempts: int = 0
    last_error: str | None = None
    data: bytes | None = field(default=None, repr=False)
    """The file's bytes, for a small file (its staged copy is rebuilt from them after a crash)."""

    def failed(self, error: str) -> UploadJob:
        """This job after one more failed attempt."""
        return evolve(self, attempts=self.attempts + 1, last_error=error)

    def to_bytes(self) -> bytes:
        """The record's encoding."""
        return cbor2.dumps(
            {
                "v": 1,
                "id": self.job_id,
                "staged": self.staged,
                "size": self.size,
                "display": self.display,
                "target": self.target,
                "created": self.created,
                "attempts": self.attempts,
                "last_error": self.last_error,
                **({} if self.data is None else {"data": self.data}),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> UploadJob:
        """Decode a record; raises ValueError when it is not one."""
        try:
            record = cbor2.loads(data)
            if not isinstance(record, dict) or record.get("v") != 1:
                raise ValueError("unknown record version")
            return cls(
                job_id=str(record["id"]),
                staged=str(record["staged"]),
                size=int(record["size"]),
                display=str(record["display"]),
                target=dict(record["target"]),
                created=float(record["created"]),
                attempts=int(record["attempts"]),
                last_error=record["last_error"],
                data=None if record.get("data") is None else bytes(record["data"]),
            )
        except (KeyError, TypeError, cbor2.CBORDecodeError) as e:
            raise ValueError(f"damaged upload record: {type(e).__name__}") from None


def new_job_id() -> str:
    """A fresh, unguessable job id (also used in file names)."""
    return secrets.token_hex(12)


class UploadJournal:
    """The journal of one node: its log, and any one-file records of earlier versions."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.damaged: list[str] = []
        self._log: RedoLog | None = None
        self._live: dict[str, bytes] = {}
        self._inline: set[str] = set()  # jobs whose records hold the file's bytes
        self._live_bytes = 0  # the size of the live jobs' records
        #: Who waits for a flush in a thread, and up to which point of the log.
        self._flush_waiters: list[tuple[int, Deferred[None]]] = []
        self._flushing = False

    def _path(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise ValueError("bad job id")
        return self.directory / f"{job_id}{RECORD_SUFFIX}"

    def _records(self, log: RedoLog) -> dict[str, bytes]:
        """The live jobs' encoded records in the log, in the order they were first written."""
        live: dict[str, bytes] = {}
        for record in log.records():
            if record.get("op") == "job" and isinstance(record.get("job"), bytes):
                try:
                    live[UploadJob.from_bytes(record["job"]).job_id] = record["job"]
                except ValueError:
                    self.damaged.append(f"{LOG_NAME}: an unreadable record")
            elif record.get("op") == "done":
                live.pop(str(record.get("id")), None)
        return live

    def _writer(self) -> RedoLog:
        if self._log is None:
            self._log = RedoLog(self.directory / LOG_NAME)
            self._live = self._records(self._log)
            self._live_bytes = sum(len(encoded) for encoded in self._live.values())
            self._inline = {
                job_id
                for job_id, encoded in self._live.items()
                if UploadJob.from_bytes(encoded).data is not None
            }
        return self._log

    def record(self, job: UploadJob, sync: bool = True) -> None:
        """Write (or rewrite) a job's record durably (``sync=False``: see :meth:`flushed`).

        Rewriting a small file's job without its bytes (callers need not keep them in
        memory) takes them from its staged file again, so the record keeps them.
        """
        self._path(job.job_id)  # checks the id
        log = self._writer()
        if job.data is None and job.job_id in self._inline:
            with open(job.staged, "rb") as staged:
                job = evolve(job, data=staged.read(job.size))
        encoded = job.to_bytes()
        log.append({"op": "job", "job": encoded}, sync)
        self._live_bytes += len(encoded) - len(self._live.get(job.job_id, b""))
        self._live[job.job_id] = encoded
        if job.data is not None:
            self._inline.add(job.job_id)

    def flushed(self, threads: Threads) -> Deferred[None]:
        """Fires once every record appended so far is durable (errback: the flush's OSError).

        The flush runs in a thread; while one runs, the records appended meanwhile wait for
        the next, which covers them all.
        """
        log = self._writer()
        point = log.appended
        if log.durable >= point:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._flush_waiters.append((point, waiter))
        if not self._flushing:
            self._flush(threads)
        return waiter

    def _flush(self, threads: Threads) -> None:
        log = self._writer()
        fd, point = log.sync_point()
        self._flushing = True
        threads(partial(_fdatasync_and_close, fd)).addBoth(self._flush_done, threads, point)

    def _flush_done(self, result: Failure | None, threads: Threads, point: int) -> None:
        self._flushing = False
        log = self._writer()
        error: BaseException | None = None
        if isinstance(result, Failure):
            error = result.value
            if not isinstance(error, OSError):
                # Not run (a stopping thread pool, say): flush here instead.
                try:
                    log.sync()
                    error = None
                except OSError as e:
                    error = e
        if error is None:
            log.synced(point)
        waiters, self._flush_waiters = self._flush_waiters, []
        done = [waiter for wanted, waiter in waiters if wanted <= log.durable]
        failed = (
            [] if error is None else [w for wanted, w in waiters if log.durable < wanted <= point]
        )
        self._flush_waiters = [
            (wanted, w) for wanted, w in waiters if wanted > max(log.durable, point)
        ]
        if self._flush_waiters:
            self._flush(threads)
        # Last: a waiter's callbacks may append records and ask for flushes of their own.
        for waiter in done:
            waiter.callback(None)
        for waiter in failed:
            waiter.errback(error)

    def remove(self, job_id: str) -> None:
        """Forget a job whose upload is published (durably)."""
        legacy = self._path(job_id)
        log = self._writer()
        if job_id in self._live:
            log.append({"op": "done", "id": job_id})
            self._inline.discard(job_id)
            self._live_bytes -= len(self._live.pop(job_id))
            if log.size > COMPACT_BYTES and log.size > 2 * self._live_bytes:  # mostly finished
                log.rewrite([{"op": "job", "job": encoded} for encoded in self._live.values()])
        try:
            os.unlink(legacy)
        except FileNotFoundError:
            return
        fsync_directory(self.directory)

    def load(self) -> Iterator[UploadJob]:
        """Every job recorded, oldest first; damaged records are set aside and named in .damaged."""
        jobs = []
        for path in self.directory.glob(f"*{RECORD_SUFFIX}"):
            try:
                jobs.append(UploadJob.from_bytes(path.read_bytes()))
            except (ValueError, OSError):
                self.damaged.append(path.name)
                path.rename(path.with_suffix(".damaged"))
        if (self.directory / LOG_NAME).exists():
            log = self._log or RedoLog(self.directory / LOG_NAME, repair=False)
            try:
                for encoded in self._records(log).values():
                    jobs.append(UploadJob.from_bytes(encoded))
                if log.damaged_bytes:
                    self.damaged.append(
                        f"{LOG_NAME}: {log.damaged_bytes} bytes after the last intact record"
                    )
            finally:
                if log is not self._log:
                    log.close()
        jobs.sort(key=lambda job: (job.created, job.job_id))
        return iter(jobs)


def _fdatasync_and_close(fd: int) -> None:
    """In a thread: flush a duplicate of the log's descriptor, then close it."""
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
