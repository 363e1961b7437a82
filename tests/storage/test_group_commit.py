"""Group commit of immutable share completions: grouped flushes, in threads, and the
durability contract (durable when answered; after a crash complete or absent)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from storage import disk, wire
from storage.disk import DiskBackend
from storage.errors import NoSuchShare, NoSuchUpload
from storage.server import StorageServer
from tests.nodes import gateway, node_pid, process_gone
from tests.storage.test_http_server import LiveStorage, deferred_test
from tests.storage.values import CANCEL, RENEW, UPLOAD, UPLOAD2

LARGE = disk.LOGGED_SHARE_BYTES + 1000
UPLOADER = Path(__file__).with_name("completer.py")


class HandThreads:
    """A thread runner whose calls the test runs by hand, one at a time, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.broken = False

    def __call__(self, call: Callable[[], Any], /) -> Deferred[Any]:
        waiter: Deferred[Any] = Deferred()
        self.calls.append((call, waiter))
        return waiter

    def run_one(self) -> None:
        """Run the oldest call (failing it with EIO, as a dying disk would, when broken)."""
        call, waiter = self.calls.pop(0)
        if self.broken:
            waiter.errback(OSError(errno.EIO, "input/output error"))
            return
        waiter.callback(call())

    def run_all(self) -> None:
        """Run calls until none is left (calls started meanwhile included)."""
        while self.calls:
            self.run_one()


def si(number: int) -> bytes:
    """A storage index per share of a test."""
    return bytes([number]) * 16


def upload(server: StorageServer, number: int, size: int) -> Deferred[None]:
    """Upload one share of ``size`` bytes under ``si(number)``; its durability."""
    server.allocate_buckets(si(number), frozenset({0}), size, UPLOAD, RENEW, CANCEL)
    result = server.write_immutable(si(number), 0, UPLOAD, 0, bytes([number]) * size)
    assert result.finished
    return server.durable(si(number), 0)


def test_completions_meanwhile_share_the_next_group(tmp_path: Path) -> None:
    """Shares completed while a group's flushes run are flushed together in the next one,
    and each completion fires only once its share is durable and readable."""
    threads = HandThreads()
    backend = DiskBackend(tmp_path, threads)
    server = StorageServer(backend, Clock())
    fired: list[int] = []
    for number, size in [(1, LARGE), (2, LARGE), (3, 100), (4, LARGE)]:
        upload(server, number, size).addCallback(lambda _, n=number: fired.append(n))
    assert backend.commits.groups == 1, "the first share's group started alone"
    assert server.list_immutable(si(2)) == frozenset(), "not listed before it is durable"
    threads.run_all()
    assert backend.commits.groups == 2, "shares 2, 3 and 4 shared the second group"
    assert fired == [1, 2, 3, 4]
    for number, size in [(1, LARGE), (2, LARGE), (3, 100), (4, LARGE)]:
        assert server.list_immutable(si(number)) == {0}
        assert server.read_immutable(si(number), 0, 0, size + 1) == bytes([number]) * size


def test_a_group_of_small_shares_takes_one_thread_call(tmp_path: Path) -> None:
    """Small shares live in the redo log until applied: one flush of the log in a thread
    makes a group of them durable, and they are answered and readable with no second trip
    to a thread (which flushes directories only large shares' renames create)."""
    threads = HandThreads()
    backend = DiskBackend(tmp_path, threads)
    server = StorageServer(backend, Clock())
    fired: list[int] = []
    for number in (1, 2):
        upload(server, number, 100).addCallback(lambda _, n=number: fired.append(n))
    threads.run_one()  # the first group: share 1's log flush
    assert fired == [1] and len(threads.calls) == 1  # share 2's group started at once
    threads.run_one()
    assert fired == [1, 2] and threads.calls == []
    for number in (1, 2):
        assert server.read_immutable(si(number), 0, 0, 101) == bytes([number]) * 100


def test_a_batched_commit_waits_for_drain_and_flushes_the_batch_once(tmp_path: Path) -> None:
    """A batched backend (the gateway's embedded storage, run by a thread of its own)
    completes nothing until ``drain``: then every share of the batch, small and large,
    is durable and readable after one group, and each completion has fired."""
    backend = DiskBackend(tmp_path, batched=True)
    server = StorageServer(backend, Clock())
    fired: list[int] = []
    for number, size in [(1, LARGE), (2, 100), (3, LARGE)]:
        upload(server, number, size).addCallback(lambda _, n=number: fired.append(n))
    assert fired == [] and backend.commits.groups == 0
    with pytest.raises(NoSuchShare):
        server.read_immutable(si(1), 0, 0, 10)
    backend.commits.drain()
    assert fired == [1, 2, 3]
    assert backend.commits.groups == 1
    assert server.read_immutable(si(2), 0, 0, 100) == bytes([2]) * 100
    assert server.read_immutable(si(3), 0, 0, LARGE) == bytes([3]) * LARGE
    backend.close()
    reopened = DiskBackend(tmp_path)
    assert reopened.list_shares(si(1)) == frozenset({0})
    reopened.close()


def test_a_completing_share_is_not_seen_written_or_offered(tmp_path: Path) -> None:
    """Between its last write and its durability a share is neither read nor listed, a
    repeated write or abort finds no upload, and another uploader is not offered it."""
    threads = HandThreads()
    server = StorageServer(DiskBackend(tmp_path, threads), Clock())
    done = upload(server, 1, LARGE)
    threads.run_one()  # bytes durable and renamed into place; its directory not yet flushed
    assert not done.called
    with pytest.raises(NoSuchShare):
        server.read_immutable(si(1), 0, 0, 10)
    assert server.list_immutable(si(1)) == frozenset()
    with pytest.raises(NoSuchUpload):
        server.write_immutable(si(1), 0, UPLOAD, 0, b"\x01")
    with pytest.raises(NoSuchUpload):
        server.abort_immutable(si(1), 0, UPLOAD)
    offered = server.allocate_buckets(si(1), frozenset({0}), LARGE, UPLOAD2, RENEW, CANCEL)
    assert offered.allocated == frozenset() and offered.already_have == frozenset()
    threads.run_all()
    assert done.called
    assert server.list_immutable(si(1)) == {0}


def test_a_failed_flush_fails_the_completion_and_leaves_nothing(tmp_path: Path) -> None:
    """A flush that fails (EIO) fails the completion; the share is not there, now or after
    reopening, and the storage index can be uploaded again."""
    threads = HandThreads()
    server = StorageServer(DiskBackend(tmp_path, threads), Clock())
    done = upload(server, 1, LARGE)
    errors: list[Any] = []
    done.addErrback(errors.append)
    threads.broken = True
    threads.run_all()
    assert errors and isinstance(errors[0].value, OSError)
    assert server.list_immutable(si(1)) == frozenset()
    threads.broken = False
    again = upload(server, 1, LARGE)
    threads.run_all()
    assert again.called and server.list_immutable(si(1)) == {0}


def test_closing_with_a_group_stuck_leaves_whole_shares_or_none(tmp_path: Path) -> None:
    """Closing while a group waits for a thread that never runs (a stopped pool): after
    reopening, what was answered is there, and the rest is whole or absent."""
    threads = HandThreads()
    backend = DiskBackend(tmp_path, threads)
    server = StorageServer(backend, Clock())
    first, second = upload(server, 1, LARGE), upload(server, 2, 100)
    threads.run_all()
    assert first.called and second.called
    stuck, queued = upload(server, 3, 100), upload(server, 4, LARGE)
    threads.calls.clear()  # the thread never runs
    backend.close()
    assert not stuck.called and not queued.called
    reopened = DiskBackend(tmp_path)
    assert reopened.list_shares(si(1)) == {0} and reopened.list_shares(si(2)) == {0}
    for number, size in [(3, 100), (4, LARGE)]:
        if reopened.list_shares(si(number)):
            assert reopened.read_share(si(number), 0, 0, size + 1) == bytes([number]) * size
    reopened.close()


class HttpCompletionTests(TestCase):
    """The storage node's HTTP side answers a completing write once the share is durable."""

    @deferred_test
    async def test_completing_patch_is_answered_once_durable(self) -> None:
        """The PATCH that completes a share gets its 201 only after the flushes ran; the
        share is readable then."""
        threads = HandThreads()
        directory = Path(self.mktemp())
        backend = DiskBackend(directory, threads)
        self.addCleanup(backend.close)
        live = await LiveStorage.start(self, StorageServer(backend, reactor))
        path = f"/storage/v1/immutable/{wire.si_b2a(si(1))}"
        secrets = {
            wire.SecretKind.LEASE_RENEW: RENEW,
            wire.SecretKind.LEASE_CANCEL: CANCEL,
            wire.SecretKind.UPLOAD: UPLOAD,
        }
        body = wire.encode_allocate_request(frozenset({0}), LARGE)
        cbor = {"content-type": [b"application/cbor"]}
        assert (await live.request(b"POST", path, cbor, body, secrets=secrets)).code == 200
        patch = Deferred.fromCoroutine(
            live.request(
                b"PATCH",
                f"{path}/0",
                {"content-range": [f"bytes 0-{LARGE - 1}/*".encode()]},
                b"\x01" * LARGE,
                secrets={wire.SecretKind.UPLOAD: UPLOAD},
            )
        )
        while not threads.calls:  # until the write has reached the core
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)
        assert not patch.called, "answered before the share was durable"
        threads.run_all()
        reply = await patch
        assert reply.code == 201, reply
        read = await live.request(b"GET", f"{path}/0", {"range": [b"bytes=0-9"]})
        assert read.code == 206 and read.body == b"\x01" * 10


def _start_node(directory: Path) -> str:
    created = gateway("create-storage", directory, "--reserved-space", "0")
    assert created.code == 0, created.err
    started = gateway("start", directory)
    assert started.code == 0, started.err
    return created.out.strip().splitlines()[-1]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while not process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.parametrize("acknowledged_before_kill", [3, 40])
def test_kill_9_between_completions_of_a_group(
    tmp_path: Path, acknowledged_before_kill: int
) -> None:
    """A storage node SIGKILLed while groups of completions are under way: every share whose
    completion it answered is there whole after a restart, and every share there is whole."""
    directory = tmp_path / "storage"
    nurl = _start_node(directory)
    pid = node_pid(directory)
    assert pid is not None
    uploader = subprocess.Popen(
        [sys.executable, str(UPLOADER), nurl, "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    acknowledged: list[int] = []
    try:
        assert uploader.stdout is not None
        for line in uploader.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) == acknowledged_before_kill:
                _kill(pid)
                break
    finally:
        _kill(pid)
        uploader.kill()
        uploader.wait(timeout=30)
    assert len(acknowledged) == acknowledged_before_kill
    backend = DiskBackend(directory / "storage")  # what a restarted node opens
    try:
        present = {n for n in range(200) if backend.list_shares(_completer_si(n))}
        assert set(acknowledged) <= present, "an answered completion was lost"
        for number in present:
            size = _completer_size(number)
            data = backend.read_share(_completer_si(number), 0, 0, size + 1)
            assert data == _completer_data(number), f"share {number} is not whole"
        print(f"answered {len(acknowledged)}, present after the crash {len(present)}")
    finally:
        backend.close()


def _completer_si(number: int) -> bytes:
    return number.to_bytes(2, "big") * 8


def _completer_size(number: int) -> int:
    return 1000 if number % 4 == 3 else 300_000 + number


def _completer_data(number: int) -> bytes:
    size = _completer_size(number)
    return (number.to_bytes(2, "big") * size)[:size]
