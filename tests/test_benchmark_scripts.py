"""Every benchmark script README.md names starts and prints its usage: a script broken by a
change elsewhere (an import, a helper's signature, a help text argparse cannot format) fails
here, not in the middle of a measurement."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import cli_fork

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
NAMED = sorted(set(re.findall(r"benchmarks/(\w+\.py)", (ROOT / "README.md").read_text())))


def test_the_readme_names_benchmarks() -> None:
    assert len(NAMED) >= 10, NAMED
    missing = [n for n in NAMED if not (BENCH / n).is_file()]
    assert not missing, f"README.md names benchmark scripts that do not exist: {missing}"


@pytest.mark.parametrize("name", NAMED)
def test_a_benchmark_prints_its_usage(name: str) -> None:
    # (`python NAME --help` forked from a process that imported gateway already,
    # tests/cli_fork.py: the script's argument parser, not an interpreter's start, ~0.9 s
    # each loaded, 26 scripts)
    done = cli_fork.run(["--help"], dict(os.environ), str(BENCH), 60, script=str(BENCH / name))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout, done.stdout


@pytest.mark.parametrize("lengths", [["200", "100"], ["0"], ["100", "100"]])
def test_trim_scan_refuses_lengths_it_would_time_on_another_trail(lengths: list[str]) -> None:
    """trim_scan.py fills the trail up to each length in turn and never cuts it: 200 then
    100 timed the 200-event trail and printed it as 100 events. Refused before any
    redis-server starts (exit 2)."""
    # (forked as the usage checks are: the refusal, not the interpreter's start)
    done = cli_fork.run(lengths, dict(os.environ), str(BENCH), 60,
                        script=str(BENCH / "trim_scan.py"))
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "increasing order" in done.stderr, done.stderr


@pytest.mark.parametrize("flags", [[], ["--telemetry"]])
def test_fastpath_runs_requests_and_prints_its_figure(flags: list[str]) -> None:
    """fastpath.py drives the data plane in process with fake transports, so a change to
    the pool, the exchange or the proxy's signatures breaks it without breaking `--help`
    (its pooled backend connection past the idle timeout made it run no request for weeks,
    unnoticed). A smoke run of a few requests: every one answered 200 (the script checks)
    and the figure printed."""
    done = subprocess.run([sys.executable, "fastpath.py", "--requests", "200", "--rounds", "1",
                           *flags], cwd=BENCH, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"fast path, Python CPU per request \(median of 1 x 200\): [\d.]+ µs",
                     done.stdout), done.stdout
