"""How a node process sets Python's cyclic garbage collector.

The collector runs after every 700 container allocations by default, and every tenth
and hundredth run scans older generations; a full collection walks every tracked object
the node holds (its node, directory and capability caches: 80,000-190,000 objects
after a few thousand requests). Measured in a gateway serving a stream of mkdir, rename
and rmdir (paramiko, 9,000 operations in about 3 s): 433 young, 39 middle and 3 full
collections, 205 ms in all, the full ones 40-66 ms each, on the reactor thread.

With a young generation of 20,000 and each older one collected after 20 runs of the
younger, paramiko loops against the embedded gateway (three alternating runs of each
build) took 4-10 % less gateway CPU for a mkdir + rename + rmdir cycle (977-1,020 µs
against 1,017-1,083 µs), 12-15 % less for a 16 KiB file (780-1,340 µs against
890-1,580 µs), and the cycle's 90th percentile fell from 1.10-1.17 ms to 1.06-1.10 ms.
``misc/bench.py`` runs of both builds differed by less than their run-to-run noise.
Reference counting still frees at once everything not caught in a cycle; the larger
young generation holds at most 20,000 container objects of cyclic garbage between
collections.
"""

from __future__ import annotations

import gc

#: Allocations between young collections, and runs of each generation between
#: collections of the next (Python's defaults: 700, 10, 10).
THRESHOLDS = (20_000, 20, 20)


def tune_collector() -> None:
    """Set the collector's thresholds for a long-running node (see the module docstring)."""
    gc.set_threshold(*THRESHOLDS)
