"""A backstop under pytest-timeout (pyproject): a test still running GRACE seconds past its
timeout, teardown included, has its threads' stacks written to stderr and its process ended
(faulthandler's watchdog thread, in C). pytest-timeout's signal method raises in the main
thread only, and that can be lost: a test awaiting `asyncio.to_thread` of a call that never
returns fails, then the event loop's close waits for that thread for ever; uvloop swallows
it. And a test's first failure cancels its timeout (pytest_exception_interact, there for
pdb), so a teardown that hangs after a failed check had none. Each hung the whole run. So did
a test whose failure pytest was still writing up when its timeout struck (an INTERNALERROR,
its fixtures then torn down at the session's end) on a loaded machine.
Ended, the test process is a crashed xdist worker, and --max-worker-restart=0 ends the run
with that test named. (conftest.py imports these hooks; `-p tests.hangguard` loads them.)"""

from __future__ import annotations

import faulthandler
import os
import sys
import time
from collections.abc import Generator
from typing import Any

import pytest

#: seconds past a test's timeout (a failed test's fixtures still stop their processes)
GRACE = float(os.environ.get("KILLGATE_TEST_HANG_GRACE", "30"))
_DEADLINE = pytest.StashKey[float]()
_stderr: list[int] = []  # the real stderr (a test's is captured: a dump there is lost)


@pytest.hookimpl
def pytest_configure(config: pytest.Config) -> None:
    if not _stderr:
        _stderr.append(os.dup(sys.stderr.fileno()))


@pytest.hookimpl(optionalhook=True)  # (pytest-timeout's hook: `-p no:timeout` runs)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> None:
    item.stash[_DEADLINE] = time.monotonic() + float(settings.timeout) + GRACE
    _arm(item)


@pytest.hookimpl(trylast=True)
def pytest_exception_interact(node: pytest.Item | pytest.Collector) -> None:
    # (pytest's faulthandler plugin and pytest-timeout cancel their timers here, ours too)
    if _DEADLINE in node.stash and not node.config.getoption("usepdb", False):
        _arm(node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    try:
        done = yield
    except BaseException:
        # the session ends (an INTERNALERROR: pytest-timeout's alarm landed while pytest
        # wrote the failure up, before pytest_exception_interact cancels it, as a loaded
        # machine did): what is left, this item's fixtures torn down at the session's end,
        # gets GRACE; it was cancelled here, and a teardown that hung ran for ever
        if item.stash.get(_DEADLINE, None) is not None:
            item.stash[_DEADLINE] = time.monotonic() + GRACE
            _arm(item)
        raise
    if item.stash.get(_DEADLINE, None) is not None:
        faulthandler.cancel_dump_traceback_later()
    return done


def _arm(node: pytest.Item | pytest.Collector) -> None:
    left = max(0.1, node.stash[_DEADLINE] - time.monotonic())
    faulthandler.dump_traceback_later(left, exit=True, file=_stderr[0] if _stderr else sys.stderr)
