"""The node log is rotated by size on a real node, keeping the configured number of files."""

from __future__ import annotations

from pathlib import Path

from tests.nodes import NodeReaper, gateway
from tests.sftp.gateway_node import start_gateway


def test_node_log_rotates_and_keeps_at_most_log_keep_files(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """With a tiny ``log_max_size``, a running gateway's starts and stops fill node.log past
    it: the log is rotated into node.log.1, .2, at most ``log_keep`` of them, each 0600, and
    the newest lines are in node.log."""

    def configure(node_dir: Path) -> None:
        cfg = node_dir / "node.cfg"
        text = cfg.read_text().replace("[node]\n", "[node]\nlog_max_size = 2KiB\nlog_keep = 2\n", 1)
        cfg.write_text(text)

    node = start_gateway(tmp_path, reaper, configure=configure)
    logs = node.node_dir / "logs"
    for _ in range(3):  # each stop and start writes a few lines
        assert gateway("stop", node.node_dir).code == 0
        assert gateway("start", node.node_dir).code == 0
    assert gateway("stop", node.node_dir).code == 0
    rotated = sorted(p.name for p in logs.glob("node.log.*"))
    assert rotated == ["node.log.1", "node.log.2"]
    for path in [logs / "node.log", *(logs / name for name in rotated)]:
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.stat().st_size <= 2048 + 4096  # rotated before the write that passes it
    assert (logs / "node.log").read_text().strip()  # logging goes on in the new file


def test_closing_files_adds_no_line_per_file_to_the_node_log(
    tmp_path: Path, reaper: NodeReaper
) -> None:
    """Conch's per-CLOSE info line ("closing: ...") stays out of node.log: a copy of many
    files does not write a line each; the node's own lines are still there."""
    node = start_gateway(tmp_path, reaper)
    transport, sftp = node.sftp()
    try:
        for i in range(20):
            with sftp.open(f"f{i}", "wb") as f:
                f.write(b"x" * 100)
        assert sorted(sftp.listdir(".")) == sorted(f"f{i}" for i in range(20))
    finally:
        transport.close()
    assert gateway("stop", node.node_dir).code == 0
    text = (node.node_dir / "logs" / "node.log").read_text()
    assert "closing: " not in text
    assert "stopped" in text.lower() or "stopping" in text.lower() or "SFTP" in text
