"""The audit log of a real gateway process, written as real clients (paramiko, OpenSSH's
``sftp`` with a password and with a key) log in, fail to, and change files."""

from __future__ import annotations

import json
import subprocess
import unicodedata
import urllib.request
from pathlib import Path
from typing import Any

import paramiko
import pytest

from gateway.config import update_config
from tests.nodes import NodeReaper, gateway
from tests.openssh import sftp_batch
from tests.sftp.gateway_node import PASSWORD, RunningGateway, start_gateway


def _audit_on(**settings: str) -> Any:
    def configure(node_dir: Path) -> None:
        values = {"enabled": "true", **settings}
        update_config(node_dir / "node.cfg", {("audit", k): v for k, v in values.items()})

    return configure


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _ends_with_the_stop(events: list[dict[str, Any]]) -> None:
    """The node's stop is recorded last, but for the logouts of connections it closed."""
    stops = [n for n, e in enumerate(events) if e["event"] == "gateway_stop"]
    assert len(stops) == 1
    assert all(e["event"] == "logout" for e in events[stops[0] + 1 :])


def _stop(gw: RunningGateway) -> None:
    stopped = gateway("stop", gw.node_dir)
    assert stopped.code == 0, stopped.err


def _login_fails(gw: RunningGateway, user: str, password: str) -> None:
    transport = paramiko.Transport((gw.host, gw.port))
    try:
        with pytest.raises(paramiko.AuthenticationException):
            transport.connect(username=user, password=password)
    finally:
        transport.close()


def _key_pair(directory: Path) -> tuple[Path, str]:
    """A new Ed25519 key (its file) and its fingerprint as ssh-keygen prints it."""
    key = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30
    )
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    )
    return key, listed.stdout.split()[1]


def _paramiko_session(gw: RunningGateway) -> tuple[int, int]:
    """Change files over paramiko; the client's port and its session's number on the
    status page."""
    transport, sftp = gw.sftp()
    try:
        port = transport.sock.getsockname()[1]
        with urllib.request.urlopen(gw.web_url.rstrip("/") + "/sftp.json", timeout=10) as reply:
            (shown,) = json.load(reply)["sessions"]
        sftp.mkdir("/docs")
        with sftp.open("/docs/./a.txt.filepart", "wb") as f:
            f.write(b"hello")
        sftp.rename("/docs/a.txt.filepart", "/docs/../docs/a.txt")
        sftp.chmod("/docs/a.txt", 0o640)
        sftp.utime("/docs/a.txt", (1_700_000_000, 1_700_000_100))
        with sftp.open("/docs/a.txt", "rb") as f:
            assert f.read() == b"hello"
        with sftp.open("/Cafe\u0301.txt", "wb") as f:
            f.truncate(3)
        with pytest.raises(FileNotFoundError):
            sftp.rmdir("/no-such-dir")
        sftp.remove("/docs/a.txt")
        sftp.rmdir("/docs")
        sftp.symlink("Café.txt", "/link")
    finally:
        transport.close()
    return port, shown["id"]


def _abandoned_upload(gw: RunningGateway) -> int:
    """Write to a file and drop the connection without closing it; the client's port."""
    transport, sftp = gw.sftp()
    try:
        port = transport.sock.getsockname()[1]
        f = sftp.open("/abandoned.bin", "wb")
        f.write(b"never published")
        f.flush()
        sftp.stat("/abandoned.bin")  # the write was answered before the stat
    finally:
        transport.close()
    return port


def test_logins_and_file_changes_are_audited(tmp_path: Path, reaper: NodeReaper) -> None:
    """Failed and good logins (password and key), every kind of change from paramiko and
    OpenSSH's sftp, with their outcome and the session the status page shows, and the
    logouts; no password, key or capability anywhere in the file."""
    key, fingerprint = _key_pair(tmp_path)

    def configure(node_dir: Path) -> None:
        _audit_on()(node_dir)
        added = gateway("account", "add", node_dir, "bob", "--ssh-key", f"{key}.pub")
        assert added.code == 0, added.err

    gw = start_gateway(tmp_path, reaper, configure=configure)
    _login_fails(gw, "alice", "not the password")
    _login_fails(gw, "nobody", PASSWORD)
    port, session = _paramiko_session(gw)
    abandoned = _abandoned_upload(gw)
    (tmp_path / "up.txt").write_text("via openssh\n")
    batch = "put up.txt /up.txt\nrename /up.txt /moved.txt\nchmod 600 /moved.txt\n"
    batch += "mkdir /d\nrmdir /d\nrm /moved.txt\n"
    done = sftp_batch(gw.host, gw.port, gw.user, gw.password, batch, tmp_path)
    assert done.returncode == 0, done.stderr
    keyed = subprocess.run(
        ["sftp", "-b", "-", "-i", str(key), "-P", str(gw.port), "-o", "BatchMode=yes",
         "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", f"bob@{gw.host}"],
        input="mkdir /bobs\n", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert keyed.returncode == 0, keyed.stderr
    _stop(gw)

    audit = gw.node_dir / "logs" / "audit.jsonl"
    text = audit.read_text(encoding="utf-8")
    events = _events(audit)
    assert events[0]["event"] == "gateway_start"
    _ends_with_the_stop(events)

    failed = [e for e in events if e["event"] == "login_failed"]
    assert [(e["account"], e["method"], e["reason"]) for e in failed] == [
        ("alice", "password", "wrong password"),
        ("nobody", "password", "no such account"),
    ]
    assert all(e["address"] == "127.0.0.1" and e["session"] is None for e in failed)

    mine = [e for e in events if e["port"] == port]
    assert [e["event"] for e in mine] == [
        "login", "mkdir", "open", "close", "rename", "setstat", "setstat", "open",
        "setstat", "close", "rmdir", "remove", "rmdir", "symlink", "logout",
    ]  # fmt: skip
    login, *changes, logout = mine
    assert (login["account"], login["method"], login["session"]) == ("alice", "password", None)
    assert login["client_version"].startswith("SSH-2.0-paramiko")
    assert all(e["session"] == session and e["account"] == "alice" for e in changes)
    assert logout["seconds"] >= 0
    opened, closed, renamed = changes[1:4]
    assert opened["path"] == "/docs/a.txt.filepart"
    assert opened["flags"] == ["write", "create", "truncate"] and opened["outcome"] == "ok"
    assert (closed["path"], closed["bytes"], closed["outcome"]) == ("/docs/a.txt.filepart", 5, "ok")
    assert (renamed["from"], renamed["to"], renamed["overwrite"]) == (
        "/docs/a.txt.filepart", "/docs/a.txt", False,
    )  # fmt: skip
    assert changes[4]["attributes"] == {"mode": "0640"}
    assert changes[5]["attributes"] == {"mtime": 1_700_000_100, "atime": 1_700_000_000}
    assert changes[6]["path"] == unicodedata.normalize("NFC", "/Cafe\u0301.txt") == "/Café.txt"
    assert changes[7]["attributes"] == {"size": 3}
    missing = changes[9]
    assert (missing["path"], missing["outcome"]) == ("/no-such-dir", "no_such_file")
    assert "no-such-dir" in missing["error"]
    link = changes[12]
    assert (link["path"], link["target"], link["outcome"]) == ("/link", "Café.txt", "ok")

    dropped = [e for e in events if e["port"] == abandoned and e["event"] == "close"]
    assert [(e["path"], e["bytes"], e["outcome"]) for e in dropped] == [
        ("/abandoned.bin", 15, "aborted")
    ]

    by_openssh = [
        e
        for e in events
        if e["port"] not in (port, abandoned, None)
        and e["account"] == "alice"
        and e["event"] != "login_failed"
    ]
    kinds = [e["event"] for e in by_openssh]
    assert kinds[0] == "login" and kinds[-1] == "logout"
    assert {"open", "close", "rename", "setstat", "mkdir", "rmdir", "remove"} <= set(kinds)
    rename = next(e for e in by_openssh if e["event"] == "rename")
    assert (rename["from"], rename["to"], rename["outcome"]) == ("/up.txt", "/moved.txt", "ok")
    assert all(e.get("outcome", "ok") == "ok" for e in by_openssh)

    bob = next(e for e in events if e["event"] == "login" and e["account"] == "bob")
    assert (bob["method"], bob["key_type"]) == ("publickey", "ssh-ed25519")
    assert bob["fingerprint"] == fingerprint
    assert any(e["event"] == "mkdir" and e["path"] == "/bobs" for e in events)

    accounts = json.loads((gw.node_dir / "private" / "accounts.json").read_text())
    assert PASSWORD not in text and "not the password" not in text
    assert "GG:" not in text and "pb://" not in text
    assert "PRIVATE KEY" not in text and key.read_text().split("\n")[1] not in text
    assert all(
        secret not in text
        for secret in _strings(accounts)
        if len(secret) >= 20 and not secret.startswith("ssh-")
    )


def _strings(value: Any) -> list[str]:
    """Every string in a JSON document (the account file's caps and password hashes)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_rotation_keeps_the_configured_files(tmp_path: Path, reaper: NodeReaper) -> None:
    """With a tiny max_size the log rotates as the node runs: ``keep`` old files, each at
    most max_size, every line whole JSON, the newest events in the current file."""
    gw = start_gateway(tmp_path, reaper, configure=_audit_on(max_size="2KiB", keep="2"))
    transport, sftp = gw.sftp()
    try:
        for number in range(40):
            sftp.mkdir(f"/dir{number:02d}")
    finally:
        transport.close()
    _stop(gw)
    logs = gw.node_dir / "logs"
    assert sorted(p.name for p in logs.glob("audit*")) == [
        "audit.jsonl", "audit.jsonl.1", "audit.jsonl.2",
    ]  # fmt: skip
    files = [logs / "audit.jsonl.2", logs / "audit.jsonl.1", logs / "audit.jsonl"]
    assert all(f.stat().st_size <= 2048 for f in files)
    events = [e for f in files for e in _events(f)]
    made = [e["path"] for e in events if e["event"] == "mkdir"]
    assert made[-1] == "/dir39" and made == sorted(made)
    _ends_with_the_stop(events)


def test_no_audit_log_by_default(tmp_path: Path, reaper: NodeReaper) -> None:
    """A gateway left at the defaults writes no audit file at all."""
    gw = start_gateway(tmp_path, reaper)
    transport, sftp = gw.sftp()
    try:
        with sftp.open("/file.txt", "wb") as f:
            f.write(b"data")
        sftp.remove("/file.txt")
    finally:
        transport.close()
    _login_fails(gw, "alice", "wrong")
    _stop(gw)
    assert not [p for p in gw.node_dir.rglob("*audit*")]


def test_a_full_disk_loses_events_not_operations(tmp_path: Path, reaper: NodeReaper) -> None:
    """With the audit log on a full device, logins and writes still work, and the node log
    says once that audit events are being lost."""
    gw = start_gateway(tmp_path, reaper, configure=_audit_on(path="/dev/full"))
    for _ in range(2):
        transport, sftp = gw.sftp()
        try:
            with sftp.open("/kept.txt", "wb") as f:
                f.write(b"written anyway")
            with sftp.open("/kept.txt", "rb") as f:
                assert f.read() == b"written anyway"
        finally:
            transport.close()
    _stop(gw)
    log = (gw.node_dir / "logs" / "node.log").read_text()
    assert log.count("audit log /dev/full cannot be written (No space left on device)") == 1


def test_a_node_whose_audit_log_cannot_open_does_not_start(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """An audit log that was asked for but cannot be opened stops the start, saying why."""
    node_dir = reaper.track(tmp_path / "gw")
    assert gateway("create", node_dir, "--sftp-port", "0", "--web-port", "0").code == 0
    _audit_on(path="logs")(node_dir)  # a directory
    started = gateway("start", node_dir)
    assert started.code != 0
    assert f"audit: cannot open the audit log {node_dir / 'logs'}: Is a directory" in started.err
