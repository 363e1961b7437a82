#!/usr/bin/env python3
"""Fuzz the SFTP server at length: every target, a million inputs each by default.

    misc/fuzz_sftp.py                          # all targets, 1,000,000 inputs each
    misc/fuzz_sftp.py --target extensions --inputs 200000
    misc/fuzz_sftp.py --engine hypothesis      # without atheris

Each input goes to the SFTP side of a gateway in process (the account's
session channel running the sftp subsystem, the protocol, the filesystem
layer, staging under /dev/shm, the upload queue, an in-memory storage server)
on a fresh session while another session is open, through
``tests/sftp/sftp_fuzz.py``'s ``check_input``: a finding is a raise, a logged
failure, a request unanswered or work pending after every deadline, a handle
leaked, the account's capability in a reply, what is stored changed by an
input whose every request was refused, or the other session not served. The
targets are ``tests/sftp/sftp_fuzz_targets.py``'s.

Engines, output and the run's limits are ``misc/fuzz_runner.py``'s (shared
with the other fuzz script); atheris's coverage is that of the ``gateway.sftp``
and ``gateway.fs`` packages.
"""

from __future__ import annotations

import sys

from fuzz_runner import Harness, main

HARNESS = Harness(
    script=__file__,
    instrument=("gateway.sftp", "gateway.fs"),
    imports=("gateway.fs.gridfs", "gateway.sftp.avatar"),
    fuzz_module="tests.sftp.sftp_fuzz",
    under_test="gateway_under_test",
    targets_module="tests.sftp.sftp_fuzz_targets",
    reset_every=500,  # the gateway is made afresh (accepted requests grow its namespace)
)

if __name__ == "__main__":
    sys.exit(main(HARNESS, (__doc__ or "").split("\n\n")[0]))
