"""Which instances' published analysis counts are recent, for canary analysis (rollout.py).

A blob says when it was written by its instance's clock (`t`). Judged by that alone
(`|now - t|` within a bound of two analysis intervals), a live instance whose clock is a
little off (30 s with a 10 s interval) had its counts left out of every verdict: a
canary failing only there was promoted on the others'. A blob is also recent when it
changed since our previous read to a later `t` (its instance is publishing: alive) and
its `t` is within CLOCK_SKEW of ours (the skew the heartbeats tolerate); a dead
instance's blob, whatever its clock, changes no more. (A replay of older blobs must
present ever later ones within CLOCK_SKEW: at most the last few minutes of genuine
counts.)
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["CLOCK_SKEW", "Heard", "recent"]

#: the clock skew tolerated (as gateway.state.redisidem.CLOCK_SKEW, for heartbeats)
CLOCK_SKEW = 300.0

#: instance -> (the `t` its blob said at our last read, when (our clock) we saw it change)
Heard = dict[str, tuple[float, float]]


def recent(blobs: list[dict[str, Any]], before: Heard, now: float,
           bound: float) -> tuple[list[dict[str, Any]], Heard]:
    """The blobs to take at `now`, and what to remember for the next read."""
    fresh: list[dict[str, Any]] = []
    heard: Heard = {}
    for b in blobs:
        try:
            t = float(b.get("t", 0))
        except (TypeError, ValueError):
            continue
        if not math.isfinite(t):
            continue
        name = str(b.get("instance"))
        last = before.get(name)
        changed = (now if last is not None and t > last[0]
                   else last[1] if last is not None and t == last[0] else -math.inf)
        heard[name] = (t, changed)
        if abs(now - t) <= bound or (now - changed <= bound and abs(now - t) <= CLOCK_SKEW):
            fresh.append(b)
    return fresh, heard
