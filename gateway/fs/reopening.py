"""Opening a file again while its last version is still waiting for the grid.

The new open file lies over that version (``LocalFile.over``) and counts what changes
from the OPEN on (``since_open``). Until the version is stored, its changes are the open
file's too: small ones are copied into the new staged file at the OPEN; larger ones
(:data:`LAZY_OPEN_BYTES` or more: a disk image copied in and started at once) are read
where they are (:mod:`gateway.fs.under`), so the OPEN copies nothing. Once the version's
upload has stored it, it becomes the open file's base (``Overlay.stored``), so its next
fsync or CLOSE stores what changed since the OPEN, not that version's changes again (a
whole new file's, when it was one).

An fsync over a version read where it is waits for it to be stored first (it is needed
in the grid anyway, and the wait makes it the next upload); a version small enough to
be copied is stored again with the fsync's change, which is cheaper than waiting. A
file that must stand on its own while it still reads a version it did not copy (its
CLOSE, or an fsync of a version not stored as one) copies that version's changes then
(:func:`copy_under`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from gateway.fs.contents import COPY_IN_THREAD, Contents
from gateway.fs.localfile import FINAL, Changes, LocalFile
from gateway.fs.rangecopy import copy_and_close, copy_ranges
from gateway.fs.sparse import Ranges
from gateway.fs.staging import StagedFile
from gateway.fs.under import Under
from gateway.threads import Threads
from gateway.uploads.queue import UploadQueue

#: A pending version that changed this much is not copied by an OPEN over it.
LAZY_OPEN_BYTES = 1 << 20


async def open_over(
    state: LocalFile,
    pending: LocalFile,
    contents: Contents,
    new_staged: Callable[[], StagedFile],
    threads: Threads | None,
) -> None:
    """Give ``state`` (being opened, without TRUNC) the contents of ``pending``, the version
    of its path waiting for the grid (``new_staged`` makes an empty staged file)."""
    if pending.held_bytes() >= LAZY_OPEN_BYTES and pending.staged is not None:
        state.staged = new_staged()
        state.staged.truncate(pending.size)  # a hole: what it does not change is read below
        held = pending.staged_bytes().copy()
        fd = os.dup(pending.staged.fd)
        state.under = Under(fd, pending.base, held, pending.limit, pending.size)
        state.limit = pending.size
    else:
        async with pending.writes_held():  # a SETSTAT of its size waits
            state.staged = await contents.copy(pending, threads)
        state.base = pending.base
        state.limit = pending.limit
        state.changed = pending.changed.copy()
    state.over, state.since_open = pending, Changes.from_now(state.size)


async def wait_over(state: LocalFile, queue: UploadQueue) -> None:
    """Before an fsync's snapshot: wait until the version the file was opened over is
    stored, when the file reads it where it is (the module docstring)."""
    over = state.over
    if over is None or state.under is None:
        return
    if over.job_id is not None and over.phase not in FINAL:
        await queue.wait_for(over.job_id)
    if state.over is over:  # not stored as a version (dropped, or a mutable file)
        state.over = state.since_open = None


async def copy_under(state: LocalFile, threads: Threads | None) -> None:
    """Copy the changes of the version the file reads without having copied them (those
    it did not overwrite, below its limit) into its staged file: it stands on its own."""
    under = state.under
    if under is None:
        return
    assert state.staged is not None
    async with state.writes_held():
        staged = state.staged
        missing = Ranges()
        for start, end in under.held:
            stop = min(end, state.limit, staged.size)  # (what lies past shows nowhere)
            for piece_start, piece_end, covered in state.changed.pieces(start, max(start, stop)):
                if not covered:
                    missing.add(piece_start, piece_end)
        staged.fill(missing)
        ranges = list(missing)
        if threads is None or staged.in_memory or missing.covered < COPY_IN_THREAD:
            copy_ranges(under.fd, staged.fd, ranges, kernel=not staged.in_memory)
        else:  # (descriptors of its own: the file may be dropped meanwhile)
            await threads(partial(copy_and_close, os.dup(under.fd), os.dup(staged.fd), ranges))
        if state.under is not under:
            return  # stored meanwhile, and now over what was stored: the copy is not needed
        for start, end in missing:
            state.changed.add(start, end)
        state.base = under.base
        state.limit = min(state.limit, under.limit) if under.base is not None else 0
        state.drop_under()
