"""How much one sticky key may weigh in a canary's analysis (`analysis.max_per_key`).

A client chooses its sticky key, and `x-killgate-version` tells it which version a key
lands on: with keys that land on the canary, one client could flood it with requests it
fails (a rollback) or with cheap ones it answers (a failing canary's error rate diluted,
then promoted), and so decide the verdict alone. Only the first `max_per_key` requests of
each key in each period of `analysis.window` (periods aligned to the window on the data
plane's clock) count toward the verdict: at most twice that in any window the analysis
reads. The rest are answered as usual and told to every observer but the judges (outlier
detection, canary analysis), as pinned requests are.

Owns the counts: per route, one dict of the current period (key hash -> requests counted),
cleared when the period ends. Memory is bounded by `max_keys` entries over every route;
past it a key not seen in the period is not counted (an attacker with that many keys
starves the analysis, which then says `inconclusive`, never a verdict of its choosing).
A request costs one dict read and write. Pure apart from being mutable; time is passed in.
"""

from __future__ import annotations

__all__ = ["MAX_KEYS", "KeyQuota"]

MAX_KEYS = 100_000  # keys counted at once, every route together (~10 MB at most)


class _Period:
    __slots__ = ("counts", "end", "start")

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.counts: dict[int, int] = {}


class KeyQuota:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._routes: dict[str, _Period] = {}
        self._keys = 0  # entries in every period's counts

    def admit(self, route: str, key: str, limit: int, window: float, now: float) -> bool:
        """Whether this request of `key` on `route` counts toward the canary's verdict
        (and is counted as one of the key's `limit` for the period of `now`)."""
        period = self._routes.get(route)
        if period is None or not period.start <= now < period.end:
            period = self._begin(route, window, now)
        counts = period.counts
        h = hash(key)  # (an int: a long key costs no memory; the hash is per process)
        n = counts.get(h, 0)
        if n >= limit:
            return False
        if n == 0:
            if self._keys >= self.max_keys and not self._sweep(now):
                return False
            self._keys += 1
        counts[h] = n + 1
        return True

    def _begin(self, route: str, window: float, now: float) -> _Period:
        old = self._routes.get(route)
        if old is not None:
            self._keys -= len(old.counts)
        start = now // window * window
        period = self._routes[route] = _Period(start, start + window)
        return period

    def _sweep(self, now: float) -> bool:
        """Drop the periods that ended (routes no request came to since, or a reload
        removed): whether that made room. Only when full: O(routes)."""
        for route in [r for r, p in self._routes.items() if not p.start <= now < p.end]:
            self._keys -= len(self._routes.pop(route).counts)
        return self._keys < self.max_keys

    @property
    def keys(self) -> int:
        return self._keys
