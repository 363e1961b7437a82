"""The directory write-back journal's records: their form, the earlier format, reading them
back.

The journal (``directories.log`` in a 0700 directory: it holds write caps) is
an intent log (:mod:`gateway.intents.log`, shared with the upload journal):
each commit is one intent, keyed by its number — every change it made, to one
or more directories, as ``[directory write cap, change]`` pairs — written
before the client is answered and done once every directory it changed is
published (:class:`~gateway.objects.writeback.DirectoryWriteBack` keeps that
account). Records of the format before the intent log are read as intents.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cbor2

from gateway.intents.log import IntentLog, Operation
from gateway.objects.caps import DirectoryWriteCap, parse
from gateway.objects.dirchanges import Change, change_from_cbor
from gateway.objects.dirformat import CorruptDirectory

JOURNAL_NAME = "directories.log"

Commit = list[tuple[DirectoryWriteCap, Change]]


def open_journal(directory: Path) -> tuple[IntentLog, dict[bytes, int]]:
    """The journal in ``directory`` (made 0700), and for each directory the commit up to
    which a journal of the earlier format marked it published."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    legacy_done: dict[bytes, int] = {}

    def legacy(record: dict[str, Any]) -> list[Operation]:
        """Records of the journal's format before the intent log: commits by number, and
        directories marked published up to a number."""
        if isinstance(record.get("n"), int) and isinstance(record.get("c"), list):
            return [("put", str(record["n"]), record["c"])]
        if isinstance(record.get("d"), list):
            for item in record["d"]:
                if isinstance(item, list) and len(item) == 2:
                    si, seq = bytes(item[0]), int(item[1])
                    legacy_done[si] = max(legacy_done.get(si, 0), seq)
        return []

    log = IntentLog(directory / JOURNAL_NAME, legacy=legacy, value_size=_commit_size)
    return log, legacy_done


def commit_record(items: Sequence[tuple[DirectoryWriteCap, Change]]) -> list[list[Any]]:
    """A commit as the journal keeps it."""
    return [[cap.to_string(), change.to_cbor()] for cap, change in items]


def read_commit(record: Any, damaged: list[str]) -> Commit:
    """A journaled commit's changes; each one that cannot be read is told in ``damaged``
    and left out."""
    found: Commit = []
    for item in record if isinstance(record, list) else []:
        try:
            if not (isinstance(item, list) and len(item) == 2):
                raise CorruptDirectory("not a (directory, change) pair")
            cap = parse(item[0])
            if not isinstance(cap, DirectoryWriteCap):
                raise CorruptDirectory("not a directory write cap")
            found.append((cap, change_from_cbor(item[1])))
        except Exception as e:
            damaged.append(f"{JOURNAL_NAME}: an unreadable change ({reason(e)})")
    return found


def _commit_size(items: Any) -> int:
    """About the bytes a commit's record takes (for the intent log's compaction rule)."""
    return len(cbor2.dumps(items))


def reason(error: BaseException) -> str:
    """A failure's kind and message, with no capability in it (messages name storage indexes
    at most)."""
    return f"{type(error).__name__}: {error}"[:200]
