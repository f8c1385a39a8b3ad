"""A stopped process's teardown hands its stop and reload signals from the loop's handlers
to SIG_IGN without ever passing through the default action. A process's other threads (the
executor's, started after the main thread let SIGHUP through) keep the signals unblocked;
one delivered there while the disposition was SIG_DFL ends a drained process with -1 (and
its supervisor with 1). uvloop's remove_signal_handler puts SIG_DFL back, and the next
line put SIG_IGN: a window of microseconds, more when the GIL went to another thread
between the two (tests/test_lifecycle_review.py sends SIGHUPs through a stop; CI saw a
group end with 1 there)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

# The teardown runs on a running uvloop loop that holds handlers for the signals, under a
# profile function that looks at each signal's disposition at every call and return
# (Python's and C's) the teardown makes: what another thread would find at that moment.
_RIG = r"""
import asyncio, signal, sys
import uvloop
from gateway.serving import _ignored_from_now_on
from gateway.stopsignals import STOP_NOW
from gateway.workerlink import STOP_AND_RELOAD

SIGS = (*STOP_AND_RELOAD, STOP_NOW)
seen = []

def look(_frame, event, _arg):
    for sig in SIGS:
        if signal.getsignal(sig) == signal.SIG_DFL:
            seen.append(f"{signal.Signals(sig).name} at {event}")

async def once():
    loop = asyncio.get_running_loop()
    for sig in SIGS:
        loop.add_signal_handler(sig, lambda: None)
    signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGS))  # (as serving.py holds them first)
    sys.setprofile(look)
    try:
        _ignored_from_now_on(loop)
    finally:
        sys.setprofile(None)
    after = {signal.Signals(s).name: signal.getsignal(s) for s in SIGS}
    assert all(h == signal.SIG_IGN for h in after.values()), after

uvloop.run(once())
after = [signal.Signals(s).name for s in SIGS if signal.getsignal(s) != signal.SIG_IGN]
print("default action seen:", sorted(set(seen)), "not ignored after the loop's close:", after)
"""


def test_teardown_never_passes_through_the_default_action() -> None:
    proc = subprocess.run([sys.executable, "-c", _RIG], capture_output=True, text=True,
                          timeout=50)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == \
        "default action seen: [] not ignored after the loop's close: []", proc.stdout
