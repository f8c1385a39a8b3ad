"""A worker's exit held by a test (tests/sharedgroup.py, `Shared(hold_exit=True)`).

A group started with this directory on PYTHONPATH and KILLGATE_TEST_EXIT_HOLD naming a
file: a worker (`serve --worker-index`) whose interpreter exits while that file exists
waits in atexit until it is removed (60 s at most). It has drained, logged `stopped` and
told its supervisor its loop is done: a drained worker whose exit hangs (a call in a
thread that never returns), for as long as the test says. The tests SIGSTOPped a worker
once its `stopped` line was read, and lost the race to its exit (a few ms) on a loaded
machine: the group had exited 0 before the second Ctrl-C they then sent.
The supervisor, the same interpreter with the same environment, is never held.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

_HOLD = os.environ.get("KILLGATE_TEST_EXIT_HOLD", "")


def _held() -> None:
    if "--worker-index" not in sys.argv:
        return
    give_up = time.monotonic() + 60
    while os.path.exists(_HOLD) and time.monotonic() < give_up:
        time.sleep(0.01)


if _HOLD:
    atexit.register(_held)
