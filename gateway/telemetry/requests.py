"""The request series: counts, latency histograms, and the actual split of each route.

Owns `RequestStats`, the recorder behind `killgate_requests_total`, the duration
histograms (`killgate_request_duration_seconds`, `killgate_upstream_duration_seconds`,
`killgate_time_to_first_byte_seconds`) and the split gauges (`killgate_split_share`: each
version's share of the last minute's answers, beside the share the routing table
intends, and their difference). Recording is a few dict and list operations per request
(no locks: one event loop); at scrape time they are copied (`families`, on the loop at
once) and the families made from the copy later (telemetry/requestrows.py, through
telemetry/exposition.py's `Deferred`, in /metrics' slices). Labels come only from config
names and fixed enums; bucket boundaries are fixed when the process starts (a histogram's
buckets must not change under Prometheus). Imports telemetry/exposition.py's family
types, requestrows.py, prometheus_client's `Metric` and the domain's batch bucketing
(`domain.stats.add_to_buckets`) only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial

from prometheus_client.metrics_core import Metric

from gateway.config_telemetry import BucketsConfig
from gateway.domain.stats import add_to_buckets
from gateway.telemetry.exposition import Deferred, Family, as_metric, expand
from gateway.telemetry.record import RequestRecord, arm_of
from gateway.telemetry.requestrows import Hist, Key, families

__all__ = ["SPLIT_STEP", "SPLIT_WINDOW", "RequestStats"]

SPLIT_WINDOW = 60.0  # seconds of answers behind killgate_split_share
#: at most one snapshot kept per this many seconds, however often /metrics is scraped (it
#: needs no token): the window stays about SPLIT_WINDOW / SPLIT_STEP snapshots
SPLIT_STEP = 1.0
# answers no version served, and those a client pinned (`x-killgate-pin`: the client's
# choice, not the split's; a dark launch at weight 0 answering its pins was "drift")
_NOT_SPLIT = frozenset({"", "killed", "fallback", "pinned"})


# One entry per (route, version, decision, stable, status): what the request path
# updates. Each histogram is its boundaries and a list of one count per bucket (+Inf
# last) followed by the sum. Arms, status classes and per-version series are derived at
# scrape time. A request costs an identity check of its labels (a tuple and a dict lookup
# when they changed: see `done`) and an append or two: its times
# wait in the entry's pending lists and are put into buckets a batch at a time (sorted,
# then one bisect per boundary, all in C), before any read and whenever _BATCH are
# waiting. Bucketing each request as it came cost about 1,400 more CPU instructions a
# request (benchmarks/instructions.py, RESULTS §11, "Stop 20").
Expected = Callable[[], Mapping[str, Mapping[str, float]]]  # route -> version -> percent
_BATCH = 1024  # pending times per entry before they are bucketed


def _hist(bounds: tuple[float, ...]) -> Hist:
    return bounds, [0.0] * (len(bounds) + 2)


def _bucket(h: Hist, pending: list[float]) -> None:
    """Move `pending` into `h` (le semantics: a time equal to a boundary counts in it)."""
    if not pending:
        return
    bounds, counts = h
    add_to_buckets(bounds, counts, pending)
    counts[-1] += sum(pending)
    pending.clear()


class _Entry:
    __slots__ = ("duration", "pending", "pending_ttfb", "pending_upstream", "ttfb",
                 "upstream")

    def __init__(self, duration: Hist, upstream: Hist, ttfb: Hist) -> None:
        self.duration = duration
        self.upstream = upstream
        self.ttfb = ttfb
        self.pending: list[float] = []
        self.pending_upstream: list[float] = []
        self.pending_ttfb: list[float] = []

    def flush(self) -> None:
        _bucket(self.duration, self.pending)
        _bucket(self.upstream, self.pending_upstream)
        _bucket(self.ttfb, self.pending_ttfb)


class RequestStats:
    """Recorder of the request series (see the module docstring)."""

    def __init__(self, buckets: BucketsConfig, expected: Expected | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        # an instance attribute: the data plane reads it on every request, and a class's
        # read through the instance does not specialize (about 250 CPU instructions)
        self.detailed = False
        self.buckets = buckets
        self.expected = expected
        self.clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._window: list[tuple[float, dict[tuple[str, str], int]]] = [(clock(), {})]
        # the labels of the last entry `done` found, and that entry (see `done`)
        self._route: str | None = None
        self._version: str | None = None
        self._decision: str | None = None
        self._stable: str | None = None
        self._status = -1
        self._last = _Entry(_hist(()), _hist(()), _hist(()))  # (never matched: no labels)

    # ------------------------------------------------------------------ request path

    def done(self, rec: RequestRecord) -> None:
        # The entry of the last request is kept with the five label objects it was found
        # by: the next request's are most often the same objects (the route plan's names,
        # the proxy's decision constants, the same status), and `is` finds it without the
        # tuple, its hash and the lookup (about 1,000 CPU instructions a request). Equal
        # strings that are other objects take the lookup: the same entry.
        status = rec.status
        if (rec.route is self._route and rec.version is self._version
                and rec.decision is self._decision and rec.stable is self._stable
                and status == self._status):
            e = self._last
        else:
            e = self._find(rec, status)
        start = rec.start
        pending = e.pending
        pending.append(rec.end - start)
        u = rec.upstream
        if u >= 0.0:
            e.pending_upstream.append(u)
        first = rec.first_byte
        if first:
            e.pending_ttfb.append(first - start)
        if len(pending) >= _BATCH:
            e.flush()

    def _find(self, rec: RequestRecord, status: int) -> _Entry:
        """The entry of `rec`'s labels, kept as the last one `done` found."""
        key = (rec.route, rec.version, rec.decision, rec.stable, status)
        try:
            e = self._entries[key]
        except KeyError:
            e = self._entry(key)
        self._route, self._version, self._decision, self._stable = key[:4]
        self._status = status
        self._last = e
        return e

    def _entry(self, key: Key) -> _Entry:
        request, upstream = self.buckets.for_route(key[0])
        e = self._entries[key] = _Entry(_hist(request), _hist(upstream),
                                        _hist(self.buckets.time_to_first_byte))
        return e

    @property
    def entries(self) -> dict[Key, _Entry]:
        """Every entry, its pending times bucketed (what every reader goes through)."""
        entries = self._entries
        for e in list(entries.values()):
            e.flush()
        return entries

    def add_counts(self, key: Key, duration: list[float], upstream: list[float],
                   ttfb: list[float]) -> bool:
        """Add another recorder's counts for `key` (bucket counts, then the sum: the
        layout of `entries`); False, and nothing added, when its boundaries differ."""
        request, up = self.buckets.for_route(key[0])
        if (len(duration), len(upstream), len(ttfb)) != (
                len(request) + 2, len(up) + 2, len(self.buckets.time_to_first_byte) + 2):
            return False
        e = self._entries.get(key)
        if e is None:
            e = self._entry(key)
        for mine, more in ((e.duration[1], duration), (e.upstream[1], upstream),
                           (e.ttfb[1], ttfb)):
            for i, v in enumerate(more):
                mine[i] += v
        return True

    # ------------------------------------------------------------------ scrape

    def counts(self) -> dict[tuple[str, str, str, str, int], int]:
        """(route, version, decision, arm, status) -> answers."""
        out: dict[tuple[str, str, str, str, int], int] = {}
        for (route, version, decision, stable, status), e in list(self.entries.items()):
            k = (route, version, decision, arm_of(decision, version, stable), status)
            out[k] = out.get(k, 0) + int(sum(e.duration[1][:-1]))
        return out

    def collect(self) -> Iterator[Metric]:
        for f in expand(self.families()):
            yield as_metric(f)

    def families(self) -> list[Family]:
        """The families, taken now: the counts copied and the split's window moved (on the
        loop, ~1 ms at 600 entries); the rows are made from the copies later (`Deferred`:
        in /metrics' slices)."""
        entries = [(key, (e.duration[0], list(e.duration[1])),
                    (e.upstream[0], list(e.upstream[1])), (e.ttfb[0], list(e.ttfb[1])))
                   for key, e in list(self.entries.items())]
        per, totals = self.split()
        expected = self.expected() if self.expected is not None else {}
        return [Deferred(partial(families, entries, per, totals, expected))]

    def served(self) -> dict[tuple[str, str], int]:
        """Answers the split had each (route, version) serve since the start (not pinned
        ones: `_NOT_SPLIT`)."""
        out: dict[tuple[str, str], int] = {}
        for (route, version, decision, _, _), e in list(self.entries.items()):
            if version and decision not in _NOT_SPLIT:
                k = (route, version)
                out[k] = out.get(k, 0) + int(sum(e.duration[1][:-1]))
        return out

    def split(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """Answers per (route, version) over the last minute, and per route: the totals
        since the newest snapshot at least SPLIT_WINDOW old (taken at scrapes, at most one
        per SPLIT_STEP: a newer one replaces the last; until the process is that old,
        since its start)."""
        now = self.clock()
        cur = self.served()
        window = self._window
        if len(window) > 1 and now - window[-2][0] < SPLIT_STEP:
            window[-1] = (now, cur)
        else:
            window.append((now, cur))
        base = 0
        for i, (t, _) in enumerate(window):
            if now - t >= SPLIT_WINDOW:
                base = i
        del window[:base]
        old = window[0][1]
        per = {k: n - old.get(k, 0) for k, n in cur.items()}
        totals: dict[str, int] = {}
        for (route, _), n in per.items():
            totals[route] = totals.get(route, 0) + n
        return per, totals
