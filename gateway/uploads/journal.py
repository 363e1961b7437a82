"""The upload journal: a durable record per acknowledged upload not yet in the grid.

A job's record is made durable before the client is told its file is safe,
and a "done" record follows only after the upload has been published. After a
crash or a restart every job without its "done" is an upload to resume.

It is one of the two users of the intent log (:mod:`gateway.intents.log`:
``journal.log`` in a 0700 directory, group commit in a thread, compaction),
each job an intent keyed by its id. A small file's bytes (up to
:data:`INLINE_BYTES`) travel inside its record, so the staged copy needs no
flush of its own: closing a small file costs one flush. Records of earlier
versions are still read: one ``<id>.upload`` file per job (removed when the job
is done), and the log's own older record names.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import cbor2
from attrs import evolve, field, frozen
from twisted.internet.defer import Deferred

from gateway.intents.log import IN_PLACE_BELOW, IntentLog, Operation
from gateway.threads import Threads
from storage.redolog import fsync_directory

RECORD_SUFFIX = ".upload"
LOG_NAME = "journal.log"

INLINE_BYTES = 64 * 1024
"""Files up to this size are journaled with their bytes."""


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
    """The bytes of the file held locally when they are few (its staged copy is rebuilt from
    them after a crash): the whole file, or the ranges :meth:`held` names."""
    changed: int | None = None
    """For a change to a file in the grid: how many bytes the upload stores."""

    def held(self) -> list[tuple[int, int]]:
        """The ranges of the file its staged copy holds: the changed ranges over a base
        version (``target["changed"]``), or the whole file."""
        if self.target.get("base") or self.target.get("clone"):  # (a clone: none changed)
            return [(int(s), int(e)) for s, e in self.target.get("changed", ())]
        return [(0, self.size)] if self.size else []

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
                **({} if self.changed is None else {"changed": self.changed}),
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
                changed=None if record.get("changed") is None else int(record["changed"]),
            )
        except (KeyError, TypeError, cbor2.CBORDecodeError) as e:
            raise ValueError(f"damaged upload record: {type(e).__name__}") from None


class StagedBytes(Protocol):
    """A staged file's bytes (:class:`gateway.fs.staging.StagedFile`)."""

    @property
    def discarded(self) -> bool:
        """Whether it was discarded (nothing can be read)."""

    def read(self, offset: int, length: int) -> bytes:
        """Bytes at ``offset``, clamped at its end."""


def _held_bytes(job: UploadJob, staged: StagedBytes | None) -> bytes:
    """The bytes of the ranges a job's file holds, one after another (zeros past its end):
    from ``staged`` while it is there, else from the file the record names."""
    if staged is not None and not staged.discarded:
        return b"".join(staged.read(s, e - s).ljust(e - s, b"\0") for s, e in job.held())
    fd = os.open(job.staged, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return b"".join(os.pread(fd, e - s, s).ljust(e - s, b"\0") for s, e in job.held())
    finally:
        os.close(fd)


def _check_id(job_id: str) -> None:
    """Refuse a job id that could not name a file of its own."""
    if not job_id.isalnum():
        raise ValueError("bad job id")


def new_job_id() -> str:
    """A fresh, unguessable job id (also used in file names)."""
    return secrets.token_hex(12)


class UploadJournal:
    """The journal of one node: its intent log, and any one-file records of earlier versions."""

    def __init__(self, directory: Path, in_place_below: float = IN_PLACE_BELOW):
        """The journal in ``directory``; ``in_place_below``: see :class:`IntentLog`."""
        self.directory = directory
        self._in_place_below = in_place_below
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.damaged: list[str] = []
        self._intents: IntentLog | None = None
        #: Jobs whose records hold the file's bytes, and the staged file they came from.
        self._inline: dict[str, StagedBytes | None] = {}
        # Whether one-file records of an earlier version are here (no new one is ever made):
        # only then does removing a job look for its file.
        self._legacy_files = any(directory.glob(f"*{RECORD_SUFFIX}"))

    def _path(self, job_id: str) -> Path:
        _check_id(job_id)
        return self.directory / f"{job_id}{RECORD_SUFFIX}"

    def _open(self, repair: bool = True) -> IntentLog:
        intents = IntentLog(
            self.directory / LOG_NAME,
            legacy=self._legacy,
            repair=repair,
            in_place_below=self._in_place_below,
        )
        self.damaged.extend(intents.damaged)
        return intents

    def _legacy(self, record: dict[str, Any]) -> Iterable[Operation]:
        """Records of the log's format before the intent log: ``job`` and ``done`` by id."""
        if record.get("op") == "job" and isinstance(record.get("job"), bytes):
            try:
                return [("put", UploadJob.from_bytes(record["job"]).job_id, record["job"])]
            except ValueError:
                self.damaged.append(f"{LOG_NAME}: an unreadable record")
        elif record.get("op") == "done" and record.get("id") is not None:
            return [("done", str(record["id"]), None)]
        return []

    def _writer(self) -> IntentLog:
        if self._intents is None:
            self._intents = self._open()
            self._inline = {
                job_id: None
                for job_id, encoded in self._intents.live.items()
                if UploadJob.from_bytes(encoded).data is not None
            }
        return self._intents

    def record(self, job: UploadJob, sync: bool = True, staged: StagedBytes | None = None) -> None:
        """Write (or rewrite) a job's record durably (``sync=False``: see :meth:`flushed`).

        Rewriting a small file's job without its bytes (callers need not keep them in
        memory) takes them from its ``staged`` file again (the one its first record was
        given, which may be in memory; else the file its record names), so the record
        keeps them.
        """
        _check_id(job.job_id)
        intents = self._writer()
        if job.data is None and job.job_id in self._inline:
            job = evolve(job, data=_held_bytes(job, self._inline[job.job_id]))
        intents.put(job.job_id, job.to_bytes())
        if job.data is not None:
            self._inline[job.job_id] = staged or self._inline.get(job.job_id)
        if sync:
            intents.sync()

    @property
    def recorded(self) -> int:
        """How many jobs are recorded and not removed (0 before the journal is written)."""
        return 0 if self._intents is None else len(self._intents.live)

    def flushed(self, threads: Threads, in_place: bool = False) -> Deferred[None]:
        """Fires once every record appended so far is durable (errback: the flush's OSError);
        the flush runs in a thread, shared by every record appended meanwhile, or with
        ``in_place`` (someone waits) in this one while flushes are fast (see
        :mod:`gateway.intents.log`)."""
        return self._writer().flushed(threads, in_place)

    def remove(self, job_id: str) -> None:
        """Forget a job whose upload is published (durably)."""
        _check_id(job_id)
        self._writer().done(job_id)
        self._inline.pop(job_id, None)
        if not self._legacy_files:
            return
        try:
            os.unlink(self._path(job_id))
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
        if self._intents is not None or (self.directory / LOG_NAME).exists():
            intents = self._intents or self._open(repair=False)
            try:
                for encoded in intents.live.values():
                    jobs.append(UploadJob.from_bytes(encoded))
            finally:
                if intents is not self._intents:
                    intents.close()
        # Stable: jobs made in the same instant keep the log's order, which is the order
        # they were made in (the later of two versions of one path is adopted last).
        jobs.sort(key=lambda job: job.created)
        return iter(jobs)
