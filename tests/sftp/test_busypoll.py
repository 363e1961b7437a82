"""Polling for a client's next request: found when it is there, given up for anything else
the reactor must do, after the limit, for slow clients and while the node's threads work."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from gateway.config_values import parse_duration
from gateway.sftp.busypoll import MISSES, BusyPoll, ConnectionPoll, all_quiet, loadavg_runnable


class Ticking:
    """A clock that moves ``step`` seconds at every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class Reactor:
    """What the poller uses of an epoll reactor: its epoll."""

    def __init__(self) -> None:
        self._poller = select.epoll()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair of sockets: the server's end, then the client's."""
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


@pytest.fixture
def reactor(pair: tuple[socket.socket, socket.socket]) -> Iterator[Reactor]:
    """An epoll with the server's socket registered for reading, as the reactor has it."""
    made = Reactor()
    made._poller.register(pair[0].fileno(), select.EPOLLIN)
    yield made
    made._poller.close()


def poller(policy: BusyPoll, sock: socket.socket, reactor: object) -> ConnectionPoll:
    """The poller of the server's socket (polling is on)."""
    made = policy.connection(sock.fileno(), reactor)
    assert made is not None
    return made


def test_the_next_request_is_found(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """Bytes on the connection: wait says read them, and the poll counts as caught."""
    server, client = pair
    policy = BusyPoll(1.0, runnable=None)
    client.send(b"request")
    assert poller(policy, server, reactor).wait() is True
    assert (policy.polls, policy.caught) == (1, 1)
    assert policy.seconds >= 0


def test_anything_else_for_the_reactor_ends_the_poll(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """Another socket of the reactor's is ready (another connection, a thread's answer):
    back to the reactor at once, whether or not this connection's request came too."""
    server, client = pair
    other, other_client = socket.socketpair()
    try:
        reactor._poller.register(other.fileno(), select.EPOLLIN)
        other_client.send(b"x")
        policy = BusyPoll(10.0, runnable=None)
        poll = poller(policy, server, reactor)
        assert poll.wait() is False
        client.send(b"request")
        assert poll.wait() is False
        assert (policy.polls, policy.caught, poll.misses) == (2, 0, 0)
    finally:
        other.close()
        other_client.close()


def test_a_slow_client_is_no_longer_polled_for(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """Polls that find nothing within the limit count as misses; after MISSES in a row the
    connection goes back to the reactor without polling."""
    server, _ = pair
    policy = BusyPoll(0.001, clock=Ticking(0.0004), runnable=None)
    poll = poller(policy, server, reactor)
    for _ in range(MISSES):
        assert poll.wait() is False
    assert poll.misses == MISSES
    assert policy.polls == MISSES
    assert poll.wait() is False
    assert policy.polls == MISSES  # not polled
    assert policy.caught == 0


def test_polling_comes_back_for_a_client_that_is_quick_again(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """A connection that stopped polling polls again once a request comes within the limit
    of the reply before it; not for one that comes later."""
    server, client = pair
    clock = Ticking(0.0004)
    policy = BusyPoll(0.001, clock=clock, runnable=None)
    poll = poller(policy, server, reactor)
    for _ in range(MISSES):
        poll.wait()
    poll.wait()  # not polled: the reply left at this moment
    clock.now += 0.01
    poll.arrived()  # 10 ms later: still slow
    assert poll.misses == MISSES
    poll.wait()
    poll.arrived()  # right after the reply
    assert poll.misses == 0
    client.send(b"request")
    assert poll.wait() is True
    assert policy.caught == 1


def test_nothing_is_polled_while_a_thread_works(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """While a thread of the node works (its probe says so), a poll would hold the lock
    the thread needs: the connection goes back to the reactor without polling."""
    server, client = pair
    working = [True]
    policy = BusyPoll(1.0, quiet=all_quiet([lambda: True, lambda: not working[0]]), runnable=None)
    poll = poller(policy, server, reactor)
    client.send(b"request")
    assert poll.wait() is False
    assert policy.polls == 0
    assert policy.status()["busy_polls_skipped_working"] == 1
    working[0] = False
    assert poll.wait() is True
    assert policy.status()["busy_polls_skipped_working"] == 1


def test_without_an_epoll_reactor_the_socket_alone_is_polled(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A reactor without an epoll (poll or select): the connection's own socket is polled."""
    server, client = pair
    policy = BusyPoll(1.0, runnable=None)
    poll = poller(policy, server, object())
    client.send(b"request")
    assert poll.wait() is True
    server.recv(100)
    short = BusyPoll(0.001, clock=Ticking(0.0004), runnable=None)
    assert poller(short, server, object()).wait() is False


def test_nothing_is_polled_while_the_cpus_are_crowded(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """More tasks ready to run than the machine has CPUs, reply after reply: polling
    stops (counted as skipped), and comes back once they are fewer again."""
    server, client = pair
    ready = [5]
    policy = BusyPoll(1.0, runnable=lambda: ready[0], cpus=2)
    poll = poller(policy, server, reactor)
    client.send(b"request")
    found = [poll.wait() for _ in range(20)]
    assert found[:3] == [True] * 3  # (the average starts at one task)
    assert found[3:] == [False] * 17
    assert policy.crowded_skips == 17
    assert policy.status()["busy_polls_skipped_crowded"] == 17
    ready[0] = 1
    while policy.crowded_skips and poll.wait() is False:
        pass  # the average comes down over the next replies
    assert policy.load < 2.5
    assert policy.caught == 4


def test_one_busy_moment_does_not_stop_polling(
    pair: tuple[socket.socket, socket.socket], reactor: Reactor
) -> None:
    """The count of tasks ready to run is averaged: a client and its reader thread ready
    at the same moment as the reply leaves do not stop the polling."""
    server, client = pair
    counts = iter([3, 1, 1, 3, 1, 1, 1, 3])
    policy = BusyPoll(1.0, runnable=lambda: next(counts), cpus=2)
    poll = poller(policy, server, reactor)
    client.send(b"request")
    for _ in range(8):
        assert poll.wait() is True
    assert policy.crowded_skips == 0


def test_the_machine_s_ready_tasks_are_read(pair: tuple[socket.socket, socket.socket]) -> None:
    """On Linux the count comes from /proc/loadavg, this thread included, through one
    descriptor however many pollers the process makes."""
    policy = BusyPoll(1.0)
    assert policy.runnable is not None
    assert policy.runnable() >= 1
    assert BusyPoll(2.0).runnable is policy.runnable is loadavg_runnable()


def test_a_limit_of_zero_never_polls(pair: tuple[socket.socket, socket.socket]) -> None:
    """``busy_poll = 0``: connections get no poller."""
    assert BusyPoll(0.0).connection(pair[0].fileno(), object()) is None
    assert BusyPoll(0.0).status()["busy_poll_limit_us"] == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("300us", 0.0003), ("2ms", 0.002), ("0", 0.0), ("1.5s", 1.5)]
)
def test_durations_below_a_second(text: str, seconds: float) -> None:
    """``busy_poll`` takes microseconds and milliseconds as well as seconds."""
    assert parse_duration(text) == pytest.approx(seconds)
