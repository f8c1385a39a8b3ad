"""One question to an instance's admin address after a drill's restore (`/readyz`, no
token), and what all of a drill's questions may cost together.

The addresses come from the store (the heartbeats the drill started with). Each address was
bounded (`asks_for`: ≤ 1024 asks, 8 at once, for ASK_FOR seconds) but nothing bounded the
drill: whoever writes the store (without a state signing key, any number of made-up
instances; with one, replayed heartbeats) could list many addresses, every one asked at
once, 8 connections each. `Budget` holds the drill's total: MAX_TOTAL asks, ALL_AT_ONCE in
flight, for ALL_FOR seconds; what is left unasked when it is spent is named by the caller
(control/drillbehind.py), and the drill does not pass. HTTP through aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from typing import Any

import aiohttp

__all__ = ["ALL_AT_ONCE", "ALL_FOR", "ASK_TIMEOUT", "MAX_TOTAL", "Budget", "asks_for", "ready"]

#: seconds an instance is given to answer for itself (one that does not has left)
ASK_TIMEOUT = 3.0
#: the most of an instance's /readyz answer read (a real one is a few KiB)
MAX_READY = 256 * 1024
#: the chance, at most, that a live worker of a group never answers `asks_for` asks
MISS = 1e-6
#: the most asks of one address (per round), how many at once
MAX_ASKS = 1024
AT_ONCE = 8
#: the most asks a drill makes in all, in flight at once, and for how long (seconds)
MAX_TOTAL = 1024
ALL_AT_ONCE = 32
ALL_FOR = 30.0


def asks_for(workers: int) -> int:
    """How often an address `workers` instances share is asked, at most: each new
    connection reaches one of them (the kernel's hash of it), so one is missed `k` times
    with chance (1 - 1/workers)^k."""
    if workers <= 1:
        return 1
    return min(MAX_ASKS, math.ceil(math.log(MISS) / math.log1p(-1 / workers)))


class Budget:
    """A drill's asks after its restore: `take` what a batch may spend (0: spent)."""

    def __init__(self, total: int = MAX_TOTAL, at_once: int = ALL_AT_ONCE,
                 seconds: float = ALL_FOR) -> None:
        self.total = total
        self.left = total
        self.gate = asyncio.Semaphore(at_once)
        self.seconds = seconds
        self.until = asyncio.get_running_loop().time() + seconds

    def take(self, n: int) -> int:
        k = max(0, min(n, self.left))
        self.left -= k
        return k

    @property
    def spent(self) -> int:
        return self.total - self.left

    def over(self) -> bool:
        return asyncio.get_running_loop().time() >= self.until

    def why(self, spent: bool) -> str:
        """Why an address was left (partly) unasked."""
        if spent:
            return (f"the drill's {self.total} asks in all were spent (the store listed more "
                    "instances and addresses than a fleet of this size asks: written there by "
                    "whoever can write to it?)")
        return f"the drill's {self.seconds:g}s for asking were spent"


async def ready(session: aiohttp.ClientSession, admin: str, params: Mapping[str, str],
                budget: Budget) -> Any:
    """The /readyz answer at `admin` (no token sent, no redirect followed, a connection
    of its own), None when there is none to read (gone, refused, too big, not JSON)."""
    async with budget.gate:
        try:
            async with session.get(admin.rstrip("/") + "/readyz", allow_redirects=False,
                                   params=params,
                                   headers={"accept": "application/json",
                                            "user-agent": "killgate-drill",
                                            # (the next ask: a new connection, maybe to
                                            # another worker sharing the port)
                                            "connection": "close"},
                                   timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT)) as r:
                if r.status not in (200, 503):
                    return None
                raw = bytearray()
                async for chunk in r.content.iter_chunked(65536):  # (read(n) may stop short)
                    raw += chunk
                    if len(raw) > MAX_READY:
                        return None
                return json.loads(raw)
        except (aiohttp.ClientError, TimeoutError, ValueError, RecursionError):
            return None
