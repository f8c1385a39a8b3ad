"""Which budget a client address's token check spends, beyond its own (admin/callers.py).

Owns `Standing`: per budget key (an address, an IPv6 /64) whether its last signature check
failed, and which budget its next check spends (`how`):

* `FREE`: none more. A key that passed, or is new while the table of failures has room (at
  most one check in flight per key skips it: marked failed until it passes);
* `SHARED`: the all-addresses budget a flood of junk tokens spends. A key whose last check
  failed; one that failed when the table was full (a suspect, remembered apart); and a new
  key of a network (`group`: an IPv6 /48) that already holds MAX_PER_GROUP failing keys,
  so that one site's /48 (65,536 /64s) cannot fill the table alone;
* `RESERVE`: a budget of its own, which a flood of known failures cannot spend. A key never
  seen failing while the table is full (a flood from more networks than it holds, a
  botnet), so an operator who never failed still gets a new token checked; and a key that
  passed before and failed at most GRACE times since (a mistyped token), so one typo no
  longer puts an operator's address on the flood's budget for the whole TTL.

Pure: no I/O, the clock handed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["FREE", "RESERVE", "SHARED", "Standing"]

FREE, SHARED, RESERVE = "free", "shared", "reserve"

#: how long a failure (or a pass) is remembered
TTL = 600.0
#: failures remembered at most: each is one check a flood got past the shared budget, so
#: a flood from more addresses than this gains nothing more (new ones then spend the reserve)
MAX_FAILED = 1024
MAX_PASSED = 1024
#: failing keys of one group (an IPv6 /48) in the table; its other keys are suspects
MAX_PER_GROUP = 16
#: keys that failed without room in the table, remembered (keys only) so that they spend the
#: shared budget, not the reserve, from then on
MAX_SUSPECTS = 16384
#: failures in a row of a key that passed before still checked on the reserve
GRACE = 3


class Standing:
    def __init__(self, ttl: float = TTL, max_failed: int = MAX_FAILED,
                 max_passed: int = MAX_PASSED, max_per_group: int = MAX_PER_GROUP,
                 max_suspects: int = MAX_SUSPECTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_failed = max_failed
        self.max_passed = max_passed
        self.max_per_group = max_per_group
        self.max_suspects = max_suspects
        self.clock = clock
        # key -> (when, group); insertion order is time order (re-inserted on each update)
        self._failed: dict[str, tuple[float, str]] = {}
        self._groups: dict[str, int] = {}  # group -> its keys in _failed
        self._suspects: dict[str, float] = {}
        # key -> (when, failures since); insertion order is time order
        self._passed: dict[str, tuple[float, int]] = {}

    def _drop(self, key: str) -> None:
        entry = self._failed.pop(key, None)
        if entry is not None:
            group = entry[1]
            left = self._groups[group] - 1
            if left:
                self._groups[group] = left
            else:
                del self._groups[group]

    def _mark(self, key: str, group: str, now: float) -> None:
        self._drop(key)
        self._failed[key] = (now, group)
        self._groups[group] = self._groups.get(group, 0) + 1

    def _expire(self, now: float) -> None:
        failed = self._failed
        while failed:
            key = next(iter(failed))
            if now - failed[key][0] < self.ttl:
                break
            self._drop(key)
        passed = self._passed
        while passed and now - passed[next(iter(passed))][0] >= self.ttl:
            del passed[next(iter(passed))]
        suspects = self._suspects
        while suspects and now - suspects[next(iter(suspects))] >= self.ttl:
            del suspects[next(iter(suspects))]

    def how(self, key: str, group: str) -> str:
        """Which budget a check for `key` (of network `group`) spends (see above). A FREE
        is noted as a failure until `passed(key)`."""
        now = self.clock()
        self._expire(now)
        passed = self._passed.get(key)
        if key in self._failed:
            return RESERVE if passed is not None and passed[1] <= GRACE else SHARED
        if key in self._suspects:
            return SHARED
        if passed is None:
            if self._groups.get(group, 0) >= self.max_per_group:
                return SHARED
            if len(self._failed) >= self.max_failed:
                return RESERVE
        self._mark(key, group, now)
        return FREE

    def passed(self, key: str) -> None:
        """A token from `key` verified (its signature was good)."""
        self._drop(key)
        self._suspects.pop(key, None)
        self._passed.pop(key, None)
        self._passed[key] = (self.clock(), 0)
        if len(self._passed) > self.max_passed:
            self._passed.pop(next(iter(self._passed)))

    def unmark(self, key: str) -> None:
        """The check a FREE `how(key)` let through ended with no verdict on its token (the
        gateway's own refusal before any signature work, or a bug): its mark as a failure
        goes. (Only after a FREE: a failure from before that check stays.)"""
        self._drop(key)

    def failed(self, key: str, group: str) -> None:
        """A token from `key` did not verify: from now on its checks spend the shared
        budget (after GRACE failures for a key that passed before). A key is added to the
        table only while there is room, in it and in its group; otherwise it is a suspect."""
        now = self.clock()
        passed = self._passed.get(key)
        if passed is not None:
            self._passed[key] = (passed[0], passed[1] + 1)
        if key in self._failed or (len(self._failed) < self.max_failed
                                   and self._groups.get(group, 0) < self.max_per_group):
            self._mark(key, group, now)
            return
        self._suspects.pop(key, None)
        self._suspects[key] = now
        if len(self._suspects) > self.max_suspects:
            self._suspects.pop(next(iter(self._suspects)))
