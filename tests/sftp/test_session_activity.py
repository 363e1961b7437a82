"""An SFTP session tells whoever asked (the upload queue) of every request it serves."""

from __future__ import annotations

from twisted.internet.task import Clock

from gateway.sftp.sessions import SessionRegistry


def test_every_request_served_is_reported_as_activity() -> None:
    """Each request's reply counts as client activity for a session started with a callback;
    one started without it records latencies only."""
    registry = SessionRegistry(Clock())
    seen: list[str] = []
    busy = registry.start(
        "alice", "SSH-2.0-OpenSSH_9.6", "127.0.0.1", activity=lambda: seen.append("x")
    )
    quiet = registry.start("bob", None, None)
    busy.request("lstat", 0.001)
    busy.request("read", 0.002)
    quiet.request("open", 0.001)
    assert seen == ["x", "x"]
