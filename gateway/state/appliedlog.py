"""The `state_applied` log lines: when this instance swapped in each document, written late.

A push wakes every instance and Redis at once, more of them than a small machine has
vCPUs: the line is the largest piece of cold CPU an instance spends after its swap (~0.25
ms, RESULTS "Stop 19: the kill path"), and written at once it holds a vCPU that another
instance's swap is waiting for; written before the ack, it delays every receipt. So a line
records the swap's time (`applied_at`) when it happens and is written after the ack that
follows (the sync loop calls `flush`), or LOG_AFTER seconds after the swap at the latest.
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


class AppliedLog:
    def __init__(self) -> None:
        #: lines not written yet (generation, kills, applied_at)
        self._unlogged: list[tuple[int, list[str], float]] = []

    def later(self, generation: int, kills: list[str], applied_at: float) -> None:
        """A swap's line, written by the next `flush` (LOG_AFTER seconds at the latest)."""
        self._unlogged.append((generation, kills, applied_at))
        if len(self._unlogged) == 1:
            try:
                asyncio.get_running_loop().call_later(LOG_AFTER, self.flush)
            except RuntimeError:  # no loop running (never while serving): write it now
                self.flush()

    def flush(self) -> None:
        lines, self._unlogged = self._unlogged, []
        for generation, kills, applied_at in lines:
            event(log, "state_applied", generation=generation, kills=kills,
                  applied_at=applied_at)
