"""The status site's JSON twins, metrics and HTTP rules, on a real gateway during real SFTP use."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.web.status_node import BackgroundUpload, StatusGateway, status_gateway

__all__ = ["status_gateway"]

MiB = 1 << 20


def wait_for(check: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        time.sleep(interval)


def test_overview_json_shows_node_encoding_totals_and_grid(status_gateway: StatusGateway) -> None:
    """/overview.json: name, version, uptime, encoding, totals, and the embedded server's health."""
    data = wait_for(
        lambda: (d := status_gateway.json("/overview.json"))["grid"][0]["connected"] and d
    )
    assert data["node"]["nickname"] == "w1" and data["node"]["kind"] == "gateway"
    assert data["node"]["version"] and data["node"]["uptime"] >= 0
    assert data["encoding"]["text"] == "1/1/1"
    server = data["grid"][0]
    assert server["nickname"] == "embedded" and server["state"] == "connected"
    assert server["available_space"] > 0 and server["last_contact"] is not None
    assert data["totals"]["servers"] == 1 and data["totals"]["queue_depth"] >= 0


def test_sessions_and_transfers_follow_a_real_upload(status_gateway: StatusGateway) -> None:
    """While paramiko writes a big file its session and progress show; then it is finished."""
    upload = BackgroundUpload(status_gateway.gw, "json-big.bin", 64 * MiB)
    try:
        sessions = wait_for(lambda: status_gateway.json("/sftp.json")["sessions"])
        session = sessions[0]
        assert session["user"] == "alice"
        assert session["client"].startswith("SSH-2.0-paramiko")
        assert session["remote_address"] == "127.0.0.1"
        seen = wait_for(
            lambda: [
                t
                for t in status_gateway.json("/transfers.json")["in_flight"]
                if t["file"] == "/json-big.bin" and t["done"] > 0
            ]
        )
        first = seen[0]
        assert first["direction"] in ("upload", "to grid")
        later = wait_for(
            lambda: (
                [
                    t
                    for t in status_gateway.json("/transfers.json")["in_flight"]
                    if t["direction"] == first["direction"] and t["done"] > first["done"]
                ]
                or upload.done.is_set()
            )
        )
        assert later is True or later[0]["rate"] >= 0
    finally:
        upload.wait()
    transfers = status_gateway.json("/transfers.json")
    finished = {(f["direction"], f["file"]) for f in transfers["recently_finished"]}
    assert ("upload", "/json-big.bin") in finished and ("to grid", "/json-big.bin") in finished
    assert not [t for t in transfers["in_flight"] if t["file"] == "/json-big.bin"]
    wait_for(lambda: not status_gateway.json("/sftp.json")["sessions"])  # it ends with the link


def test_download_counts_bytes_sent(status_gateway: StatusGateway) -> None:
    """Reading a file back counts bytes out for the session and the node."""
    transport, client = status_gateway.gw.sftp()
    try:
        with client.open("small.bin", "w") as f:
            f.write(b"x" * 300_000)
        before = status_gateway.json("/overview.json")["totals"]["bytes_sent"]
        with client.open("small.bin", "r") as f:
            assert len(f.read()) == 300_000
        session = status_gateway.json("/sftp.json")["sessions"][0]
        assert session["bytes_out"] >= 300_000 and session["bytes_in"] >= 300_000
    finally:
        transport.close()
    totals = status_gateway.json("/overview.json")["totals"]
    assert totals["bytes_sent"] >= before + 300_000
    finished = status_gateway.json("/transfers.json")["recently_finished"]
    assert any(f["direction"] == "download" and f["bytes"] == 300_000 for f in finished)


def test_overview_counts_kept_copies_and_held_requests(status_gateway: StatusGateway) -> None:
    """Once a new file is uploaded its kept copy counts in the totals (and on the page),
    beside the grid requests that waited for clients to pause."""
    transport, client = status_gateway.gw.sftp()
    try:
        before = status_gateway.json("/overview.json")["totals"]["kept_copies"]
        with client.open("kept.bin", "w") as f:
            f.write(b"k" * 200_000)
    finally:
        transport.close()
    totals = wait_for(
        lambda: (
            (t := status_gateway.json("/overview.json")["totals"])["kept_copies"]
            >= before + 200_000
            and t
        )
    )
    assert totals["background_held"] >= 0 and totals["kept_copies"] <= totals["staging_used"]
    _, _, page = status_gateway.get("/")
    assert b"uploaded files kept to read back" in page
    assert b"waited for clients to pause" in page


def test_metrics_in_prometheus_text_format(status_gateway: StatusGateway) -> None:
    """/metrics: sessions, bytes, per-operation latency histogram, queue depth, server health."""
    transport, client = status_gateway.gw.sftp()
    try:
        client.listdir(".")
        status, headers, body = status_gateway.get("/metrics")
    finally:
        transport.close()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    sessions = re.search(r"^gateway_sftp_sessions (\S+)$", text, re.MULTILINE)
    assert sessions and float(sessions.group(1)) >= 1
    for line in (
        'gateway_storage_server_up{server="embedded"} 1.0',
        "gateway_upload_queue_depth ",
        'gateway_sftp_bytes_total{direction="received"} ',
        'gateway_sftp_request_seconds_bucket{le="+Inf",operation="opendir"} ',
        'gateway_sftp_request_seconds_count{operation="readdir"} ',
    ):
        assert line in text, line


def test_health_json_lists_recent_errors(status_gateway: StatusGateway) -> None:
    """A failed login is a warning in the log: the Health page shows it, scrubbed and dated."""
    import paramiko

    transport = paramiko.Transport((status_gateway.gw.host, status_gateway.gw.port))
    try:
        with pytest.raises(paramiko.AuthenticationException):
            transport.connect(username="alice", password="wrong password")
    finally:
        transport.close()
    errors = wait_for(lambda: status_gateway.json("/health.json")["errors"])
    assert any("failed password for 'alice'" in e["message"] for e in errors)
    assert errors[0]["level"] in ("warn", "error", "critical") and errors[0]["when"] > 0
    health = status_gateway.json("/health.json")
    assert health["checks"] == [] and health["lease_renewal"]["interval"] > 0


@pytest.mark.parametrize("path", ["/", "/sftp", "/transfers", "/health", "/overview.json"])
def test_read_only_and_guarded(status_gateway: StatusGateway, path: str) -> None:
    """Every page answers GET; other methods get 405; no caching; pages pin their script."""
    status, headers, body = status_gateway.get(path)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    if not path.endswith(".json"):
        assert b"<noscript" not in body and b"id='live'" in body
        assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert status_gateway.get(path, method)[0] == 405, method


def test_unknown_path_and_foreign_host(status_gateway: StatusGateway) -> None:
    """404 for unknown paths; a non-loopback Host (DNS rebinding) is refused."""
    import urllib.error
    import urllib.request

    assert status_gateway.get("/nope")[0] == 404
    request = urllib.request.Request(status_gateway.url, headers={"Host": "evil.example:8023"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 421
