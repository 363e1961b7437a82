"""Gateway crashes (SIGKILL) never lose a file whose CLOSE (and mtime SETSTAT) was acknowledged.

Sizes are scaled for the time budget: 51 files over three seeds, 1 KiB to
8 MiB (log-uniform) plus one 20 MiB file per seed, on a grid of one storage
node process (shares 1/1/1); what is proven is the gateway's journal and
staging, which the share count does not change.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
from pathlib import Path

import paramiko
import pytest

from tests.durability.cluster import (
    Grid,
    KiB,
    MiB,
    Session,
    grid_gateway,
    kill_gateway,
    put_bytes,
    read_all,
    restart,
    stop_gateway,
    upload_queue,
    wait_drained,
    wait_for,
)
from tests.nodes import NodeReaper

FILES_PER_SEED = 17
KILLS_PER_SEED = 4


def random_sizes(rng: random.Random, count: int) -> list[int]:
    """Log-uniform sizes from 1 KiB to 8 MiB, and one of 20 MiB."""
    sizes = [int(2 ** rng.uniform(10, 23)) for _ in range(count - 1)] + [20 * MiB]
    rng.shuffle(sizes)
    return sizes


@pytest.mark.parametrize(
    "seed",
    [
        1,
        2,
        3,
    ],
)
def test_sigkill_at_random_moments_loses_no_acknowledged_file(
    seed: int, tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """SIGKILL the gateway at random moments while a client writes and uploads run; after the
    restarts every file whose CLOSE and SETSTAT were answered has its bytes and mtime, a file
    that was not acknowledged is absent or whole, and the upload queue drains by itself."""
    rng = random.Random(seed)
    grid = make_grid(1)
    gw = grid_gateway(tmp_path, reaper, grid, "1/1/1")
    sizes = random_sizes(rng, FILES_PER_SEED)
    contents = {f"/f{i:02d}.bin": rng.randbytes(size) for i, size in enumerate(sizes)}
    mtimes = {name: 1_500_000_000 + rng.randrange(10**8) for name in contents}
    acknowledged: list[str] = []
    unacknowledged: list[str] = []
    kills = 0  # writes cut short by a kill
    fired: list[float] = []  # one entry per SIGKILL actually sent
    session = Session(gw)
    killer: threading.Timer | None = None
    for name, data in contents.items():
        if killer is None and kills < KILLS_PER_SEED:
            killer = threading.Timer(rng.uniform(0.05, 1.2), _kill_and_count, [gw, fired])
            killer.start()
        try:
            put_bytes(session.sftp, name, data, mtimes[name])
            acknowledged.append(name)
        except (OSError, EOFError, paramiko.SSHException):
            unacknowledged.append(name)
            assert killer is not None
            killer.join()
            killer, kills = None, kills + 1
            session.close()
            gw = restart(gw)
            session = Session(gw)
    if killer is not None:
        killer.join()  # let it fire: a kill while only background uploads run
    session.close()
    if _gone(gw):
        gw = restart(gw)
    wait_drained(gw, timeout=180)
    with Session(gw) as sftp:
        intact = 0
        for name in acknowledged:
            st = sftp.stat(name)
            if read_all(sftp, name) == contents[name] and st.st_mtime == mtimes[name]:
                intact += 1
        whole_or_absent = 0
        for name in unacknowledged:
            try:
                got = read_all(sftp, name)
            except FileNotFoundError:
                whole_or_absent += 1
                continue
            whole_or_absent += got == contents[name]
    print(
        f"seed {seed}: {len(fired)} SIGKILLs; {intact}/{len(acknowledged)} acknowledged files "
        f"intact (bytes and mtime); {whole_or_absent}/{len(unacknowledged)} unacknowledged "
        "whole or absent"
    )
    assert len(fired) >= 1
    assert intact == len(acknowledged)
    assert whole_or_absent == len(unacknowledged)
    stop_gateway(gw)


def _kill_and_count(gw: object, fired: list[float]) -> None:
    from tests.durability.cluster import RunningGateway

    assert isinstance(gw, RunningGateway)
    kill_gateway(gw)
    fired.append(time.monotonic())


def _gone(gw: object) -> bool:
    from tests.durability.cluster import RunningGateway
    from tests.nodes import node_pid, process_gone

    assert isinstance(gw, RunningGateway)
    pid = node_pid(gw.node_dir)
    return pid is None or process_gone(pid)


def test_sigkill_between_journal_and_directory_update(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """With the storage node SIGSTOPped, CLOSE is answered (journaled) but no upload can finish;
    SIGKILL the gateway then. After a restart (grid still frozen) every file is listed and read
    from staging with its mtime; after SIGCONT the queue drains, and with the staging directory
    deleted afterwards every file still reads from the grid."""
    rng = random.Random(7)
    grid = make_grid(1)
    gw = grid_gateway(tmp_path, reaper, grid, "1/1/1")
    contents = {f"/d/p{i}.bin": rng.randbytes(rng.randrange(KiB, 3 * MiB)) for i in range(8)}
    with Session(gw) as sftp:
        sftp.mkdir("/d")
        handles = [sftp.open(name, "wb") for name in contents]  # opened while the grid answers
        for f, data in zip(handles, contents.values(), strict=True):
            f.write(data)
        grid.freeze(0)
        for i, (f, name) in enumerate(zip(handles, contents, strict=True)):
            f.close()  # answered once staged and journaled
            sftp.utime(name, (1_600_000_000 + i, 1_600_000_000 + i))
    assert len(upload_queue(gw)) == len(contents)
    kill_gateway(gw)
    gw = restart(gw)
    started = time.monotonic()
    with Session(gw) as sftp:
        served = sum(
            read_all(sftp, name) == data and sftp.stat(name).st_mtime == 1_600_000_000 + i
            for i, (name, data) in enumerate(contents.items())
        )
    print(
        f"after SIGKILL with the grid frozen: {served}/{len(contents)} files served from staging "
        f"in {time.monotonic() - started:.1f}s"
    )
    assert served == len(contents)
    grid.thaw(0)
    wait_drained(gw, timeout=150)
    stop_gateway(gw)
    shutil.rmtree(gw.node_dir / "staging")
    gw = restart(gw)
    with Session(gw) as sftp:
        from_grid = sum(
            read_all(sftp, name) == data and sftp.stat(name).st_mtime == 1_600_000_000 + i
            for i, (name, data) in enumerate(contents.items())
        )
    print(f"after SIGCONT and with staging deleted: {from_grid}/{len(contents)} files from grid")
    assert from_grid == len(contents)
    stop_gateway(gw)


def test_fsync_survives_sigkill_and_loss_of_staging(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """fsync@openssh.com returns only once the handle's contents are in the grid, in a directory
    made just before (directory changes are otherwise published after their reply): SIGKILL the
    gateway right after (with more unsynced writes on the handle), delete its staging directory
    and its journals, and a second gateway with the same root reads exactly the fsynced bytes."""
    grid = make_grid(3)
    a = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="a")
    b = grid_gateway(tmp_path, reaper, grid, "2/3/3", name="b", root_from=a.node_dir)
    synced = random.Random(3).randbytes(3 * MiB + 17)
    session = Session(a)
    session.sftp.mkdir("/made")
    session.sftp.mkdir("/made/here")
    f = session.sftp.open("/made/here/synced.bin", "wb")
    f.write(synced)
    f.flush()
    kind, _ = session.sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)
    assert kind == paramiko.sftp.CMD_STATUS
    f.write(b"never synced")
    f.flush()
    kill_gateway(a)
    session.close()
    shutil.rmtree(a.node_dir / "staging")
    shutil.rmtree(a.node_dir / "state", ignore_errors=True)
    with Session(b) as sftp:
        got = wait_for(
            lambda: _try_read(sftp, "/made/here/synced.bin"), 10, "the fsynced file on b"
        )
    ok = got == synced
    print(f"fsynced file read through the second gateway: {int(ok)}/1 intact ({len(got)} bytes)")
    assert ok
    stop_gateway(b)


def _try_read(sftp: paramiko.SFTPClient, path: str) -> bytes | None:
    try:
        return read_all(sftp, path)
    except FileNotFoundError:
        return None


def test_small_files_written_renamed_and_killed_come_back_under_their_names(
    tmp_path: Path, reaper: NodeReaper, make_grid: type[Grid]
) -> None:
    """The pattern of rsync onto a mount and of WinSCP's ``.filepart``: each small file
    written under a temporary name, closed, then renamed. Such files are staged in memory
    only, durable by their journal records. SIGKILL the gateway right after the last
    rename is answered: after the restart every file is under its final name with its
    bytes, no temporary name is left, and the staging directory holds no file for them."""
    rng = random.Random(7)
    grid = make_grid(1)
    gw = grid_gateway(tmp_path, reaper, grid, "1/1/1")
    contents = {f"/kept/f{i:02d}.bin": rng.randbytes(rng.randrange(1, 64 * KiB)) for i in range(30)}
    with Session(gw) as sftp:
        sftp.mkdir("/kept")
        for name, data in contents.items():
            put_bytes(sftp, name + ".part", data)
            sftp.rename(name + ".part", name)
        staged = [p.name for p in (gw.node_dir / "staging").glob("*.staged")]
        pending = len(upload_queue(gw))
        kill_gateway(gw)
    gw = restart(gw)
    wait_drained(gw, timeout=120)
    with Session(gw) as sftp:
        names = sorted(sftp.listdir("/kept"))
        intact = sum(read_all(sftp, name) == data for name, data in contents.items())
    print(
        f"{intact}/{len(contents)} small files intact under their names after SIGKILL "
        f"({pending} still uploading at the kill)"
    )
    assert staged == [] and pending > 0
    assert names == sorted(name.removeprefix("/kept/") for name in contents)
    assert intact == len(contents)
    stop_gateway(gw)
