"""The `state_applied` log lines: when this instance swapped in each document, written late.

A push wakes every instance and Redis at once, more of them than a small machine has
vCPUs: the line is the largest piece of cold CPU an instance spends after its swap (~0.25
ms, RESULTS "Stop 19: the kill path"), and written at once it holds a vCPU that another
instance's swap is waiting for; written before the ack, it delays every receipt. So a line
records the swap's time (`applied_at`) when it happens and is written after the ack that
follows that swap (the sync loop calls `flush` with its generation), or LOG_AFTER seconds
after the swap at the latest. The ack of an earlier swap writes only the lines up to its
own generation: a later swap's line waits for its own ack.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.log import event

__all__ = ["LOG_AFTER", "AppliedLog"]

log = logging.getLogger("killgate.state")

#: seconds from a swap to its log line at the latest: it is written once the ack has
#: left (the same wake-up), past the burst of CPU a push causes on the fleet; this bounds
#: it when no ack follows (a re-seed) or the ack is slow
LOG_AFTER = 0.005
#: how early a loop's timer may fire (uvloop's have millisecond resolution)
_EARLY = 0.001


class AppliedLog:
    def __init__(self) -> None:
        #: lines not written yet: (generation, kills, applied_at, the loop's time then)
        self._unlogged: list[tuple[int, list[str], float, float]] = []
        self._timer: asyncio.TimerHandle | None = None

    def later(self, generation: int, kills: list[str], applied_at: float) -> None:
        """A swap's line, written by the `flush` of its ack (LOG_AFTER seconds at the latest)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop running (never while serving): write it now
            self._write([(generation, kills, applied_at, 0.0)])
            return
        self._unlogged.append((generation, kills, applied_at, loop.time()))
        if self._timer is None:
            self._timer = loop.call_at(loop.time() + LOG_AFTER, self._due)

    def flush(self, upto: int | None = None) -> None:
        """Write the lines of swaps up to generation `upto` (None: every line)."""
        if upto is None:
            lines, self._unlogged = self._unlogged, []
        else:
            lines = [x for x in self._unlogged if x[0] <= upto]
            self._unlogged = [x for x in self._unlogged if x[0] > upto]
        if not self._unlogged and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._write(lines)

    def _due(self) -> None:
        """LOG_AFTER has passed for the oldest line: write every line that old, and wait
        for the next one's turn."""
        self._timer = None
        if not self._unlogged:
            return
        loop = asyncio.get_running_loop()
        now, oldest = loop.time(), self._unlogged[0][3] + LOG_AFTER
        if oldest > now + _EARLY:  # the line this timer was for was flushed by its ack
            self._timer = loop.call_at(oldest, self._due)
            return
        due = max(now, oldest)  # (a timer may fire a little early: its line goes now)
        lines = [x for x in self._unlogged if x[3] + LOG_AFTER <= due]
        self._unlogged = [x for x in self._unlogged if x[3] + LOG_AFTER > due]
        if self._unlogged:
            self._timer = loop.call_at(self._unlogged[0][3] + LOG_AFTER, self._due)
        self._write(lines)

    @staticmethod
    def _write(lines: list[tuple[int, list[str], float, float]]) -> None:
        for generation, kills, applied_at, _ in lines:
            event(log, "state_applied", generation=generation, kills=kills,
                  applied_at=applied_at)
