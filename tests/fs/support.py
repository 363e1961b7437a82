"""Helpers of the filesystem tests: "threads" the test runs by hand, an in-memory store."""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.fs.gridfs import GridFilesystem
from gateway.fs.interfaces import FileAttributes, OpenFlags, SetAttributes
from gateway.fs.localfile import Phase
from gateway.fs.staging import StagingArea
from gateway.fs.volume import Volume
from gateway.intents.log import IN_PLACE_BELOW
from gateway.objects.caps import DirectoryWriteCap
from gateway.objects.crypto import GatewaySecrets
from gateway.objects.immutable_format import EncodingParams
from gateway.objects.store import ObjectStore
from gateway.uploads.journal import UploadJob, UploadJournal
from gateway.uploads.queue import UploadQueue
from tests.objects.grid import make_grid

CREATE = OpenFlags(write=True, create=True, truncate=True)
READ_WRITE = OpenFlags(read=True, write=True)
READ = OpenFlags(read=True)

T = TypeVar("T")


class ManualThreads:
    """A thread runner the test drives: each call waits until the test runs it.

    ``running`` is true while a call runs, so a fake system call can tell it is "in a
    thread" rather than in the reactor.
    """

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.running = False

    def __call__(self, call: Callable[[], T], /) -> Deferred[T]:
        result: Deferred[T] = Deferred()
        self.queue.append((call, result))
        return result

    def run_next(self) -> None:
        """Run the oldest waiting call "in a thread" and deliver its result (or the exception
        it raised) to the reactor."""
        call, result = self.queue.pop(0)
        self.running = True
        try:
            value = call()
        except Exception:
            self.running = False
            result.errback(Failure())
            return
        self.running = False
        result.callback(value)

    def run_all(self) -> None:
        """Run calls until none waits (a result may start another call)."""
        while self.queue:
            self.run_next()


def recorded(monkeypatch: pytest.MonkeyPatch, call: str) -> list[int]:
    """The descriptors ``os.<call>`` (``fsync``, ``fdatasync``) is asked to flush from now
    on, in order; each is still flushed for real."""
    seen: list[int] = []
    real = getattr(os, call)

    def recording(fd: int) -> None:
        seen.append(fd)
        real(fd)

    monkeypatch.setattr(os, call, recording)
    return seen


def drive(coroutine: Coroutine[Any, Any, T], threads: ManualThreads) -> T:
    """Run a coroutine, running the background calls it waits for, and return its result."""
    outcome: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
    while not outcome:
        assert threads.queue, "the coroutine waits for something that is not a background call"
        threads.run_next()
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]  # type: ignore[no-any-return]


def memory_store(clock: Any, servers: int = 1) -> ObjectStore:
    """An object store on ``servers`` in-memory storage servers, keeping one share (1-of-1)."""
    grid = make_grid(servers)
    return ObjectStore(
        lambda: grid,
        GatewaySecrets(convergence=b"c" * 32, lease=b"l" * 32),
        EncodingParams(k=1, happy=1, n=servers),
        clock,
    )


class VolumeHarness:
    """One volume and a session's filesystem on it, in memory; uploads run when the test
    advances the clock (:meth:`upload_everything`)."""

    def __init__(
        self, base: Path, store: ObjectStore | None = None, in_place_below: float = IN_PLACE_BELOW
    ) -> None:
        """``in_place_below``: the journal's (0: every flush in the test's threads)."""
        self.base = base
        self.in_place_below = in_place_below
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.threads = ManualThreads()
        self.store = store if store is not None else memory_store(self.clock)
        self._root = DirectoryWriteCap.generate().to_string()
        self._start()

    def _start(self) -> None:
        """Open the journal and staging, adopt what they hold, and start the queue."""
        journal = UploadJournal(self.base / "journal", in_place_below=self.in_place_below)
        self.queue = UploadQueue(self.clock, journal, self._upload, threads=self.threads)
        staging = StagingArea(self.base / "staging", quota=1 << 30, spare_files=0)
        self.volume = Volume(self._root, self.store, staging, self.queue, self.clock)
        jobs = list(journal.load())
        for leftover in staging.leftovers({job.staged for job in jobs}):
            leftover.unlink()
        for job in jobs:
            self.volume.adopt(job)
        self.queue.startService()
        self.fs = GridFilesystem(self.volume)

    def crash(self) -> None:
        """The gateway is killed (kill -9) and started again on the same disk and grid:
        open handles and everything in memory are lost; the journal and staging remain."""
        clock = Clock()  # the old process's timers never fire again
        clock.advance(self.clock.seconds())
        self.clock = self.store.clock = clock
        self.threads = ManualThreads()  # nor do its calls in threads
        self._start()

    def run_waiting(self, coroutine: Coroutine[Any, Any, T], patience: int = 600) -> T:
        """Run a call that may wait for the grid (an fsync): time passes until it ends."""
        outcome: list[Any] = []
        Deferred.fromCoroutine(coroutine).addBoth(outcome.append)
        waited = 0
        while not outcome:
            if self.threads.queue:
                self.threads.run_next()
                continue
            assert waited < patience, "the call never ends"
            self.clock.advance(1)
            waited += 1
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]  # type: ignore[no-any-return]

    async def _upload(self, job: UploadJob) -> None:
        await self.volume.upload(job)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a filesystem call to its end (its background calls included)."""
        return drive(coroutine, self.threads)

    def write(self, path: str, data: bytes, flags: OpenFlags = CREATE) -> None:
        """OPEN, WRITE one second later, CLOSE one second after that."""
        handle = self.run(self.fs.open(path, flags, SetAttributes()))
        self.clock.advance(1)
        self.run(handle.write(0, data))
        self.clock.advance(1)
        self.run(handle.close())

    def read(self, path: str) -> bytes:
        """A whole file's bytes."""
        handle = self.run(self.fs.open(path, READ, SetAttributes()))
        try:
            return self.run(handle.read(0, 1 << 30))
        finally:
            self.run(handle.close())

    def stat(self, path: str, follow_symlinks: bool = True) -> FileAttributes:
        """A path's attributes."""
        return self.run(self.fs.stat(path, follow_symlinks))

    def advance_until(self, done: Callable[[], bool], patience: int = 600) -> None:
        """Let time pass, a second at a time, until ``done()`` (an upload started, say)."""
        for _ in range(patience):
            if done():
                return
            self.clock.advance(1)
            self.threads.run_all()
        raise AssertionError("what the test waited for never happened")

    def uploading(self) -> bool:
        """Whether some file's upload is under way."""
        return any(f.phase is Phase.UPLOADING for f in self.volume.overlay.by_job.values())

    def upload_everything(self) -> None:
        """Let minutes pass: every upload runs and links its file."""
        for _ in range(600):
            self.clock.advance(1)
            self.threads.run_all()
        assert not self.volume.overlay.pending, "an upload did not finish"
