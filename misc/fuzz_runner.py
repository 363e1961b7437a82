"""The long fuzz runs' engine, shared by ``misc/fuzz_storage.py`` and ``misc/fuzz_sftp.py``.

A :class:`Harness` names what one script fuzzes: the packages atheris
instruments, the module holding ``check_input``, ``Finding`` and the factory of
the system under test, and the module holding the targets (``TARGETS``:
Hypothesis strategies; ``BYTE_TARGETS``: byte-level targets with seeds and a
``wrap`` of the bytes into an input). :func:`main` runs the targets one after
the other and prints, per target, the inputs run, the time, inputs/s, the peak
memory and the findings. With atheris (libFuzzer, coverage-guided; the
``fuzz`` extra) each target runs in a child process re-running the script, its
libFuzzer progress going to ``ARTIFACTS/TARGET.log`` as it comes and a crashing
input kept there (``crash-*``); an input that takes over 10 s is a finding (a
hang). Without atheris (or with ``--engine hypothesis``) the Hypothesis
strategies run in this process, ``max_examples`` set to ``--inputs``, and a
finding is shrunk. The system under test is made afresh every ``reset_every`` inputs,
and memory past ``max_rss_mib`` is a finding (a leak would otherwise take a
million inputs to notice).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Harness:
    """What one fuzz script drives (see the module docstring)."""

    script: str  # the script's own path: atheris children run it again
    instrument: tuple[str, ...]  # packages atheris instruments
    imports: tuple[str, ...]  # modules imported while instrumenting (pulling in the rest)
    fuzz_module: str  # has check_input(under_test, input, pieces) and Finding
    under_test: str  # the name, in fuzz_module, of the context manager making the system
    targets_module: str  # has TARGETS and BYTE_TARGETS
    reset_every: int  # inputs after which the system under test is made afresh
    max_rss_mib: int = 1024

    def fuzz(self) -> ModuleType:
        """The module with check_input, Finding and the system under test."""
        return importlib.import_module(self.fuzz_module)

    def targets(self) -> ModuleType:
        """The module with TARGETS and BYTE_TARGETS."""
        return importlib.import_module(self.targets_module)


def _has_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _System:
    """The system under test, made afresh every ``reset_every`` inputs (memory checked)."""

    def __init__(self, harness: Harness):
        self._harness = harness
        self._fuzz = harness.fuzz()
        self._make: Callable[[], Any] = getattr(self._fuzz, harness.under_test)
        self._holder = self._make()
        self.current = self._holder.__enter__()
        self._count = 0

    def input(self, value: object, pieces: int) -> None:
        """Play one input (``check_input`` raises Finding for a finding)."""
        self._count += 1
        if self._count % self._harness.reset_every == 0:
            self.close()
            if _peak_rss_mib() > self._harness.max_rss_mib:
                raise self._fuzz.Finding(f"memory grew to {_peak_rss_mib():.0f} MiB")
            self._holder = self._make()
            self.current = self._holder.__enter__()
        self._fuzz.check_input(self.current, value, pieces)

    @property
    def count(self) -> int:
        """Inputs played so far."""
        return self._count

    def close(self) -> None:
        """Take the system under test down."""
        self._holder.__exit__(None, None, None)


def run_atheris_child(harness: Harness, target: str, inputs: int, corpus: Path, out: Path) -> None:
    """In a child process: fuzz one target with atheris until ``inputs`` have run."""
    import atheris

    with atheris.instrument_imports(include=list(harness.instrument)):
        for name in harness.imports:
            importlib.import_module(name)
    byte_target = harness.targets().BYTE_TARGETS[target]
    for i, seed in enumerate(byte_target.seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    system = _System(harness)

    def one_input(data: bytes) -> None:
        system.input(byte_target.wrap(data), 1 + (data[-1] % 3 if data else 0))

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={inputs}",
            "-max_len=4096",
            "-timeout=10",
            f"-rss_limit_mb={harness.max_rss_mib}",
            "-print_final_stats=1",
            f"-artifact_prefix={out}/{target}-",
            str(corpus),
        ],
        one_input,
    )
    atheris.Fuzz()


def run_atheris(
    harness: Harness, target: str, inputs: int, artifacts: Path
) -> tuple[int, float, float, list[str]]:
    """Fuzz one target in a child process; answer inputs run, seconds, peak MiB, findings."""
    log = artifacts / f"{target}.log"  # libFuzzer's progress lines, as they come
    with tempfile.TemporaryDirectory(prefix=f"fuzz-corpus-{target}-") as corpus:
        start = time.monotonic()
        with log.open("w") as out:
            child = subprocess.run(
                [sys.executable, harness.script, "--child", target, "--inputs", str(inputs)]
                + ["--corpus", corpus, "--artifacts", str(artifacts)],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        elapsed = time.monotonic() - start
    output = log.read_text(errors="replace")
    done = re.search(r"stat::number_of_executed_units: (\d+)", output)
    peak = re.search(r"stat::peak_rss_mb:\s+(\d+)", output)
    findings = []
    if child.returncode != 0:
        lines = [line for line in output.splitlines() if "Error" in line or "Finding" in line]
        saved = re.findall(r"Test unit written to (\S+)", output)
        findings.append("; ".join(lines[-3:] + saved) or f"exit status {child.returncode}")
    if done is None:  # stopped on a finding: the last progress line has the count
        progress = re.findall(r"^#(\d+)\s", output, re.MULTILINE)
        ran = int(progress[-1]) if progress else 0
    else:
        ran = int(done.group(1))
    return ran, elapsed, float(peak.group(1)) if peak else 0.0, findings


def run_hypothesis(
    harness: Harness, target: str, inputs: int
) -> tuple[int, float, float, list[str]]:
    """Fuzz one target with Hypothesis in this process; answer inputs run, seconds, peak MiB
    and findings."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    system = _System(harness)
    findings: list[str] = []

    @settings(
        max_examples=inputs,
        deadline=10_000,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(value=harness.targets().TARGETS[target](), pieces=st.sampled_from([1, 1, 2, 7]))
    def run(value: object, pieces: int) -> None:
        system.input(value, pieces)

    start = time.monotonic()
    try:
        run()
    except Exception as e:
        findings.append(f"{type(e).__name__}: {e}")
    finally:
        system.close()
    return system.count, time.monotonic() - start, _peak_rss_mib(), findings


def main(harness: Harness, description: str) -> int:
    """Run the chosen targets and print their figures; exit 1 if anything was found."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", action="append", help="a target (default: all)")
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--engine", choices=["atheris", "hypothesis"], default=None)
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_atheris_child(harness, args.child, args.inputs, args.corpus, args.artifacts.resolve())
        return 0
    engine = args.engine or ("atheris" if _has_atheris() else "hypothesis")
    targets = args.target or sorted(harness.targets().TARGETS)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    print(f"engine {engine}, {args.inputs} inputs per target, pid {os.getpid()}", flush=True)
    print(f"{'target':10} {'inputs':>10} {'seconds':>9} {'inputs/s':>9} {'MiB':>6}  findings")
    found = False
    for target in targets:
        if engine == "atheris":
            ran, elapsed, peak, findings = run_atheris(harness, target, args.inputs, args.artifacts)
        else:
            ran, elapsed, peak, findings = run_hypothesis(harness, target, args.inputs)
        found = found or bool(findings)
        rate = ran / elapsed if elapsed else 0.0
        summary = "; ".join(findings) or "none"
        line = f"{target:10} {ran:>10} {elapsed:>9.0f} {rate:>9.0f} {peak:>6.0f}  {summary}"
        print(line, flush=True)
    return 1 if found else 0
