"""The local-file state machine alone, event by event: every transition the table allows
and none other, and the overlay's maps after each transition (no grid, no clock)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.fs.localfile import (
    TRANSITIONS,
    Event,
    IllegalTransition,
    LocalFile,
    LocalMeta,
    Phase,
)
from gateway.fs.overlay import LINKED_KEPT, Overlay

DIAGRAM = Path(__file__).resolve().parents[2] / "docs" / "state-machines" / "local-file.dot"


def diagram() -> str:
    """The machine as Graphviz text, drawn from :data:`TRANSITIONS`."""
    lines = [
        "// The life of a local file (gateway/fs/localfile.py), drawn from its TRANSITIONS.",
        "// Render with: dot -Tsvg local-file.dot > local-file.svg",
        "digraph local_file {",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="sans-serif"];',
        "    OPENING [style=\"rounded,bold\"];",
        *(f"    {phase.name} [shape=doublecircle];" for phase in (Phase.LINKED, Phase.DROPPED,
                                                                  Phase.ABANDONED)),
    ]  # fmt: skip
    for (source, event), target in TRANSITIONS.items():
        lines.append(f'    {source.name} -> {target.name} [label="{event.value}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def test_the_diagram_in_docs_is_the_machine() -> None:
    """docs/state-machines/local-file.dot is drawn from the transition table (regenerate it
    with this test's diagram() when the table changes)."""
    assert DIAGRAM.read_text() == diagram()


@pytest.mark.parametrize("phase", list(Phase))
@pytest.mark.parametrize("event", list(Event))
def test_every_event_goes_where_the_table_says_or_is_refused(phase: Phase, event: Event) -> None:
    """An allowed event moves the file to the table's phase; any other raises at once."""
    file = LocalFile(("f",), LocalMeta(), 1, phase=phase)
    expected = TRANSITIONS.get((phase, event))
    if expected is None:
        with pytest.raises(IllegalTransition, match=event.value):
            file.fire(event)
        assert file.phase is phase
    else:
        assert file.fire(event) is expected


def test_a_file_through_its_whole_life() -> None:
    """open, ready, close, journaled, upload, link: each step files it where readers look."""
    overlay = Overlay()
    file = overlay.opening(("d", "f"), LocalMeta(ctime=1.0))
    assert overlay.local(("d", "f")) is file and file.phase is Phase.OPENING
    assert not file.ready.called
    overlay.ready(file)
    assert file.phase is Phase.OPEN and file.ready.called
    closed = overlay.closing(file)
    assert file.phase is Phase.CLOSING and not closed.called
    assert overlay.writing[("d", "f")] is file  # an OPEN of the path waits for it here
    overlay.appended(file, "job1")
    assert ("d", "f") not in overlay.writing and overlay.pending[("d", "f")] is file
    assert overlay.by_job["job1"] is file and file.job_id == "job1"
    overlay.journaled(file)
    assert file.phase is Phase.JOURNALED
    overlay.uploading(file)
    overlay.retry(file)
    assert file.phase is Phase.JOURNALED  # a failed upload waits for the next try
    overlay.uploading(file)
    assert overlay.may_link(file)
    assert overlay.finished("job1") is file
    assert file.phase is Phase.LINKED
    assert overlay.local(("d", "f")) is None and not overlay.by_job
    assert list(overlay.children(("d",))) == []


def test_a_newer_version_is_never_replaced_by_an_older_upload() -> None:
    """Two versions of one path: once the newer is linked, the older may not be."""
    overlay = Overlay()
    older = overlay.opening(("f",), LocalMeta())
    newer = overlay.opening(("f",), LocalMeta())  # (reopened while the first uploads)
    assert newer.generation > older.generation
    assert overlay.may_link(newer)
    assert not overlay.may_link(older)


def _journaled(overlay: Overlay, path: tuple[str, ...], job: str) -> LocalFile:
    """A file opened, closed and journaled as ``job``."""
    file = overlay.opening(path, LocalMeta())
    overlay.ready(file)
    overlay.closing(file)
    overlay.appended(file, job)
    overlay.journaled(file)
    return file


def _linked_through_a_job(overlay: Overlay, path: tuple[str, ...], job: str) -> LocalFile:
    file = _journaled(overlay, path, job)
    overlay.uploading(file)
    assert overlay.may_link(file)
    return file


def test_the_linked_table_keeps_only_paths_with_a_version_in_flight() -> None:
    """Thousands of files written one after another: the table of linked generations (that
    every rename walks) stays bounded, and a path with an older version still uploading
    keeps refusing that older version."""
    overlay = Overlay()
    older = _journaled(overlay, ("busy",), "old")
    overlay.uploading(older)
    newer = _linked_through_a_job(overlay, ("busy",), "new")
    assert overlay.finished("new") is newer
    for i in range(5000):
        _linked_through_a_job(overlay, ("d", f"f{i}"), f"job{i}")
        overlay.finished(f"job{i}")
    assert len(overlay.linked) <= LINKED_KEPT
    assert not overlay.may_link(older)  # its path's newer version is remembered
    assert overlay.finished("old") is older


@pytest.mark.parametrize("phase", [Phase.OPENING, Phase.OPEN, Phase.CLOSING])
def test_abandoning_an_open_file(phase: Phase) -> None:
    """A remove of a file open for writing: it leaves the overlay and publishes nothing."""
    overlay = Overlay()
    file = overlay.opening(("f",), LocalMeta())
    file.phase = phase
    assert overlay.abandon_writing(("f",)) is file
    assert file.abandoned and overlay.local(("f",)) is None
    overlay.released(file)  # its last handle goes later: nothing more happens
    assert file.phase is Phase.ABANDONED


def test_abandoning_a_pending_file_keeps_its_job_until_the_job_ends() -> None:
    """A remove of a file waiting for the grid: unlisted at once, dropped by its job."""
    overlay = Overlay()
    file = _journaled(overlay, ("f",), "job")
    assert overlay.abandon_pending(("f",)) is file
    assert overlay.local(("f",)) is None and overlay.by_job["job"] is file
    overlay.retry(file)  # (a retry of an abandoned file changes nothing)
    assert not overlay.may_link(file)
    assert overlay.finished("job") is file and file.phase is Phase.ABANDONED


def test_a_close_that_cannot_be_saved_leaves_nothing() -> None:
    """A journal record that cannot be flushed: the file goes, as if never closed."""
    overlay = Overlay()
    file = overlay.opening(("f",), LocalMeta())
    overlay.ready(file)
    overlay.closing(file)
    overlay.appended(file, "job")
    overlay.unsaved(file)
    assert file.phase is Phase.DROPPED
    assert overlay.local(("f",)) is None and not overlay.by_job


def test_a_failed_open_leaves_nothing_and_tells_its_waiters() -> None:
    """An OPEN that fails (no such directory): handles waiting for it learn the error."""
    overlay = Overlay()
    file = overlay.opening(("f",), LocalMeta())
    error = FileNotFoundError("no such directory")
    overlay.failed(file, error)
    assert file.phase is Phase.DROPPED and file.failure is error and file.ready.called
    assert overlay.local(("f",)) is None


def test_snapshots_and_adopted_files_start_ready() -> None:
    """An fsync's snapshot and a file replayed from the journal never open: stat needs no
    wait for them."""
    overlay = Overlay()
    file = overlay.opening(("f",), LocalMeta())
    overlay.ready(file)
    generation = file.generation
    snapshot = overlay.snapshot(file, LocalMeta())
    assert snapshot.phase is Phase.CLOSING and snapshot.ready.called
    assert file.generation > snapshot.generation > generation  # a later close is newer
    adopted = LocalFile(("g",), LocalMeta(), overlay.next_generation())
    overlay.adopted(adopted, "old-job")
    assert adopted.phase is Phase.JOURNALED and adopted.ready.called
    assert overlay.pending[("g",)] is adopted and overlay.by_job["old-job"] is adopted


def test_move_retargets_files_under_a_directory() -> None:
    """A rename of a directory moves every local file under it, open or pending."""
    overlay = Overlay()
    open_file = overlay.opening(("a", "x"), LocalMeta())
    pending = overlay.opening(("a", "b", "y"), LocalMeta())
    overlay.ready(pending)
    overlay.closing(pending)
    overlay.appended(pending, "job")
    assert overlay.move(("a",), ("z",), overlay.versions_at_or_under(("a",))) == [pending]
    assert open_file.path == ("z", "x") and overlay.writing[("z", "x")] is open_file
    assert pending.path == ("z", "b", "y") and overlay.pending[("z", "b", "y")] is pending
    assert overlay.has_under(("z",)) and not overlay.has_under(("a",))
