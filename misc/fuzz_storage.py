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

Engines: ``atheris`` (libFuzzer, guided by the coverage of the storage
package; ``pip install atheris``, the default when it is
installed) runs each target in a child process, starting from valid seeds; an
input that takes over 10 s is a finding (a hang), and a finding's input is
saved as ``crash-*`` in ``--artifacts``. ``hypothesis`` runs the same targets'
strategies with ``max_examples`` set to ``--inputs`` and shrinks a finding.
Prints, per target, the inputs run, the time, inputs/s and the findings.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

RESET_EVERY = 10_000
"""Inputs after which the store is made afresh (accepted requests make it grow)."""


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def run_atheris_child(target: str, inputs: int, corpus: Path, artifacts: Path) -> None:
    """In a child process: fuzz one target with atheris until ``inputs`` have run."""
    import atheris

    with atheris.instrument_imports(include=["storage"]):
        import storage.http_server  # noqa: F401
    from tests.storage.http_fuzz import site_under_test
    from tests.storage.http_fuzz_targets import BYTE_TARGETS

    byte_target = BYTE_TARGETS[target]
    for i, seed in enumerate(byte_target.seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    state = {"count": 0}
    holder = [site_under_test()]
    site = [holder[0].__enter__()]

    def one_input(data: bytes) -> None:
        from tests.storage.http_fuzz import check_input

        state["count"] += 1
        if state["count"] % RESET_EVERY == 0:
            holder[0].__exit__(None, None, None)
            holder[0] = site_under_test()
            site[0] = holder[0].__enter__()
        pieces = 1 + (data[-1] % 3 if data else 0)
        check_input(site[0], byte_target.wrap(data), pieces)

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={inputs}",
            "-max_len=4096",
            "-timeout=10",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{target}-",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


def run_atheris(target: str, inputs: int, artifacts: Path) -> tuple[int, float, list[str]]:
    """Fuzz one target in a child process; answer inputs run, seconds and findings."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-corpus-{target}-") as corpus:
        start = time.monotonic()
        child = subprocess.run(
            [sys.executable, __file__, "--child", target, "--inputs", str(inputs)]
            + ["--corpus", corpus, "--artifacts", str(artifacts)],
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - start
    output = child.stdout + child.stderr
    done = re.search(r"stat::number_of_executed_units: (\d+)", output)
    ran = int(done.group(1)) if done else 0
    findings = []
    if child.returncode != 0:
        lines = [line for line in output.splitlines() if "Error" in line or "Finding" in line]
        saved = re.findall(r"Test unit written to (\S+)", output)
        findings.append("; ".join(lines[-3:] + saved) or f"exit status {child.returncode}")
        (artifacts / f"{target}.log").write_text(output)
    return ran, elapsed, findings


def run_hypothesis(target: str, inputs: int) -> tuple[int, float, list[str]]:
    """Fuzz one target with Hypothesis in this process; answer inputs run, seconds, findings."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.storage.http_fuzz import check_input, site_under_test
    from tests.storage.http_fuzz_targets import TARGETS

    count = [0]
    findings: list[str] = []
    with site_under_test() as site:

        @settings(
            max_examples=inputs,
            deadline=10_000,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=TARGETS[target](), pieces=st.sampled_from([1, 1, 2, 7]))
        def run(data: bytes, pieces: int) -> None:
            count[0] += 1
            check_input(site, data, pieces)

        start = time.monotonic()
        try:
            run()
        except Exception as e:
            findings.append(f"{type(e).__name__}: {e}")
        elapsed = time.monotonic() - start
    return count[0], elapsed, findings


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

    from tests.storage.http_fuzz_targets import TARGETS

    engine = args.engine or ("atheris" if _has_atheris() else "hypothesis")
    targets = args.target or sorted(TARGETS)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    print(f"engine {engine}, {args.inputs} inputs per target, pid {os.getpid()}", flush=True)
    print(f"{'target':10} {'inputs':>10} {'seconds':>9} {'inputs/s':>9}  findings", flush=True)
    found = False
    for target in targets:
        if engine == "atheris":
            ran, elapsed, findings = run_atheris(target, args.inputs, args.artifacts)
        else:
            ran, elapsed, findings = run_hypothesis(target, args.inputs)
        found = found or bool(findings)
        rate = ran / elapsed if elapsed else 0.0
        summary = "; ".join(findings) or "none"
        print(f"{target:10} {ran:>10} {elapsed:>9.0f} {rate:>9.0f}  {summary}", flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
