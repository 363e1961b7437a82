"""The directory nodes a volume keeps: one per directory walked to, shared by its sessions.

A node holds what this gateway knows of its directory between requests (the
contents it read, the races it lost), so every lookup through a directory
should find the same one. They are kept most recently used first, and at most
:data:`NODES_KEPT`: a ``mkdir``/``rmdir`` loop, a build's temporary trees or
an ``rm -r`` walk to ever new directories, and each node kept for ever was
about a KiB gone.
"""

from __future__ import annotations

from gateway.fs.errors import NotADirectory
from gateway.fs.paths import Path, join
from gateway.objects.caps import DirectoryReadCap, DirectoryWriteCap
from gateway.objects.dirformat import Entry
from gateway.objects.interfaces import IDirectory

#: Directory nodes kept; past this the least recently used goes (made again when needed).
NODES_KEPT = 4096


class DirectoryNodes:
    """The nodes of the directories below a root, by capability (see the module docstring)."""

    def __init__(self, kept: int = NODES_KEPT) -> None:
        self._kept = kept
        self._nodes: dict[DirectoryWriteCap | DirectoryReadCap, IDirectory] = {}

    def __len__(self) -> int:
        return len(self._nodes)

    def child(self, parent: IDirectory, entry: Entry, path: Path) -> IDirectory:
        """The node of a subdirectory's entry; NotADirectory when the entry at ``path``
        names something else."""
        cap = entry.cap
        if not isinstance(cap, DirectoryWriteCap | DirectoryReadCap):
            raise NotADirectory(f"not a directory: {join(path)}")
        nodes = self._nodes
        node = nodes.pop(cap, None)
        if node is None:
            node = parent.child_node(entry)
            if len(nodes) >= self._kept:
                del nodes[next(iter(nodes))]
        nodes[cap] = node
        return node
