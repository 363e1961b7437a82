"""A file larger than one chunk through the real ``gateway`` CLI, on a real storage process.

``gateway put`` without a target stores it as a chunk tree (a ``GG:TREE:`` cap), ``get``
returns its bytes, ``ls`` shows its size and ``check`` (which checks a chunked file as
the tree it is) verifies every node and extent on the storage node's disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.nodes import NodeReaper, gateway

SIZE = 5 * 1024 * 1024 + 4321


def test_chunked_file_put_get_and_deep_check(tmp_path: Path, reaper: NodeReaper) -> None:
    """put, get, ls and check --verify of a 5 MiB file over a separate storage node."""
    storage = reaper.track(tmp_path / "storage")
    created = gateway("create-storage", storage, "--nickname", "s0", "--reserved-space", "1M")
    assert created.code == 0, created.err
    assert gateway("start", storage).code == 0
    nurl = created.out.strip().splitlines()[-1]
    gw = reaper.track(tmp_path / "gw")
    args = ["--sftp-port", "0", "--web-port", "0", "--shares", "1/1/1", "--storage", nurl]
    assert gateway("create", gw, *args).code == 0
    started = gateway("start", gw)
    assert started.code == 0, started.err

    data = os.urandom(SIZE)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    put = gateway("put", gw, local)
    assert put.code == 0, put.err
    cap = put.out.strip()
    assert cap.startswith("GG:TREE:")
    got = gateway("get", gw, cap, tmp_path / "back.bin")
    assert got.code == 0, got.err
    assert (tmp_path / "back.bin").read_bytes() == data
    listed = gateway("ls", gw, "--json", cap)
    assert listed.code == 0, listed.err
    assert json.loads(listed.out)["entries"][0]["size"] == SIZE
    checked = gateway("check", gw, "--verify", "--json", cap)
    assert checked.code == 0, checked.err
    result = json.loads(checked.out)
    assert result["deep"] and result["unhealthy"] == 0 and not result["errors"]
    kinds = [o["check"]["kind"] for o in result["objects"]]
    assert kinds.count("chunk tree node") == 1  # 6 extents: one root node
    assert kinds.count("immutable") == 6
    assert all(o["check"]["shares_good"] == 1 for o in result["objects"])
    assert cap not in checked.out
    assert gateway("stop", gw).code == 0
    assert gateway("stop", storage).code == 0
