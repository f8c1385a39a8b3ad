"""Per-process traffic counts over a sliding window, for canary analysis.

Owns one ring of buckets (1 second by default) per (route, version): requests, errors
(5xx answers and failed exchanges) and a latency histogram. `record` is called on the
request path (a few dict and list operations); `window` sums the last N seconds, `buckets`
lists them. Pure apart from being mutable; time is passed in.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

from gateway.domain.analysis import LATENCY_BOUNDS_MS, Sample

__all__ = ["WindowStats"]

_BOUNDS = tuple(float(b) for b in LATENCY_BOUNDS_MS)


class WindowStats:
    def __init__(self, keep_seconds: int = 900, bucket_s: int = 1) -> None:
        self.keep = keep_seconds
        self.bucket = bucket_s
        self._rings: dict[tuple[str, str], deque[list[Any]]] = {}

    def record(self, route: str, version: str, error: bool, latency_s: float,
               now: float) -> None:
        ring = self._rings.get((route, version))
        if ring is None:
            ring = self._rings[(route, version)] = deque()
        sec = int(now) // self.bucket * self.bucket
        if not ring or ring[-1][0] != sec:
            ring.append([sec, 0, 0, [0] * (len(_BOUNDS) + 1)])
            while ring and ring[0][0] <= sec - self.keep:
                ring.popleft()
        b = ring[-1]
        b[1] += 1
        if error:
            b[2] += 1
        b[3][bisect_left(_BOUNDS, latency_s * 1000.0)] += 1

    def window(self, route: str, seconds: float, now: float) -> dict[str, Sample]:
        start = now - seconds
        out: dict[str, Sample] = {}
        for (r, v), ring in self._rings.items():
            if r != route:
                continue
            s = Sample()
            for sec, n, err, hist in ring:
                if sec + self.bucket > start:
                    s.requests += n
                    s.errors += err
                    s.hist = [a + b for a, b in zip(s.hist, hist, strict=True)]
            out[v] = s
        return out

    def forget(self, route: str) -> None:
        for key in [k for k in self._rings if k[0] == route]:
            del self._rings[key]

    def buckets(self, seconds: float, now: float) -> dict[tuple[str, str], list[list[Any]]]:
        """Every (route, version)'s buckets that overlap the last `seconds`, oldest first:
        `[start, requests, errors, histogram]` (the ring's own lists: read, never change)."""
        start = now - seconds
        out: dict[tuple[str, str], list[list[Any]]] = {}
        for key, ring in self._rings.items():
            rows = [b for b in ring if b[0] + self.bucket > start and b[1]]
            if rows:
                out[key] = rows
        return out
