"""How much one sticky key may weigh in a canary's analysis (`analysis.max_per_key`).

A client chooses its sticky key, and `x-killgate-version` tells it which version a key
lands on: with keys that land on the canary, one client could flood it with requests it
fails (a rollback) or with cheap ones it answers (a failing canary's error rate diluted,
then promoted), and so decide the verdict alone. Only the first `max_per_key` requests of
each key in each period of `analysis.window` (periods aligned to the window on the data
plane's clock) count toward the verdict: at most twice that in any window the analysis
reads; with `max_per_client`, the keyed requests of one client address likewise (one
client rotating keys). The rest are answered as usual and told to every observer but the
judges (outlier detection, canary analysis), as pinned requests are.

Owns the counts: per route, the dicts of the current period (key or address hash ->
requests counted), dropped when the period ends. Memory is bounded by `max_keys` entries
over every route; past it a key not seen in the period is not counted (an attacker with
that many keys starves the analysis, which then says `inconclusive`, never a verdict of
its choosing). A request costs a dict read and write per bound. Pure apart from being
mutable; time is passed in.
"""

from __future__ import annotations

__all__ = ["MAX_KEYS", "KeyQuota"]

MAX_KEYS = 100_000  # keys counted at once, every route together (~10 MB at most)


class _Period:
    __slots__ = ("clients", "counts", "end", "start")

    def __init__(self, start: float, end: float) -> None:
        self.start = start
        self.end = end
        self.counts: dict[int, int] = {}  # hash of a sticky key -> its requests counted
        self.clients: dict[int, int] = {}  # hash of a client address -> its requests counted

    def __len__(self) -> int:
        return len(self.counts) + len(self.clients)


class KeyQuota:
    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self.max_keys = max_keys
        self._routes: dict[str, _Period] = {}
        self._keys = 0  # entries in every period's dicts

    def admit(self, route: str, key: str, limit: int | None, window: float, now: float,
              client: str | None = None, per_client: int | None = None) -> bool:
        """Whether this request of `key` on `route` counts toward the canary's verdict: its
        key has counted fewer than `limit` (None: no bound) in the period of `now`, and its
        `client` address (given with `per_client`) fewer than `per_client`. If so, it is
        counted for both."""
        period = self._routes.get(route)
        if period is None or not period.start <= now < period.end:
            period = self._begin(route, window, now)
        new = 0
        h = n = 0
        if limit is not None:
            h = hash(key)  # (an int: a long key costs no memory; the hash is per process)
            n = period.counts.get(h, 0)
            if n >= limit:
                return False
            new += n == 0
        a = c = 0
        if client is not None and per_client is not None:
            a = hash(client)
            c = period.clients.get(a, 0)
            if c >= per_client:
                return False
            new += c == 0
        if new:
            if self._keys + new > self.max_keys and not self._sweep(now, new):
                return False
            self._keys += new
        if limit is not None:
            period.counts[h] = n + 1
        if client is not None and per_client is not None:
            period.clients[a] = c + 1
        return True

    def _begin(self, route: str, window: float, now: float) -> _Period:
        old = self._routes.get(route)
        if old is not None:
            self._keys -= len(old)
        start = now // window * window
        period = self._routes[route] = _Period(start, start + window)
        return period

    def _sweep(self, now: float, room: int) -> bool:
        """Drop the periods that ended (routes no request came to since, or a reload
        removed): whether that made `room`. Only when full: O(routes)."""
        for route in [r for r, p in self._routes.items() if not p.start <= now < p.end]:
            self._keys -= len(self._routes.pop(route))
        return self._keys + room <= self.max_keys

    @property
    def keys(self) -> int:
        return self._keys
