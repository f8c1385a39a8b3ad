"""Token buckets: `rate` a second with bursts of up to `burst`, per key, in bounded memory.

Owns the one refill rule every budget in killgate uses (the admin API's token checks per
address, the alert receiver's new episodes per instance): tokens grow with the time since
the key was last used, up to `burst`; a take spends one or says how long until one is
there. The clock is handed in; no I/O. The least recently used key is forgotten first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 when taken, else seconds until one is there."""
        now = self.clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")
        self._buckets[key] = (tokens, now)  # re-inserted: the dict is oldest-used first
        if len(self._buckets) > self.max_keys:
            # forget the longest-unused key: it had the most time to refill anyway
            self._buckets.pop(next(iter(self._buckets)))
        return wait
