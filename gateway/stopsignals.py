"""SIGTERM / SIGINT / SIGQUIT in a serving process (`serve`, a group's worker, `demo`).

The first SIGTERM or SIGINT drains (up to `server.drain_timeout`) and the process exits 0; a
second SIGINT (Ctrl-C) stops at once, as uvicorn and gunicorn do: the drain stops waiting,
open answers are cut, everything closes as at any stop, and the process exits HURRIED_EXIT.
SIGQUIT (STOP_NOW) stops at once from the start. A worker of a `--workers` group gets each
Ctrl-C twice (the terminal signals the whole process group, and its supervisor passes the
signal on), so there SIGINT is counted by the supervisor alone, which sends STOP_NOW at its
second (workergroup.py). Handlers run on the event loop (never inside a bytecode).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from gateway.log import event

__all__ = ["HURRIED_EXIT", "STOP_NOW", "StopSignals"]

log = logging.getLogger("killgate")

HURRIED_EXIT = 128 + signal.SIGINT  # (130: how a shell reports a process Ctrl-C ended)
STOP_NOW = signal.SIGQUIT  # stop at once (gunicorn's quick shutdown)
HINT = "a second Ctrl-C (SIGINT) stops at once, cutting the answers still open"


class StopSignals:
    """Sets `stop` at the first stop signal; calls `hurry` at a second SIGINT (not in a
    group's worker) or at STOP_NOW; `hurried` says whether it did."""

    def __init__(self, stop: asyncio.Event, hurry: Callable[[], None], *,
                 group_worker: bool = False) -> None:
        self.stop = stop
        self.hurry = hurry
        self.group_worker = group_worker
        self.hurried = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, STOP_NOW):
            loop.add_signal_handler(sig, self._got, sig)

    def _got(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self.stop.is_set():
            self.stop.set()
            if sig != STOP_NOW:
                if self.group_worker:
                    event(log, "phase", phase="stopping", signal=name)
                else:
                    event(log, "phase", phase="stopping", signal=name,
                          then="drain (up to server.drain_timeout); " + HINT)
                return
        if sig == STOP_NOW or (sig == signal.SIGINT and not self.group_worker):
            if not self.hurried:
                event(log, "phase", logging.WARNING, phase="stopping_now", signal=name,
                      consequence=f"answers still open are cut; exit {HURRIED_EXIT}")
            self.hurried = True
            self.hurry()
