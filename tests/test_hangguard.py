"""tests/hangguard.py: a test that hangs past its timeout ends its test process (a crashed
worker, which ends the run) rather than hang the run: the two hangs pytest-timeout's signal
method left running for ever (pyproject: timeout_method = "signal")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(150)

HANGS = {
    # the loop's close waits for the executor's thread, which never returns
    "to_thread": """
import asyncio, threading, pytest

@pytest.mark.timeout(0.5)
async def test_hangs():
    await asyncio.to_thread(threading.Event().wait)
""",
    # a failed check cancels the test's timeout (pytest_exception_interact): its
    # teardown then hung with none
    "teardown_after_a_failure": """
import threading, pytest

@pytest.fixture
def stuck():
    yield
    threading.Event().wait()

@pytest.mark.timeout(0.5)
def test_fails(stuck):
    assert False, "a failed check"
""",
}


# the same run with a test that passes at once: what starting pytest costs on this machine now
BASELINE = """
import pytest

@pytest.mark.timeout(0.5)
def test_passes():
    pass
"""


def test_a_hung_test_ends_its_process_within_its_timeout_and_the_grace(tmp_path: Path) -> None:
    """Each hung test's process ends within its timeout (0.5 s) and the grace (0.3 s, not the
    default 30 s) of what the baseline's process takes to start and end, measured beside
    them: a loaded CI machine takes seconds to start pytest (15 s all told was once not
    enough), which is no part of what the guard adds."""
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\ntimeout_method = signal\nasyncio_mode = auto\n"
                   "asyncio_default_fixture_loop_scope = function\n")
    env = {**os.environ, "KILLGATE_TEST_HANG_GRACE": "0.3"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ended: dict[str, float] = {}
    t0 = time.monotonic()
    for name, code in {**HANGS, "baseline": BASELINE}.items():
        (tmp_path / f"test_{name}.py").write_text(code)
        with open(tmp_path / f"{name}.out", "wb") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-p", "tests.hangguard", "-p",
                 "no:cacheprovider", "-c", str(ini), "--rootdir", str(tmp_path),
                 str(tmp_path / f"test_{name}.py")],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while len(ended) < len(procs) and time.monotonic() - t0 < 120:
            for name, p in procs.items():
                if name not in ended and p.poll() is not None:
                    ended[name] = time.monotonic() - t0
            time.sleep(0.02)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = {name: (tmp_path / f"{name}.out").read_text(errors="replace") for name in procs}
    assert procs["baseline"].returncode == 0, outs["baseline"][-3000:]
    for name in HANGS:
        assert name in ended, (f"{name} still running after 120 s", outs[name][-3000:])
        assert procs[name].returncode == 1 and "Timeout (0:00:0" in outs[name], (
            name, outs[name][-3000:])
        # (0.8 s expected past the baseline; 10 s of slack, well short of the default
        # grace's 30 s)
        assert ended[name] - ended["baseline"] < 10, (name, ended)
