"""The retry rules of the state layer, one each: a compare-and-set race lost to another
writer (`Contention`, used by `write` and `append_audit` alike), and a store lost or not
yet reached (`Backoff`, used by the sync loop's reconnect and the first sync at start).

Lost races: at least MIN_ATTEMPTS tries, then more until PATIENCE seconds have passed,
each after `lost_race_pause(attempt)`; but not past MIN_ATTEMPTS once values from the store
were refused meanwhile (a forger rewriting a key in a loop, whom patience won't outlast:
the 409 names it at once rather than after 2 s). Decisions are pure; the waits are here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "MAX_ATTEMPTS",
    "MIN_ATTEMPTS",
    "PATIENCE",
    "Backoff",
    "Contention",
    "lost_race_pause",
]

#: tries at a store other writes keep changing: at least MIN_ATTEMPTS, then more until
#: PATIENCE seconds have passed (ten tries alone ended ~1 % of the writes of a burst through
#: 3 instances in 409 "the state kept changing": tests/test_burst_no_reseed; five, with no
#: pause, left config reloads and late automatic events unrecorded: test_audit_contention)
MIN_ATTEMPTS, MAX_ATTEMPTS, PATIENCE = 10, 200, 2.0

#: seconds between attempts to reach a lost store: the first, and at most (x 0.5-1.5, jitter)
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 1.0


def lost_race_pause(attempt: int) -> float:
    """Seconds to wait before try `attempt` (0-based) after losing the ones before it: none
    before the first two (a lost race is most often one other write, over already), then a
    few ms at random, doubling up to 50 ms, so that a burst from several instances lets the
    others' writes go first and does not starve any one of them."""
    if attempt < 2:
        return 0.0
    return random.uniform(0, min(0.05, 0.001 * 2 ** attempt))


class Contention:
    """One operation's tries against lost races: `async for attempt in Contention(...)`
    pauses before each try by `lost_race_pause` and stops when the rule says so; `forged`
    afterwards tells whether it stopped for values refused meanwhile (a forger)."""

    def __init__(self, refused: Callable[[], int], patience: float = PATIENCE) -> None:
        self._refused = refused
        self._before = refused()
        self._patience = patience

    def __aiter__(self) -> Contention:
        self._attempt = -1
        self._until = asyncio.get_running_loop().time() + self._patience
        return self

    @property
    def forged(self) -> bool:
        """Whether values from the store were refused since the first try."""
        return self._refused() > self._before

    async def __anext__(self) -> int:
        attempt = self._attempt = self._attempt + 1
        if attempt >= MAX_ATTEMPTS:
            raise StopAsyncIteration
        if attempt >= MIN_ATTEMPTS and (self.forged
                                        or asyncio.get_running_loop().time() >= self._until):
            raise StopAsyncIteration
        if pause := lost_race_pause(attempt):
            await asyncio.sleep(pause)
        return attempt


class Backoff:
    """Waits between attempts to reach a store: from `first`, doubling up to `most`, each
    x 0.5-1.5 at random (a fleet that lost its store together does not come back in step)."""

    def __init__(self, most: float = BACKOFF_MAX, first: float = BACKOFF_FIRST) -> None:
        self.first, self.most, self.current = first, most, first

    def reset(self) -> None:
        self.current = self.first

    def at_least(self, seconds: float) -> None:
        self.current = max(self.current, seconds)

    def at_most(self, seconds: float) -> None:
        self.current = min(self.current, seconds)

    async def wait(self) -> None:
        await asyncio.sleep(self.current * (0.5 + random.random()))
        self.current = min(self.current * 2, self.most)
