"""Storage nodes as real processes: create-storage, start (printing the NURL), serve, stop."""

from __future__ import annotations

import base64
import re
import ssl
import stat
import urllib.request
from pathlib import Path

import cbor2

from tests.nodes import NodeReaper, gateway


def _nurl_parts(nurl: str) -> tuple[str, int, str]:
    match = re.fullmatch(r"pb://[^@]+@([^:]+):(\d+)/([^#]+)#v=1", nurl)
    assert match, nurl
    return match.group(1), int(match.group(2)), match.group(3)


def test_storage_node_round_trip(tmp_path: Path, reaper: NodeReaper) -> None:
    """create-storage prints a NURL; start serves the version endpoint there; stop stops it."""
    node_dir = reaper.track(tmp_path / "storage")
    created = gateway("create-storage", node_dir, "--reserved-space", "10M")
    assert created.code == 0, created.err
    nurl = created.out.strip().splitlines()[-1]
    assert (node_dir / "private" / "nurl").read_text().strip() == nurl
    assert stat.S_IMODE((node_dir / "private" / "tls-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((node_dir / "private" / "swissnum").stat().st_mode) == 0o600

    started = gateway("start", node_dir)
    assert started.code == 0, started.err
    assert f"Storage NURL: {nurl}" in started.out

    host, port, swissnum = _nurl_parts(nurl)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the NURL pins the key; the gateway's client checks it
    request = urllib.request.Request(
        f"https://{host}:{port}/storage/v1/version",
        headers={"Authorization": "Tahoe-LAFS " + base64.b64encode(swissnum.encode()).decode()},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        version = cbor2.loads(response.read())
    limits = version[b"http://allmydata.org/tahoe/protocols/storage/v1"]
    assert limits[b"available-space"] > 0

    assert gateway("stop", node_dir).code == 0
    log = (node_dir / "logs" / "node.log").read_text()
    assert swissnum not in log
    assert "node stopped" in log


def test_storage_node_missing_key_names_the_file(tmp_path: Path, reaper: NodeReaper) -> None:
    """A storage node whose TLS key is gone refuses to start, naming the missing file."""
    node_dir = reaper.track(tmp_path / "storage")
    assert gateway("create-storage", node_dir).code == 0
    (node_dir / "private" / "tls-key.pem").unlink()
    result = gateway("start", node_dir)
    assert result.code == 1
    assert result.err.strip() == (
        f"gateway: could not start node in {node_dir}: storage server: "
        f"missing key file {node_dir / 'private' / 'tls-key.pem'}"
    )


def test_create_storage_on_all_addresses_needs_a_location(tmp_path: Path) -> None:
    """Listening on 0.0.0.0 without --location is a usage error: clients need a real address."""
    result = gateway("create-storage", tmp_path / "s", "--host", "0.0.0.0")
    assert result.code == 2
    assert "--location HOST:PORT is needed" in result.err
    assert not (tmp_path / "s").exists()
