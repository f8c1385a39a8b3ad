"""How much token-checking work one client address may cause: a token bucket per address.

Owns `TokenBucket`: `rate` checks a second with bursts of up to `burst`, per key, in
bounded memory. The admin API consults it only for a token it has not verified before
(admin/auth.py's cache comes first), so a flood of bad tokens from one address costs at
most `rate` signature checks a second and never stops a token that was verified already;
a new valid token from that address is checked as soon as the bucket holds one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from gateway.errors import ApiError

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
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # re-inserted: the dict is oldest-used first
        if len(self._buckets) > self.max_keys:
            # forget the longest-unused address: it had the most time to refill anyway
            self._buckets.pop(next(iter(self._buckets)))
        return wait

    def refusal(self, wait: float) -> ApiError:
        retry = max(1, math.ceil(wait))
        return ApiError(429, "too_many_attempts",
                        "too many token checks from this address; a token used before is "
                        f"still accepted, a new one after {retry}s",
                        headers={"Retry-After": str(retry)})
