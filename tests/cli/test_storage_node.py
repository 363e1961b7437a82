"""Storage nodes as real processes: create-storage, start (printing the NURL), serve, stop."""

from __future__ import annotations

import base64
import os
import re
import signal
import ssl
import stat
import urllib.error
import urllib.request
from pathlib import Path

import cbor2

from tests.grid_e2e.processes import readable
from tests.nodes import NodeReaper, gateway, node_pid


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


class _RawStorage:
    """The storage protocol spoken by hand (urllib + cbor2): a real client with no shared code."""

    def __init__(self, nurl: str):
        host, port, swissnum = _nurl_parts(nurl)
        self.base = f"https://{host}:{port}/storage/v1"
        self.auth = "Tahoe-LAFS " + base64.b64encode(swissnum.encode()).decode()
        self.context = ssl.create_default_context()
        self.context.check_hostname = False
        self.context.verify_mode = ssl.CERT_NONE

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.base + path,
            data=body,
            method=method,
            headers={"Authorization": self.auth, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def _secret(kind: str, value: bytes) -> str:
    return f"{kind} {base64.b64encode(value).decode()}"


def test_kill_9_mid_upload_leaves_no_readable_half_share(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """A storage node SIGKILLed mid-upload restarts clean: the half share is neither listed nor
    readable, and the same upload can then be done again, completely."""
    node_dir = reaper.track(tmp_path / "storage")
    created = gateway("create-storage", node_dir, "--reserved-space", "1M")
    nurl = created.out.strip().splitlines()[-1]
    assert gateway("start", node_dir).code == 0
    storage = _RawStorage(nurl)
    si = "aaaaaaaaaaaaaaaaaaaaaaaaaa"  # 16 zero bytes in base32
    lease = {
        "X-Tahoe-Authorization": ", ".join(
            [
                _secret("lease-renew-secret", b"r" * 32),
                _secret("lease-cancel-secret", b"c" * 32),
                _secret("upload-secret", b"u" * 32),
            ]
        )
    }
    share = os.urandom(100_000)
    body = cbor2.dumps({"share-numbers": {0}, "allocated-size": len(share)})
    status, _ = storage.request(
        "POST", f"/immutable/{si}", body, {"Content-Type": "application/cbor", **lease}
    )
    assert status == 200
    upload = {
        "X-Tahoe-Authorization": _secret("upload-secret", b"u" * 32),
        "Content-Type": "application/octet-stream",
    }
    status, _ = storage.request(
        "PATCH",
        f"/immutable/{si}/0",
        share[:60_000],
        {"Content-Range": f"bytes 0-59999/{len(share)}", **upload},
    )
    assert status == 200

    pid = node_pid(node_dir)
    assert pid
    os.kill(pid, signal.SIGKILL)
    pidfd = os.pidfd_open(pid)
    readable(pidfd, 30)
    os.close(pidfd)
    assert gateway("start", node_dir).code == 0

    status, listed = storage.request("GET", f"/immutable/{si}/shares")
    assert status == 200 and cbor2.loads(listed) == set()
    status, _ = storage.request("GET", f"/immutable/{si}/0", headers={"Range": "bytes=0-99"})
    assert status == 404
    assert not list((node_dir / "storage" / "shares" / "incoming").rglob("0"))

    status, _ = storage.request(
        "POST", f"/immutable/{si}", body, {"Content-Type": "application/cbor", **lease}
    )
    assert status == 200
    status, _ = storage.request(
        "PATCH",
        f"/immutable/{si}/0",
        share,
        {"Content-Range": f"bytes 0-{len(share) - 1}/{len(share)}", **upload},
    )
    assert status == 201
    status, data = storage.request(
        "GET", f"/immutable/{si}/0", headers={"Range": f"bytes=0-{len(share) - 1}"}
    )
    assert status == 206 and data == share
    assert gateway("stop", node_dir).code == 0
