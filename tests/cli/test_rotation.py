"""Rotating secrets on real processes: a storage node's swissnum (and telling the gateway),
a gateway's SSH host key (seen by OpenSSH's own client), and an account's password."""

from __future__ import annotations

import base64
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import paramiko
import pytest

from gateway.sftp.hostkey import HostKeyError, fingerprint, generate_host_key, load_host_key
from tests.nodes import NodeReaper, gateway
from tests.openssh import sftp_batch
from tests.sftp.gateway_node import PASSWORD, RunningGateway, restart_gateway, start_gateway


def _version_status(nurl: str) -> int:
    """The HTTP status of a version request made with ``nurl``'s swissnum."""
    match = re.fullmatch(r"pb://[^@]+@([^:]+):(\d+)/([^#]+)#v=1", nurl)
    assert match, "not a NURL"
    host, port, swissnum = match.groups()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the key pin is the gateway client's business
    request = urllib.request.Request(
        f"https://{host}:{port}/storage/v1/version",
        headers={"Authorization": "Tahoe-LAFS " + base64.b64encode(swissnum.encode()).decode()},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def test_rotating_a_swissnum_refuses_the_old_nurl(tmp_path: Path, reaper: NodeReaper) -> None:
    """After ``rotate swissnum`` and a restart the storage node refuses its old NURL (401) and
    serves the new one; ``rotate server`` gives the gateway the new NURL, and after its
    restart the file stored before is read back through it."""
    storage = reaper.track(tmp_path / "s")
    created = gateway("create-storage", storage, "--reserved-space", "1M")
    assert created.code == 0, created.err
    old = created.out.strip().splitlines()[-1]
    assert gateway("start", storage).code == 0
    gw = start_gateway(tmp_path, reaper, "--storage", old, "--shares", "1/1/1")
    (tmp_path / "before.txt").write_bytes(b"stored before the rotation\n")
    assert gateway("put", gw.node_dir, tmp_path / "before.txt", "/before.txt").code == 0

    rotated = gateway("rotate", "swissnum", storage)
    assert rotated.code == 0, rotated.err
    lines = rotated.out.splitlines()
    new = lines[1]
    assert new.startswith("pb://") and new != old
    assert new.split("@")[0] == old.split("@")[0]  # the same key pin: the same server
    assert (storage / "private" / "nurl").read_text().strip() == new
    assert lines[2] == (
        "The running node still accepts the old NURL, and only it, until it restarts: "
        f"gateway stop {storage} && gateway start {storage}"
    )
    assert _version_status(old) == 200  # not restarted yet
    assert gateway("stop", storage).code == 0
    started = gateway("start", storage)
    assert started.code == 0 and f"Storage NURL: {new}" in started.out
    assert _version_status(old) == 401
    assert _version_status(new) == 200

    told = gateway("rotate", "server", gw.node_dir, "-", stdin=new + "\n")
    assert told.code == 0, told.err
    servers = (gw.node_dir / "private" / "servers").read_text()
    assert servers.split() == [new]
    assert "still uses the old NURL until it restarts" in told.out
    assert new.rsplit("/", 1)[1] not in told.out + told.err  # the swissnum is not echoed
    assert gateway("stop", gw.node_dir).code == 0
    restart_gateway(gw.node_dir)
    got = gateway("get", gw.node_dir, "/before.txt")
    assert got.code == 0, got.err
    assert got.out == "stored before the rotation\n"


def test_rotate_server_refuses_another_servers_nurl(tmp_path: Path, reaper: NodeReaper) -> None:
    """A NURL with a key pin the gateway does not know is another server: refused (exit 1),
    the server list unchanged; a malformed one is a usage error (exit 2)."""
    first = reaper.track(tmp_path / "s1")
    other = reaper.track(tmp_path / "s2")
    nurls = []
    for node_dir in (first, other):
        created = gateway("create-storage", node_dir)
        assert created.code == 0, created.err
        nurls.append(created.out.strip().splitlines()[-1])
    gw = reaper.track(tmp_path / "gw")
    assert gateway("create", gw, "--storage", nurls[0], "--shares", "1/1/1").code == 0
    before = (gw / "private" / "servers").read_text()
    refused = gateway("rotate", "server", gw, nurls[1])
    assert refused.code == 1
    pin = nurls[1].split("@")[0].removeprefix("pb://")
    assert refused.err == (
        f"gateway: no server with key {pin} in {gw / 'private' / 'servers'}: a NURL with "
        "another key is another server (add it to that file to use it)\n"
    )
    assert (gw / "private" / "servers").read_text() == before
    bad = gateway("rotate", "server", gw, "pb://nonsense/secret")
    assert bad.code == 2 and "secret" not in bad.err
    wrong_kind = gateway("rotate", "swissnum", gw)
    assert wrong_kind.err == f"gateway: {gw} is a gateway node: 'rotate swissnum' needs a storage\n"


def _fingerprint(public_key_file: Path) -> str:
    """The SHA256 fingerprint OpenSSH's ssh-keygen prints for a public key file."""
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def _known_hosts(gw: RunningGateway, path: Path) -> str:
    """Record the key the gateway presents now (ssh-keyscan) in ``path``; return its
    fingerprint as OpenSSH computes it."""
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(gw.port), gw.host],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    path.write_text(scanned)
    return _fingerprint(path)


def test_rotating_the_host_key(tmp_path: Path, reaper: NodeReaper) -> None:
    """``rotate host-key`` prints the new fingerprint; after a restart the gateway presents
    that key (start prints it too), and OpenSSH's sftp refuses the gateway with the old key in
    known_hosts and accepts it with the new one."""
    with socket.socket() as s:  # a fixed port: known_hosts names the host by host and port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = start_gateway(tmp_path, reaper, "--sftp-port", str(port))
    key = gw.node_dir / "private" / "ssh_host_ed25519_key"
    old = _fingerprint(key.with_name(key.name + ".pub"))
    repeated = gateway("start", gw.node_dir)  # already running: repeats what start printed
    assert f"      host key: ED25519 {old}" in repeated.out.splitlines()
    known = tmp_path / "known_hosts"
    assert _known_hosts(gw, known) == old
    ok = sftp_batch(gw.host, gw.port, gw.user, PASSWORD, "ls\n", tmp_path, known_hosts=known)
    assert ok.returncode == 0, ok.stderr

    rotated = gateway("rotate", "host-key", gw.node_dir)
    assert rotated.code == 0, rotated.err
    new = _fingerprint(key.with_name(key.name + ".pub"))
    assert new != old
    assert rotated.out.splitlines() == [
        f"New SSH host key for {gw.node_dir}: ED25519 {new} (was {old}).",
        "Clients that knew the old key will refuse the new one (REMOTE HOST IDENTIFICATION "
        f"HAS CHANGED) until they forget it: ssh-keygen -R '[127.0.0.1]:{port}'",
        "The running node still presents the old key until it restarts: "
        f"gateway stop {gw.node_dir} && gateway start {gw.node_dir}",
    ]
    still = sftp_batch(gw.host, gw.port, gw.user, PASSWORD, "ls\n", tmp_path, known_hosts=known)
    assert still.returncode == 0, still.stderr

    assert gateway("stop", gw.node_dir).code == 0
    started = gateway("start", gw.node_dir)
    assert started.code == 0 and f"host key: ED25519 {new}" in started.out
    again = restart_gateway(gw.node_dir)
    refused = sftp_batch(
        again.host, again.port, gw.user, PASSWORD, "ls\n", tmp_path, known_hosts=known
    )
    assert refused.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert _known_hosts(again, known) == new
    ok = sftp_batch(again.host, again.port, gw.user, PASSWORD, "ls\n", tmp_path, known_hosts=known)
    assert ok.returncode == 0, ok.stderr
    assert gateway("stop", gw.node_dir).code == 0


def test_rotating_an_encrypted_host_key_keeps_it_encrypted(tmp_path: Path) -> None:
    """A host key protected by a passphrase file is replaced by one protected by the same
    passphrase (the node could not load it otherwise)."""
    node_dir = tmp_path / "gw"
    assert gateway("create", node_dir).code == 0
    key = node_dir / "private" / "ssh_host_ed25519_key"
    key.unlink()
    generate_host_key(key, passphrase="s3cret pass")
    phrase = node_dir / "private" / "host_key_passphrase"
    phrase.write_text("s3cret pass\n")
    phrase.chmod(0o600)
    config = node_dir / "node.cfg"
    config.write_text(
        config.read_text().replace(
            "#host_key_passphrase_file = ", "host_key_passphrase_file = private/host_key_passphrase"
        )
    )
    before = key.read_bytes()
    rotated = gateway("rotate", "host-key", node_dir)
    assert rotated.code == 0, rotated.err
    assert "it presents the new key when it starts" in rotated.out
    assert key.read_bytes() != before
    with pytest.raises(HostKeyError, match="a passphrase is needed"):
        load_host_key(key)
    new = fingerprint(load_host_key(key, "s3cret pass").public())
    assert rotated.out.startswith(f"New SSH host key for {node_dir}: ED25519 {new} (was ")
    assert "s3cret pass" not in rotated.out + rotated.err


def test_changing_a_password_refuses_the_old_one(tmp_path: Path, reaper: NodeReaper) -> None:
    """After ``account passwd`` the old password is refused (OpenSSH's sftp), the new one
    works, and a session logged in before the change goes on working until it ends."""
    gw = start_gateway(tmp_path, reaper)
    held, held_sftp = gw.sftp()
    try:
        changed = gateway(
            "account", "passwd", gw.node_dir, gw.user, "--password-stdin", stdin="n3w pass\n"
        )
        assert changed.code == 0, changed.err
        old = sftp_batch(gw.host, gw.port, gw.user, PASSWORD, "ls\n", tmp_path)
        assert old.returncode != 0
        assert "Permission denied" in old.stderr
        new = sftp_batch(gw.host, gw.port, gw.user, "n3w pass", "mkdir made-after\n", tmp_path)
        assert new.returncode == 0, new.stderr
        with held_sftp.open("/written-by-the-old-session", "wb") as f:
            f.write(b"still logged in\n")
        assert sorted(held_sftp.listdir("/")) == ["made-after", "written-by-the-old-session"]
    finally:
        held.close()
    with pytest.raises(paramiko.AuthenticationException):
        transport = paramiko.Transport((gw.host, gw.port))
        try:
            transport.connect(username=gw.user, password=PASSWORD)
        finally:
            transport.close()
    assert gateway("stop", gw.node_dir).code == 0
