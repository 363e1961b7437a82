"""No page, JSON twin or metric of a gateway or a storage node ever shows one of its secrets."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import paramiko
import pytest

from gateway.objects.caps import parse
from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import PASSWORD, RunningGateway
from tests.web.status_node import StatusGateway

GATEWAY_PATHS = ("/", "/sftp", "/transfers", "/health", "/status.json", "/metrics") + tuple(
    f"/{name}.json" for name in ("overview", "sftp", "transfers", "health")
)
STORAGE_PATHS = ("/", "/health", "/overview.json", "/health.json", "/status.json", "/metrics")


@attrs.frozen
class Grid:
    """A storage node and a gateway using it (by NURL), both with their status pages."""

    storage_dir: Path
    storage_url: str
    nurl: str
    node: StatusGateway


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    """Start one storage node and one gateway on it; stop both after."""
    tmp = tmp_path_factory.mktemp("secrets")
    reaper = NodeReaper()
    try:
        storage = reaper.track(tmp / "s1")
        created = gateway("create-storage", storage, "--nickname", "s1", "--reserved-space", "1M")
        assert created.code == 0, created.err
        nurl = created.out.strip().splitlines()[-1]
        started = gateway("start", storage)
        assert started.code == 0, started.err
        storage_url = re.search(r"Status page: (\S+)", started.out)
        gw_dir = reaper.track(tmp / "gw")
        args = ("--sftp-port", "0", "--web-port", "0", "--storage", nurl, "--shares", "1/1/1")
        assert gateway("create", gw_dir, *args).code == 0
        added = gateway("account", "add", gw_dir, "alice", "--password-stdin", stdin=PASSWORD)
        assert added.code == 0, added.err
        started = gateway("start", gw_dir)
        assert started.code == 0, started.err
        sftp = re.search(r"SFTP: sftp -P (\d+) [^@ ]+@(\S+)", started.out)
        web = re.search(r"Status page: (\S+)", started.out)
        assert storage_url and sftp and web, started.out
        running = RunningGateway(gw_dir, sftp.group(2), int(sftp.group(1)), "alice", PASSWORD)
        yield Grid(storage, storage_url.group(1), nurl, StatusGateway(running, web.group(1)))
        for node_dir in (gw_dir, storage):
            assert gateway("stop", node_dir).code == 0
    finally:
        reaper.reap()


def secrets_of(grid: Grid) -> set[str]:
    """Every secret the two nodes hold, in the forms a page could leak them in."""
    gw_private = grid.node.gw.node_dir / "private"
    found = {PASSWORD, grid.nurl, grid.nurl.rsplit("/", 1)[1].split("#")[0]}
    accounts = json.loads((gw_private / "accounts.json").read_text())["accounts"]
    for account in accounts.values():
        root = account["root_cap"]
        found |= {root, root.rsplit(":", 1)[1], account["password"]}
        read_cap = parse(root).get_read_cap().to_string()
        found |= {read_cap, read_cap.rsplit(":", 1)[1]}
    for name in ("convergence", "lease_secret"):
        text = (gw_private / name).read_text().strip()
        raw = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
        found |= {text, raw.hex(), base64.b64encode(raw).decode()}
    for key_file in (gw_private / "ssh_host_ed25519_key", grid.storage_dir / "private/tls-key.pem"):
        for line in key_file.read_text().splitlines():
            if not line.startswith("-----") and len(line) >= 16:
                found.add(line)
    found.add((grid.storage_dir / "private/swissnum").read_text().strip())
    for line in (gw_private / "servers").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            found |= {line.strip(), line.strip().rsplit("/", 1)[1].split("#")[0]}
    return {s for s in found if len(s) >= 8}


def test_no_page_shows_a_secret(grid: Grid) -> None:
    """After real SFTP use and a failed login, grep every page of both nodes for every secret."""
    gw = grid.node.gw
    transport, client = gw.sftp()
    try:
        client.mkdir("dir")
        with client.open("dir/file.txt", "w") as f:
            f.write(b"hello" * 10_000)
        assert client.listdir("dir") == ["file.txt"]
        with client.open("dir/file.txt", "r") as f:
            f.read()
        bodies = {path: grid.node.get(path)[2] for path in GATEWAY_PATHS}  # with a session open
    finally:
        transport.close()
    bad = paramiko.Transport((gw.host, gw.port))
    try:
        with pytest.raises(paramiko.AuthenticationException):
            bad.connect(username="alice", password=PASSWORD + "x")
    finally:
        bad.close()
    for path in GATEWAY_PATHS:
        bodies[f"gateway {path} later"] = grid.node.get(path)[2]
    storage = StatusGateway(gw, grid.storage_url)
    for path in STORAGE_PATHS:
        status, _, body = storage.get(path)
        assert status == 200, path
        bodies[f"storage {path}"] = body
    overview = json.loads(bodies["/overview.json"])
    assert not overview["embedded_grid"] and len(overview["grid"]) == 1  # really on the grid
    secrets = secrets_of(grid)
    assert len(secrets) >= 12
    leaks = [
        (where, secret[:6] + "…")
        for where, body in bodies.items()
        for secret in secrets
        if secret.encode() in body
    ]
    assert leaks == []
