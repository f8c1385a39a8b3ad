"""Which client addresses must spend the all-addresses token-check budget (admin/callers.py).

Owns `Standing`: per budget key (an address, an IPv6 /64), whether its last signature check
failed. Only such an address, or one not yet known while the table of failures is full,
spends the shared budget: a spread-out flood of junk tokens spends it, and an operator's
new valid token from another address is still checked (at most one check in flight per
address skips it: marked failed until it passes). Pure: no I/O, the clock handed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Standing"]

#: how long a failure (or a pass) is remembered
TTL = 600.0
#: failures remembered at most: each is one check a flood got past the shared budget, so
#: a flood from more addresses than this gains nothing more (new ones then spend it too)
MAX_FAILED = 1024
MAX_PASSED = 1024


class Standing:
    def __init__(self, ttl: float = TTL, max_failed: int = MAX_FAILED,
                 max_passed: int = MAX_PASSED,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_failed = max_failed
        self.max_passed = max_passed
        self.clock = clock
        # key -> when; insertion order is time order (re-inserted on each update)
        self._failed: dict[str, float] = {}
        self._passed: dict[str, float] = {}

    def _expire(self, now: float) -> None:
        for table in (self._failed, self._passed):
            while table:
                key = next(iter(table))
                if now - table[key] < self.ttl:
                    break
                del table[key]

    def free(self, key: str) -> bool:
        """Whether a check for `key` may skip the shared budget: its last check did not
        fail, none is in flight, and (for a key not known to have passed) the table of
        failures has room. A True is noted as a failure until `passed(key)`."""
        now = self.clock()
        self._expire(now)
        if key in self._failed:
            return False
        if key not in self._passed and len(self._failed) >= self.max_failed:
            return False
        self._failed[key] = now
        return True

    def passed(self, key: str) -> None:
        """A token from `key` verified (its signature was good)."""
        self._failed.pop(key, None)
        self._passed.pop(key, None)
        self._passed[key] = self.clock()
        if len(self._passed) > self.max_passed:
            self._passed.pop(next(iter(self._passed)))

    def unmark(self, key: str) -> None:
        """The check `free(key)` let through ended with no verdict on its token (the
        gateway's own refusal before any signature work, or a bug): its mark as a failure
        goes. (Only after a True `free`: a failure from before that check stays.)"""
        self._failed.pop(key, None)

    def failed(self, key: str) -> None:
        """A token from `key` did not verify: from now on its checks spend the shared
        budget (a key not in the table is added only while there is room; when it is full,
        unknown keys spend the shared budget anyway)."""
        if key in self._failed or len(self._failed) < self.max_failed:
            self._failed.pop(key, None)
            self._failed[key] = self.clock()
