"""Ordered writes on the embedded core: an fsync's objects and its directory, one flush.

The embedded core's changes become durable in the order they were made
(:class:`gateway.grid.interfaces.IOrderedStorage`): objects written with
``write_immutable_ordered`` are answered once made, and the slot written right after them
flushes them with its own flush. These tests count the redo log's flushes, "crash" by
opening the storage directory again without closing the first backend (what a restart
after kill -9 replays), and check what a failed flush leaves.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from gateway.grid.interfaces import IOrderedStorage, IWholeShares
from gateway.grid.local import LocalStorageClient
from gateway.grid.part import embedded_core
from gateway.grid.storage_thread import StorageThread
from storage import commit, redolog
from storage.disk import LOGGED_SHARE_BYTES, DiskBackend
from storage.errors import StorageError
from storage.server import StorageServer
from tests.grid.contract import Slot, Upload
from tests.storage.test_http_server import deferred_test


class Flushes:
    """``os.fdatasync`` as the storage modules call it, counted (and failing on demand)."""

    def __init__(self) -> None:
        self.count = 0
        self.fail_next = False

    def __call__(self, fd: int) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.count += 1
        os.fdatasync(fd)


class _Os:
    """The ``os`` module with ``fdatasync`` replaced (for one module's global ``os``)."""

    def __init__(self, fdatasync: Callable[[int], None]) -> None:
        self.fdatasync = fdatasync

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class OrderedWriteTests(TestCase):
    """The embedded core as the gateway runs it, on the running reactor."""

    def setUp(self) -> None:
        self.flushes = Flushes()
        fake = _Os(self.flushes)
        self.patch(redolog, "os", fake)
        self.patch(commit, "os", fake)
        self.path = Path(self.mktemp())
        backend, server, thread = embedded_core(self.path, reactor)
        self.backend, self.server, self.thread = backend, server, thread
        self.client = LocalStorageClient(server, clock=reactor, thread=thread)
        self.addCleanup(lambda: Deferred.fromCoroutine(_stopped(thread, backend)))

    async def written(self, size: int = 100, fill: bytes = b"x") -> Upload:
        """An immutable share written with an ordered write (answered once made)."""
        upload = Upload.new()
        await upload.allocate(self.client, {0}, size)
        result = await self.client.write_immutable_ordered(
            upload.si, 0, upload.secret, 0, fill * size
        )
        self.assertTrue(result.finished)
        return upload

    def large_completions_fail(self) -> None:
        """From now on a share renamed into place cannot be flushed (EIO)."""
        real = commit.sync_shares

        def failing(log_fd: int | None, files: Any) -> None:
            if list(files):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real(log_fd, files)

        self.patch(commit, "sync_shares", failing)

    def restarted(self) -> StorageServer:
        """The storage as a restart after kill -9 finds it: the directory opened again,
        the first backend never closed (its log replayed)."""
        return StorageServer(DiskBackend(self.path), reactor)

    @deferred_test
    async def test_a_slot_written_after_objects_flushes_them_with_its_own_flush(self) -> None:
        """Two small objects written (answered at once, before any flush), then a slot:
        one flush of the log in all, and a restart right after the slot's write finds the
        objects and the slot."""
        self.assertTrue(IOrderedStorage.providedBy(self.client))
        before = self.flushes.count
        uploads = [await self.written(fill=bytes([65 + i])) for i in range(2)]
        self.assertEqual(self.flushes.count, before, "answered before any flush")
        slot = Slot.new()
        await slot.write(self.client, 0, b"directory")
        at_restart = self.flushes.count
        restarted = self.restarted()  # (its opening's checkpoint flushes the log it replays)
        restart_flushes = self.flushes.count - at_restart
        for i, upload in enumerate(uploads):
            self.assertEqual(restarted.read_immutable(upload.si, 0, 0, 3), bytes([65 + i]) * 3)
        self.assertEqual(restarted.read_mutable(slot.si, 0, 0, 9), b"directory")
        await self.client.sync()
        self.assertEqual(self.flushes.count - restart_flushes, before + 1)
        self.assertEqual(await self.client.read_immutable(uploads[0].si, 0, 0, 2), b"AA")

    @deferred_test
    async def test_a_large_object_is_durable_before_the_slot_written_after_it(self) -> None:
        """An object too large for the log (renamed into place) written before a slot is
        completed before the slot's flush: a restart right after the slot finds it."""
        upload = await self.written(size=LOGGED_SHARE_BYTES + 1, fill=b"L")
        slot = Slot.new()
        await slot.write(self.client, 0, b"directory")
        restarted = self.restarted()
        self.assertEqual(restarted.read_immutable(upload.si, 0, 0, 4), b"LLLL")
        self.assertEqual(restarted.read_mutable(slot.si, 0, 0, 9), b"directory")
        await self.client.sync()

    @deferred_test
    async def test_a_slot_is_not_written_over_a_large_object_that_could_not_be_completed(
        self,
    ) -> None:
        """The large object's completion fails (its file cannot be flushed): the slot's
        write after it fails too, and a restart finds neither."""
        self.large_completions_fail()
        upload = await self.written(size=LOGGED_SHARE_BYTES + 1, fill=b"L")
        slot = Slot.new()
        with self.assertRaises(StorageError):
            await slot.write(self.client, 0, b"directory")
        restarted = self.restarted()
        self.assertEqual(restarted.list_immutable(upload.si), frozenset())
        self.assertEqual(restarted.list_mutable(slot.si), frozenset())

    @deferred_test
    async def test_a_completion_that_failed_in_an_earlier_commit_fails_the_next_slot_write(
        self,
    ) -> None:
        """The large object's completion fails in the commit at the end of its turn, before
        anything names it: the next slot's write fails (it may name the object), once."""
        self.large_completions_fail()
        await self.written(size=LOGGED_SHARE_BYTES + 1, fill=b"L")
        turn: Deferred[None] = Deferred()
        reactor.callLater(0, turn.callback, None)
        await turn  # the turn's commit ran, and failed
        with self.assertRaises(StorageError):
            await Slot.new().write(self.client, 0, b"directory")
        await Slot.new().write(self.client, 0, b"told once")

    @deferred_test
    async def test_sync_makes_what_was_made_durable_and_a_failed_flush_stops_the_log(
        self,
    ) -> None:
        """``sync`` after ordered writes flushes once; after a flush fails, the slot's
        write reports it, and so does every later sync: nothing made since is said
        durable (a later flush that succeeds would prove nothing)."""
        upload = await self.written()
        before = self.flushes.count
        await self.client.sync()
        self.assertEqual(self.flushes.count, before + 1)
        self.assertEqual(self.restarted().read_immutable(upload.si, 0, 0, 1), b"x")
        await self.written(fill=b"y")
        self.flushes.fail_next = True
        with self.assertRaises(OSError):
            await Slot.new().write(self.client, 0, b"directory")
        for _ in range(2):  # (the first may say the object's completion failed)
            with self.assertRaises((OSError, StorageError)):
                await self.client.sync()

    @deferred_test
    async def test_a_write_that_cannot_be_made_raises_at_once(self) -> None:
        """An ordered write with the wrong upload secret is refused as the durable one
        is, before anything else is written."""
        upload = Upload.new()
        await upload.allocate(self.client, {0}, 10)
        with self.assertRaises(Exception) as caught:
            await self.client.write_immutable_ordered(upload.si, 0, b"w" * 32, 0, b"z" * 10)
        self.assertIn("secret", str(caught.exception).lower())


class MadeTests(TestCase):
    """``StorageThread.made``: answered once run, committed at the end of the turn."""

    @deferred_test
    async def test_a_change_made_in_place_is_answered_before_its_commit(self) -> None:
        """Run in place while the thread is idle: answered at once, with ``after_batch`` at
        the end of the turn; behind a pending call, handed over and answered after its
        batch."""
        commits: list[str] = []
        thread = StorageThread(reactor, lambda: commits.append("commit"))
        self.addCleanup(thread.stop)
        made = thread.made(lambda: "made")
        self.assertTrue(made.called)
        self.assertEqual(await made, "made")
        self.assertEqual(commits, [])
        await thread.here(lambda: None)
        waiter: Deferred[None] = Deferred()
        reactor.callLater(0, waiter.callback, None)
        await waiter
        self.assertEqual(commits, ["commit"])
        busy = thread(lambda: "busy")
        behind = thread.made(lambda: "behind")
        self.assertFalse(behind.called)
        self.assertEqual(await busy, "busy")
        self.assertEqual(await behind, "behind")


async def _stopped(thread: StorageThread, backend: DiskBackend) -> None:
    try:
        await thread(backend.close)
    except OSError:
        if backend._log.failed is None:  # only a log stopped by a failed flush refuses
            raise
    await thread.stop()


class WholeShareTests(TestCase):
    """A small object's shares allocated and written in one call
    (:class:`gateway.grid.interfaces.IWholeShares`)."""

    setUp = OrderedWriteTests.setUp
    restarted = OrderedWriteTests.restarted

    async def put(self, upload: Upload, shares: list[bytes]) -> Any:
        """Put ``shares`` whole under ``upload``'s storage index and secrets."""
        return await self.client.put_whole_ordered(
            upload.si, shares, upload.secret, upload.lease.renew, upload.lease.cancel
        )

    @deferred_test
    async def test_shares_put_whole_are_answered_made_and_flushed_by_the_next_slot(
        self,
    ) -> None:
        """Three shares put in one call are answered before any flush, read back whole,
        and a restart after a slot's write finds them; a second put of the same index
        finds them there and writes nothing."""
        self.assertTrue(IWholeShares.providedBy(self.client))
        before = self.flushes.count
        upload = Upload.new()
        shares = [bytes([65 + n]) * 300 for n in range(3)]
        result = await self.put(upload, shares)
        self.assertEqual(result.allocated, frozenset({0, 1, 2}))
        self.assertEqual(self.flushes.count, before, "answered before any flush")
        slot = Slot.new()
        await slot.write(self.client, 0, b"directory")
        restarted = self.restarted()
        for n in range(3):
            self.assertEqual(restarted.read_immutable(upload.si, n, 0, 300), shares[n])
        await self.client.sync()
        for n in range(3):
            self.assertEqual(await self.client.read_immutable(upload.si, n, 0, 300), shares[n])
        again = await self.put(upload.again(), shares)
        self.assertEqual((again.already_have, again.allocated), (frozenset({0, 1, 2}), frozenset()))

    @deferred_test
    async def test_a_write_that_fails_aborts_what_the_put_allocated(self) -> None:
        """The core refuses the second share's write: the put raises that error, and the
        share it allocated but did not complete is no longer being uploaded (a new put of
        the index allocates it again)."""
        real = StorageServer.write_immutable
        calls: list[int] = []

        def failing(
            server: StorageServer, si: bytes, share: int, secret: bytes, offset: int, data: bytes
        ) -> Any:
            calls.append(share)
            if share == 1:
                raise StorageError("the disk is full")
            return real(server, si, share, secret, offset, data)

        self.patch(StorageServer, "write_immutable", failing)
        upload = Upload.new()
        with self.assertRaises(StorageError):
            await self.put(upload, [b"a" * 200, b"b" * 200])
        self.assertEqual(calls, [0, 1])
        self.patch(StorageServer, "write_immutable", real)
        await self.client.sync()
        retried = await self.put(upload.again(), [b"a" * 200, b"b" * 200])
        self.assertEqual(retried.already_have, frozenset({0}))
        self.assertEqual(retried.allocated, frozenset({1}))
        await self.client.sync()
        self.assertEqual(await self.client.read_immutable(upload.si, 1, 0, 3), b"bbb")
