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

pytestmark = pytest.mark.timeout(30)

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


def test_a_hung_test_ends_its_process_within_its_timeout_and_the_grace(tmp_path: Path) -> None:
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\ntimeout_method = signal\nasyncio_mode = auto\n"
                   "asyncio_default_fixture_loop_scope = function\n")
    env = {**os.environ, "KILLGATE_TEST_HANG_GRACE": "0.3"}
    procs = {}
    t0 = time.monotonic()
    for name, code in HANGS.items():
        (tmp_path / f"test_{name}.py").write_text(code)
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "tests.hangguard", "-p", "no:cacheprovider",
             "-c", str(ini), "--rootdir", str(tmp_path), str(tmp_path / f"test_{name}.py")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for name, p in procs.items():
            out, _ = p.communicate(timeout=max(1.0, 15 - (time.monotonic() - t0)))
            assert p.returncode == 1 and "Timeout (0:00:0" in out, (name, out[-3000:])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
