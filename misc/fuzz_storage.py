#!/usr/bin/env python3
"""Fuzz the storage HTTP server at length: every target, a million inputs each by default.

    misc/fuzz_storage.py                          # all targets, 1,000,000 inputs each
    misc/fuzz_storage.py --target cbor --inputs 200000
    misc/fuzz_storage.py --engine hypothesis      # without atheris

Each input goes to the real site of a storage node in process (limits,
resource tree, core, a disk store under /dev/shm) on a fresh connection while
another session is open, through ``tests/storage/http_fuzz.py``'s
``check_input``: a finding is a raise, a logged failure, a 5xx, stored files
changed by a refused request, a connection or timer left behind, or a session
not served. The targets are ``tests/storage/http_fuzz_targets.py``'s.

Engines, output and the run's limits are ``misc/fuzz_runner.py``'s (shared
with the other fuzz script); atheris's coverage is that of the storage package.
"""

from __future__ import annotations

import sys

from fuzz_runner import Harness, main

HARNESS = Harness(
    script=__file__,
    instrument=("storage",),
    imports=("storage.http_server",),
    fuzz_module="tests.storage.http_fuzz",
    under_test="site_under_test",
    targets_module="tests.storage.http_fuzz_targets",
    reset_every=10_000,  # the store is made afresh (accepted requests make it grow)
)

if __name__ == "__main__":
    sys.exit(main(HARNESS, (__doc__ or "").split("\n\n")[0]))
