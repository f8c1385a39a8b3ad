"""The data plane's reading of the event loop's clock, shared by its protocols.

Reading the clock costs a few hundred nanoseconds on the machines this runs on (a VM's
clock source), and one request used to read it ten times. Each socket event (client or
backend bytes arriving) reads it once into `Clock.now`; the deadlines, latencies and
timestamps of whatever that event does use that reading. Stale by at most one event's own
run time: far below the millisecond precision of any deadline or histogram bucket here.
A coroutine resumed by a timer, not by bytes, reads the loop's clock itself.
"""

from __future__ import annotations

__all__ = ["Clock"]


class Clock:
    __slots__ = ("now",)

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
