"""A gateway node on a grid of real storage-node processes: wiring, health, and bad server lists."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.nodes import NodeReaper, gateway


def _start_storage(tmp_path: Path, reaper: NodeReaper, name: str) -> str:
    node_dir = reaper.track(tmp_path / name)
    created = gateway("create-storage", node_dir, "--nickname", name, "--reserved-space", "1M")
    assert created.code == 0, created.err
    assert gateway("start", node_dir).code == 0
    return created.out.strip().splitlines()[-1]


def _status(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "status.json", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_gateway_sees_its_storage_servers(tmp_path: Path, reaper: NodeReaper) -> None:
    """A gateway given two NURLs (one on the command line, one on stdin with ``--storage -``,
    where ps cannot show it) reports both servers connected, and never shows a NURL."""
    nurls = [_start_storage(tmp_path, reaper, f"s{i}") for i in range(2)]
    gw = reaper.track(tmp_path / "gw")
    args = ["--sftp-port", "0", "--web-port", "0", "--shares", "1/2/2"]
    args += ["--storage", nurls[0], "--storage", "-"]
    created = gateway("create", gw, *args, stdin=f"# the second server\n{nurls[1]}\n\n")
    assert created.code == 0, created.err
    started = gateway("start", gw)
    assert started.code == 0, started.err
    assert "Grid: 2 storage servers (shares 1/2/2)" in started.out
    match = re.search(r"Status page: (\S+)", started.out)
    assert match
    deadline = time.monotonic() + 30
    while True:
        status = _status(match.group(1))
        servers = status["parts"]["storage client"]["servers"]
        if all(s["connected"] for s in servers) or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the first health poll runs in the node, asynchronously
    assert [s["connected"] for s in servers] == [True, True]
    assert all(s["available_space"] > 0 for s in servers)
    body = json.dumps(status)
    for nurl in nurls:
        swissnum = nurl.rsplit("/", 1)[1].split("#")[0]
        assert swissnum not in body
    assert gateway("stop", gw).code == 0


def test_storage_from_an_empty_stdin_is_refused(tmp_path: Path) -> None:
    """``--storage -`` with no NURL on stdin is a usage error, not an embedded gateway made
    by accident; nothing is created."""
    gw = tmp_path / "gw"
    created = gateway("create", gw, "--storage", "-", stdin="# nothing here\n\n")
    assert created.code == 2
    assert "--storage -: no NURL on stdin" in created.err
    assert not gw.exists()


def test_bad_server_list_names_file_and_line(tmp_path: Path, reaper: NodeReaper) -> None:
    """A garbled line in private/servers stops the start with file and line, not the secret."""
    gw = reaper.track(tmp_path / "gw")
    assert gateway("create", gw, "--sftp-port", "0", "--web-port", "0").code == 0
    servers = gw / "private" / "servers"
    servers.write_text("# my grid\npb://not-a-nurl/secretswissnum\n")
    result = gateway("start", gw)
    assert result.code == 1
    assert f"storage client: {servers} line 2: not an HTTP storage NURL" in result.err
    assert "secretswissnum" not in result.err
