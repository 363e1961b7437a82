"""Where a path lookup ends (:meth:`gateway.fs.volume.Volume.locate`), and where a
symbolic link met on the way points."""

from __future__ import annotations

from attrs import frozen

from gateway.fs.paths import Path, join, split
from gateway.objects.dirformat import Entry
from gateway.objects.interfaces import IDirectory

#: Symbolic links followed resolving one path before it fails as a loop (Linux: 40).
MAX_SYMLINK_HOPS = 40


@frozen
class Located:
    """Where :meth:`Volume.locate` found a path: its real path, the directory holding its
    last component (None for the root, or a file served from the overlay) and that
    component's entry when it was looked up (None when not, or when there is none:
    ``missing`` then). ``parent_entry`` is the entry naming ``parent`` in its own
    directory (None when ``parent`` is the root): a change checks it is not chmod a-w
    without looking it up again."""

    path: Path
    parent: IDirectory | None = None
    entry: Entry | None = None
    missing: bool = False
    parent_entry: Entry | None = None


def link_target(directory: Path, link: Entry) -> Path:
    """Where a symbolic link in ``directory`` points, as a path from the account's root."""
    target = link.metadata.symlink or ""
    return split(target if target.startswith("/") else join(directory) + "/" + target)
