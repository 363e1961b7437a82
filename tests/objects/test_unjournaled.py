"""An fsync's directory change, published at once, is journaled only when it must be.

Driven as ``test_directory_writeback`` is: in-process storage servers, a fake
clock, a second gateway without write-back to read what the grid holds, and a
crash played by opening a new write-back on the same journal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.objects.caps import DirectoryWriteCap, LiteralCap
from gateway.objects.dirjournal import JOURNAL_NAME
from gateway.objects.dirnode import DirectoryNode
from gateway.objects.errors import UploadUnhappy
from storage.redolog import RedoLog
from tests.objects.grid import GridClient
from tests.objects.test_directory_writeback import Gateway
from tests.objects.test_directory_writeback import _close_journals as _close_journals
from tests.objects.test_dirnode import meta


def journal_records(state: Path) -> list[dict[str, Any]]:
    """Every record the journal file holds, as the next start reads it."""
    log = RedoLog(state / JOURNAL_NAME, repair=False)
    try:
        return list(log.records())
    finally:
        log.close()


def known(gw: Gateway, root: DirectoryWriteCap) -> DirectoryNode:
    """The root as a gateway that has listed it (its view known, as before an fsync)."""
    node = gw.open(root)
    gw.run(node.list())
    return node


def published_after_restart(
    grid: list[GridClient], root: DirectoryWriteCap, state: Path, pending: int
) -> list[str]:
    """Start a gateway on the journal in ``state`` (after a crash or a stop): it finds
    ``pending`` changes to publish; the root's names in the grid once they are."""
    again = Gateway(grid, state)
    assert again.write_back is not None and again.write_back.pending() == pending
    again.settle()
    return Gateway(grid, None).names(root)


def publish_now(gw: Gateway, node: DirectoryNode) -> None:
    """What an fsync does after linking: publish the directory now, and wait."""
    assert gw.write_back is not None
    gw.run(gw.write_back.flush([node.storage_index]))


def test_a_link_published_at_once_is_never_written_to_the_journal(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """The fsync's link is in the grid once its publish returns, and the journal holds no
    record of it: a restart finds nothing to publish."""
    gw = Gateway(grid, tmp_path)
    node = known(gw, root)
    records = journal_records(tmp_path)
    gw.run(node.add("db", LiteralCap(b"version 2"), meta(), journal=False))
    assert sorted(gw.run(node.list())) == ["db"]  # every session sees it at once
    publish_now(gw, node)
    assert Gateway(grid, None).names(root) == ["db"]
    assert journal_records(tmp_path) == records
    assert gw.write_back is not None and gw.write_back.pending() == 0
    again = Gateway(grid, tmp_path)  # a crash now
    assert again.write_back is not None and again.write_back.pending() == 0


def test_a_change_journaled_after_one_kept_out_writes_both_in_order(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """A rename of the file while its link waits for the publish is journaled with the link
    before it: a crash then replays both, and the file is where the client renamed it."""
    gw = Gateway(grid, tmp_path)
    node = known(gw, root)
    gw.run(node.add("db", LiteralCap(b"v"), meta(), journal=False))
    gw.run(node.rename("db", "db.old"))
    keys = [r["key"] for r in journal_records(tmp_path) if r.get("op") == "put"]
    assert len(keys) == 2 and int(keys[0]) < int(keys[1])
    # a crash before anything was published
    assert published_after_restart(grid, root, tmp_path, pending=2) == ["db.old"]


def test_waiting_for_the_journal_writes_what_was_kept_out(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """When the link must outlive a crash after all (the file moved before its directory was
    published, so the journal must carry it), ``durable`` writes it: the next start
    publishes it."""
    gw = Gateway(grid, tmp_path)
    node = known(gw, root)
    gw.run(node.add("db", LiteralCap(b"v"), meta(), journal=False))
    assert gw.write_back is not None
    gw.run(gw.write_back.durable())
    assert published_after_restart(grid, root, tmp_path, pending=1) == ["db"]  # a crash now


def test_a_link_not_published_by_the_stop_is_journaled_for_the_next_start(
    grid: list[GridClient], root: DirectoryWriteCap, tmp_path: Path
) -> None:
    """The grid is down: the fsync fails and the gateway stops. The link it kept out of the
    journal is written at stop, and published by the next start once the grid is back."""
    gw = Gateway(grid, tmp_path)
    node = known(gw, root)
    for g in grid:
        g.available = False
    gw.run(node.add("db", LiteralCap(b"v"), meta(), journal=False))
    assert gw.write_back is not None
    with pytest.raises(UploadUnhappy):  # (the servers are down)
        publish_now(gw, node)
    stopping = gw.write_back.stop(0.5)
    gw.clock.advance(1)
    gw.run(stopping)
    assert [r["op"] for r in journal_records(tmp_path)] == ["put"]
    for g in grid:
        g.available = True
    assert published_after_restart(grid, root, tmp_path, pending=1) == ["db"]


def test_without_write_back_the_change_is_published_at_once_either_way(
    grid: list[GridClient], root: DirectoryWriteCap
) -> None:
    """A node that writes through has no journal: ``journal`` changes nothing."""
    gw = Gateway(grid, None)
    gw.run(gw.open(root).add("db", LiteralCap(b"v"), meta(), journal=False))
    assert Gateway(grid, None).names(root) == ["db"]
