"""A test's uploader (run as a script): completes shares on a storage node over HTTPS, many
at once, and prints each share's number once the node has answered its completion.

    python completer.py NURL COUNT

Share ``n`` lives under storage index ``n.to_bytes(2) * 8``; its size and bytes are those
of ``test_group_commit``: one share in four is small (through the redo log), the others
larger (renamed into place).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.internet import defer, task

from gateway.grid.http_client import HttpStorageClient

IN_FLIGHT = 16


def size(number: int) -> int:
    """The share's size."""
    return 1000 if number % 4 == 3 else 300_000 + number


def data(number: int) -> bytes:
    """The share's bytes."""
    return (number.to_bytes(2, "big") * size(number))[: size(number)]


async def main(reactor: Any, nurl: str, count: int) -> None:
    """Upload shares 0..count-1, IN_FLIGHT at a time, printing each answered completion."""
    client = HttpStorageClient.from_nurl(reactor, nurl)
    numbers = iter(range(count))

    async def worker() -> None:
        for number in numbers:
            si = number.to_bytes(2, "big") * 8
            secret = os.urandom(32)
            await client.allocate_buckets(
                si, frozenset({0}), size(number), secret, os.urandom(32), os.urandom(32)
            )
            result = await client.write_immutable(si, 0, secret, 0, data(number))
            assert result.finished
            print(number, flush=True)

    try:
        workers = [defer.Deferred.fromCoroutine(worker()) for _ in range(IN_FLIGHT)]
        await defer.gatherResults(workers, consumeErrors=True)
    finally:
        await client.close()


if __name__ == "__main__":
    nurl_arg, count_arg = sys.argv[1], int(sys.argv[2])
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, nurl_arg, count_arg)))
