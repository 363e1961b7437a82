"""Directory changes are answered once journaled: a SIGKILL right after their replies loses none.

Two gateway processes share one account root on three storage-node processes.
Gateway ``a`` makes, fills and renames directories over SFTP and is SIGKILLed
as soon as the last reply arrives, before its background publishes can run.
After its restart the journal is replayed and ``b`` sees the whole tree.
"""

from __future__ import annotations

from pathlib import Path

from tests.durability.cluster import (
    Grid,
    Session,
    directory_changes,
    grid_gateway,
    kill_gateway,
    put_bytes,
    read_all,
    restart,
    stop_gateway,
    wait_drained,
    wait_for,
)
from tests.nodes import NodeReaper


def _names(sftp: object, path: str) -> list[str]:
    return sorted(sftp.listdir(path))  # type: ignore[attr-defined]


def test_directory_changes_survive_a_sigkill_right_after_their_replies(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """mkdir, a file inside, rename, rmdir and symlink answered by ``a`` are all in the grid
    once ``a`` restarts after a SIGKILL, as ``b`` (another gateway) reads them."""
    grid = make_grid(3)
    a = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="a")
    b = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="b", root_from=a.node_dir)
    with Session(a) as sftp:
        sftp.mkdir("/project")
        sftp.mkdir("/project/src")
        put_bytes(sftp, "/project/src/main.py", b"print('hello')\n")
        sftp.mkdir("/scratch")
        sftp.rename("/project", "/renamed")
        sftp.rmdir("/scratch")
        sftp.symlink("renamed/src/main.py", "/link")
        assert _names(sftp, "/") == ["link", "renamed"]
        kill_gateway(a)
    a = restart(a)
    wait_drained(a)
    assert directory_changes(a) == 0
    with Session(b) as sftp:
        listed = wait_for(
            lambda: (_names(sftp, "/") == ["link", "renamed"]) and _names(sftp, "/"),
            10,
            "the renamed tree on b",
        )
        assert listed == ["link", "renamed"]
        assert _names(sftp, "/renamed/src") == ["main.py"]
        assert read_all(sftp, "/renamed/src/main.py") == b"print('hello')\n"
        assert sftp.readlink("/link") == "renamed/src/main.py"
    stop_gateway(a)
    stop_gateway(b)


def test_a_clean_stop_publishes_every_directory_change(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """``gateway stop`` publishes the journaled directory changes before it exits: a second
    gateway sees them at once, and the stopped node's journal holds nothing to replay."""
    grid = make_grid(3)
    a = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="a")
    b = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="b", root_from=a.node_dir)
    with Session(a) as sftp:
        for i in range(20):
            sftp.mkdir(f"/d{i:02d}")
    stop_gateway(a)
    with Session(b) as sftp:
        assert _names(sftp, "/") == [f"d{i:02d}" for i in range(20)]
    a = restart(a)
    assert directory_changes(a) == 0
    stop_gateway(a)
    stop_gateway(b)
