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

Engines: ``atheris`` (libFuzzer, guided by the coverage of the ``gateway.sftp``
and ``gateway.fs`` packages; ``pip install atheris``, the default when it is
installed) runs each target in a child process, starting from valid seeds; an
input that takes over 10 s is a finding (a hang), and a finding's input is
saved as ``crash-*`` in ``--artifacts``. ``hypothesis`` runs the same targets'
strategies with ``max_examples`` set to ``--inputs`` and shrinks a finding.
Prints, per target, the inputs run, the time, inputs/s, the peak memory of
the process (growing without bound is a finding) and the findings.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RESET_EVERY = 500
"""Inputs after which the gateway is made afresh (accepted requests make its namespace grow)."""

MAX_RSS_MIB = 1024
"""Peak memory of a fuzzing process beyond which memory growth is a finding."""


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_memory() -> None:
    """A finding if this process's peak memory passed :data:`MAX_RSS_MIB`."""
    from tests.sftp.sftp_fuzz import Finding

    if _peak_rss_mib() > MAX_RSS_MIB:
        raise Finding(f"memory grew to {_peak_rss_mib():.0f} MiB")


def run_atheris_child(target: str, inputs: int, corpus: Path, artifacts: Path) -> None:
    """In a child process: fuzz one target with atheris until ``inputs`` have run."""
    import atheris

    with atheris.instrument_imports(include=["gateway.sftp", "gateway.fs"]):
        import gateway.fs.gridfs
        import gateway.sftp.avatar  # noqa: F401
    from tests.sftp.sftp_fuzz import check_input, gateway_under_test
    from tests.sftp.sftp_fuzz_targets import BYTE_TARGETS

    byte_target = BYTE_TARGETS[target]
    for i, seed in enumerate(byte_target.seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    state = {"count": 0}
    holder = [gateway_under_test()]
    under_test = [holder[0].__enter__()]

    def one_input(data: bytes) -> None:
        state["count"] += 1
        if state["count"] % RESET_EVERY == 0:
            holder[0].__exit__(None, None, None)
            _check_memory()
            holder[0] = gateway_under_test()
            under_test[0] = holder[0].__enter__()
        pieces = 1 + (data[-1] % 3 if data else 0)
        check_input(under_test[0], byte_target.wrap(data), pieces)

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={inputs}",
            "-max_len=4096",
            "-timeout=10",
            f"-rss_limit_mb={MAX_RSS_MIB}",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{target}-",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


def _child_peak(output: str) -> float:
    found = re.search(r"stat::peak_rss_mb:\s+(\d+)", output)
    return float(found.group(1)) if found else 0.0


def run_atheris(target: str, inputs: int, artifacts: Path) -> tuple[int, float, float, list[str]]:
    """Fuzz one target in a child process; answer inputs run, seconds, peak MiB, findings."""
    log = artifacts / f"{target}.log"  # libFuzzer's progress lines, as they come
    with tempfile.TemporaryDirectory(prefix=f"fuzz-corpus-{target}-") as corpus:
        start = time.monotonic()
        with log.open("w") as out:
            child = subprocess.run(
                [sys.executable, __file__, "--child", target, "--inputs", str(inputs)]
                + ["--corpus", corpus, "--artifacts", str(artifacts)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        elapsed = time.monotonic() - start
    output = log.read_text(errors="replace")
    done = re.search(r"stat::number_of_executed_units: (\d+)", output)
    ran = int(done.group(1)) if done else 0
    findings = []
    if child.returncode != 0:
        lines = [line for line in output.splitlines() if "Error" in line or "Finding" in line]
        saved = re.findall(r"Test unit written to (\S+)", output)
        findings.append("; ".join(lines[-3:] + saved) or f"exit status {child.returncode}")
    return ran, elapsed, _child_peak(output), findings


def run_hypothesis(target: str, inputs: int) -> tuple[int, float, float, list[str]]:
    """Fuzz one target with Hypothesis in this process; answer inputs run, seconds, peak MiB
    and findings."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.sftp.sftp_fuzz import Step, check_input, gateway_under_test
    from tests.sftp.sftp_fuzz_targets import TARGETS

    count = [0]
    findings: list[str] = []
    holder = [gateway_under_test()]
    under_test = [holder[0].__enter__()]

    @settings(
        max_examples=inputs,
        deadline=10_000,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(steps=TARGETS[target](), pieces=st.sampled_from([1, 1, 2, 7]))
    def run(steps: list[Step], pieces: int) -> None:
        count[0] += 1
        if count[0] % RESET_EVERY == 0:
            holder[0].__exit__(None, None, None)
            _check_memory()
            holder[0] = gateway_under_test()
            under_test[0] = holder[0].__enter__()
        check_input(under_test[0], steps, pieces)

    start = time.monotonic()
    try:
        run()
    except Exception as e:
        findings.append(f"{type(e).__name__}: {e}")
    finally:
        holder[0].__exit__(None, None, None)
    elapsed = time.monotonic() - start
    return count[0], elapsed, _peak_rss_mib(), findings


def main() -> int:
    """Run the chosen targets and print their figures; exit 1 if anything was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", help="a target (default: all)")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_atheris_child(args.child, args.inputs, args.corpus, args.artifacts.resolve())
        return 0

    from tests.sftp.sftp_fuzz_targets import TARGETS

    engine = args.engine or ("atheris" if _has_atheris() else "hypothesis")
    targets = args.target or sorted(TARGETS)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    print(f"engine {engine}, {args.inputs} inputs per target, pid {os.getpid()}", flush=True)
    header = f"{'target':10} {'inputs':>10} {'seconds':>9} {'inputs/s':>9} {'MiB':>6}  findings"
    print(header, flush=True)
    found = False
    for target in targets:
        if engine == "atheris":
            ran, elapsed, peak, findings = run_atheris(target, args.inputs, args.artifacts)
        else:
            ran, elapsed, peak, findings = run_hypothesis(target, args.inputs)
        found = found or bool(findings)
        rate = ran / elapsed if elapsed else 0.0
        summary = "; ".join(findings) or "none"
        line = f"{target:10} {ran:>10} {elapsed:>9.0f} {rate:>9.0f} {peak:>6.0f}  {summary}"
        print(line, flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
