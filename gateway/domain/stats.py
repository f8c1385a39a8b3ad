"""Per-process traffic counts over a sliding window, for canary analysis.

Owns one ring of buckets (1 second by default) per (route, version): requests, errors
(5xx answers and failed exchanges) and a latency histogram. `record` is called on the
request path, so it only appends: the current bucket's latencies and errors wait per
(route, version) and are put into the ring when the bucket ends, before any read, and when
_BATCH wait (sorted, then one bisect per boundary, in C). Putting each request into its
bucket as it came cost about 5,000 CPU instructions a request, 3 % of a proxied request
(benchmarks/RESULTS.md §11, stop 20); `record_ok` takes a batch of answers of one bucket
that were no errors. `window` sums the last N seconds, `buckets` lists them. Pure apart
from being mutable; time is passed in.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.domain.analysis import LATENCY_BOUNDS_MS, Sample

__all__ = ["WindowStats", "add_to_buckets"]

_BOUNDS = tuple(float(b) for b in LATENCY_BOUNDS_MS)
_MS = (1000.0).__mul__  # seconds -> milliseconds, for the bisects (`_flush`)
_BATCH = 4096  # latencies waiting per (route, version) before they are bucketed anyway

Key = tuple[str, str]


def add_to_buckets(bounds: tuple[float, ...], counts: list[Any], values: list[float],
                   key: Callable[[float], float] | None = None) -> None:
    """Count `values` (sorted here, in place) into `counts[0..len(bounds)]`: one bucket per
    boundary, a value equal to a boundary in its own (le), then +Inf. A batch costs a sort
    and one bisect per boundary, all in C, instead of a Python call per value. `key`: what
    of a value is compared with the bounds (its unit's; monotonic), computed by the
    bisects only (a few per boundary), not for every value."""
    values.sort()
    below = 0
    for i, bound in enumerate(bounds):
        upto = bisect_right(values, bound, key=key)
        counts[i] += upto - below
        below = upto
    counts[len(bounds)] += len(values) - below


class WindowStats:
    def __init__(self, keep_seconds: int = 900, bucket_s: int = 1) -> None:
        self.keep = keep_seconds
        self.bucket = bucket_s
        self._rings: dict[Key, deque[list[Any]]] = {}
        # the current bucket [_sec, _until): route -> version -> [latencies, errors]
        self._pending: dict[str, dict[str, list[Any]]] = {}
        self._sec = 0
        self._until = float("-inf")

    def record(self, route: str, version: str, error: bool, latency_s: float,
               now: float) -> None:
        p = self._pending_at(route, version, now)
        latencies = p[0]
        latencies.append(latency_s)
        if error:
            p[1] += 1
        if len(latencies) >= _BATCH:
            self._flush((route, version), p)

    def record_ok(self, route: str, version: str, latencies: list[float], now: float) -> None:
        """`record` of answers that were no errors, all of one bucket (`now` is in it): what
        `wiring.dataplane.Outcomes` hands over a batch at a time. The counts are the same as
        one `record` per latency."""
        p = self._pending_at(route, version, now)
        waiting = p[0]
        waiting += latencies
        if len(waiting) >= _BATCH:
            self._flush((route, version), p)

    def _pending_at(self, route: str, version: str, now: float) -> list[Any]:
        """The [latencies, errors] waiting for (route, version) in the bucket `now` is in:
        rolled to that bucket first when `now` is outside the current one."""
        if now >= self._until or now < self._sec:
            self._roll(now)
        try:
            return self._pending[route][version]
        except KeyError:
            return self._pending.setdefault(route, {}).setdefault(version, [[], 0])

    def _roll(self, now: float) -> None:
        """`now` is outside the current bucket: what waits goes to the old one first."""
        self._flush_all()
        sec = int(now) // self.bucket * self.bucket
        self._sec = sec
        self._until = sec + self.bucket

    def _drop_stale(self, now: float) -> None:
        """Drops the rings with no bucket younger than `keep` by the reader's clock (a
        version no longer served: a reload replaced it, a rollout retired it). A ring is
        trimmed only when its own version is counted again, so each version a process ever
        counted kept up to `keep` buckets (900 of 26 numbers) for the life of the process,
        and every `window` of its route listed it: memory and published blobs grew with
        each deployment. (At each read, after `_flush_all`: nothing waits for them.)"""
        old = now - self.keep
        stale = [k for k, ring in self._rings.items() if not ring or ring[-1][0] <= old]
        for route, version in stale:
            del self._rings[(route, version)]
            waiting = self._pending.get(route)
            if waiting is not None and version in waiting and not waiting[version][0]:
                del waiting[version]
                if not waiting:
                    del self._pending[route]

    def _flush_all(self) -> None:
        for route, versions in self._pending.items():
            for version, p in versions.items():
                if p[0]:
                    self._flush((route, version), p)

    def _flush(self, key: Key, p: list[Any]) -> None:
        """The latencies and errors waiting for `key` into the current bucket of its ring."""
        latencies: list[float] = p[0]
        sec = self._sec
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque()
        if not ring or ring[-1][0] != sec:
            ring.append([sec, 0, 0, [0] * (len(_BOUNDS) + 1)])
            while ring and ring[0][0] <= sec - self.keep:
                ring.popleft()
        b = ring[-1]
        b[1] += len(latencies)
        b[2] += p[1]
        # (the bounds are milliseconds: a converted copy of every latency cost about 300 CPU
        # instructions a request an observer, RESULTS §31)
        add_to_buckets(_BOUNDS, b[3], latencies, _MS)
        latencies.clear()
        p[1] = 0

    def window(self, route: str, seconds: float, now: float) -> dict[str, Sample]:
        self._flush_all()
        self._drop_stale(now)
        start = now - seconds
        out: dict[str, Sample] = {}
        for (r, v), ring in self._rings.items():
            if r != route:
                continue
            s = Sample()
            for sec, n, err, hist in ring:
                # (a bucket after `now`: stamped before the wall clock stepped back)
                if sec + self.bucket > start and sec <= now:
                    s.requests += n
                    s.errors += err
                    s.hist = [a + b for a, b in zip(s.hist, hist, strict=True)]
            out[v] = s
        return out

    def forget_version(self, route: str, version: str) -> None:
        """Drop what was counted of `version` (a deployment a reload replaced)."""
        self._rings.pop((route, version), None)
        waiting = self._pending.get(route)
        if waiting is not None and version in waiting:
            p = waiting[version]
            p[0].clear()
            p[1] = 0

    def forget(self, route: str) -> None:
        for key in [k for k in self._rings if k[0] == route]:
            del self._rings[key]
        self._pending.pop(route, None)

    def buckets(self, seconds: float, now: float) -> dict[tuple[str, str], list[list[Any]]]:
        """Every (route, version)'s buckets that overlap the last `seconds`, oldest first:
        `[start, requests, errors, histogram]` (the ring's own lists: read, never change)."""
        self._flush_all()
        self._drop_stale(now)
        start = now - seconds
        out: dict[tuple[str, str], list[list[Any]]] = {}
        for key, ring in self._rings.items():
            rows = [b for b in ring if b[0] + self.bucket > start and b[0] <= now and b[1]]
            if rows:
                out[key] = rows
        return out
