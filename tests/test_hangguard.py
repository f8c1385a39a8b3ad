"""tests/hangguard.py: a test that hangs past its timeout ends its test process (a crashed
worker, which ends the run) rather than hang the run: the hangs pytest-timeout's signal
method left running for ever (pyproject: timeout_method = "signal"), and one its alarm made
(struck while pytest wrote a failure up: an INTERNALERROR, the hung teardown left to the
session's end, where the guard had been cancelled)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(150)

#: each hung test writes when it began (CLOCK_MONOTONIC: one clock for every process) to
#: the file STARTED names, in its test body or its fixture's setup, after its timeout is armed
STARTED = "open({started!r}, 'w').write(repr(time.monotonic()))"

HANGS = {
    # the loop's close waits for the executor's thread, which never returns
    "to_thread": """
import asyncio, threading, time, pytest

@pytest.mark.timeout(0.5)
async def test_hangs():
    STARTED
    await asyncio.to_thread(threading.Event().wait)
""",
    # a failed check cancels the test's timeout (pytest_exception_interact): its
    # teardown then hung with none
    "teardown_after_a_failure": """
import threading, time, pytest

@pytest.fixture
def stuck():
    STARTED
    yield
    threading.Event().wait()

@pytest.mark.timeout(0.5)
def test_fails(stuck):
    assert False, "a failed check"
""",
    # the same, its failure still being written up when the timeout strikes (as on a
    # loaded machine: an INTERNALERROR, the teardown left to the session's end)
    "timeout_while_reported": """
import threading, time, pytest

class SlowToTell(Exception):
    def __str__(self):
        time.sleep(5)
        return "a failed check"

@pytest.fixture
def stuck():
    STARTED
    yield
    threading.Event().wait()

@pytest.mark.timeout(0.5)
def test_fails(stuck):
    raise SlowToTell()
""",
}


# a test that passes at once, in the same run: the guard ends no test that ends in time
# (its timeout generous: a loaded machine may pause a process for a while)
PASSES = """
import pytest

@pytest.mark.timeout(5)
def test_passes():
    pass
"""


def test_a_hung_test_ends_its_process_within_its_timeout_and_the_grace(tmp_path: Path) -> None:
    """Each hung test's process ends within its timeout (0.5 s) and the grace (0.3 s, not the
    default 30 s) of the moment the test began, as the test itself wrote it: how long a
    loaded machine takes to start pytest (13-25 s at load 10, and as different between
    processes started together) is no part of what the guard adds. (The bound was taken
    from a baseline process's end, started beside them: at load 13+ two starts differed by
    more than the 10 s of slack.)"""
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\ntimeout_method = signal\nasyncio_mode = auto\n"
                   "asyncio_default_fixture_loop_scope = function\n")
    env = {**os.environ, "KILLGATE_TEST_HANG_GRACE": "0.3"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ended: dict[str, float] = {}
    t0 = time.monotonic()
    for name, code in {**HANGS, "passes": PASSES}.items():
        started = STARTED.format(started=str(tmp_path / f"{name}.started"))
        (tmp_path / f"test_{name}.py").write_text(code.replace("STARTED", started))
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
                    ended[name] = time.monotonic()
            time.sleep(0.02)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    outs = {name: (tmp_path / f"{name}.out").read_text(errors="replace") for name in procs}
    assert procs["passes"].returncode == 0, outs["passes"][-3000:]
    for name in HANGS:
        assert name in ended, (f"{name} still running after 120 s", outs[name][-3000:])
        assert procs[name].returncode == 1 and "Timeout (0:00:0" in outs[name], (
            name, outs[name][-3000:])
        began = float((tmp_path / f"{name}.started").read_text())
        # (0.8 s expected from the test's start; 10 s of slack for a loaded machine's
        # wake-ups, well short of the default grace's 30 s)
        assert ended[name] - began < 10, (name, ended[name] - began)
