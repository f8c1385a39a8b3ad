"""Per-process traffic counts over a sliding window, for canary analysis.

Owns one ring of 1-second buckets per (route, version): requests, errors (5xx answers
and failed exchanges) and a latency histogram. `record` is called on the request path
for routes with analysis only (a few dict and list operations); `window` sums the last
N seconds. Pure apart from being mutable; time is passed in.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

from gateway.domain.analysis import LATENCY_BOUNDS_MS, Sample

__all__ = ["WindowStats"]

_BOUNDS = tuple(float(b) for b in LATENCY_BOUNDS_MS)


class WindowStats:
    def __init__(self, keep_seconds: int = 900) -> None:
        self.keep = keep_seconds
        self._rings: dict[tuple[str, str], deque[list[Any]]] = {}

    def record(self, route: str, version: str, error: bool, latency_s: float,
               now: float) -> None:
        ring = self._rings.get((route, version))
        if ring is None:
            ring = self._rings[(route, version)] = deque()
        sec = int(now)
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
                if sec + 1 > start:
                    s.requests += n
                    s.errors += err
                    s.hist = [a + b for a, b in zip(s.hist, hist, strict=True)]
            out[v] = s
        return out

    def forget(self, route: str) -> None:
        for key in [k for k in self._rings if k[0] == route]:
            del self._rings[key]

    def series(self, seconds: float, step: int,
               now: float) -> dict[tuple[str, str], dict[int, Sample]]:
        """Every (route, version)'s counts of the last `seconds`, summed per `step`-second
        bucket (keyed by the bucket's start, a multiple of `step`); empty buckets left out."""
        start = now - seconds
        out: dict[tuple[str, str], dict[int, Sample]] = {}
        for key, ring in self._rings.items():
            points: dict[int, Sample] = {}
            for sec, n, err, hist in ring:
                if sec + 1 <= start or n == 0:
                    continue
                b = sec - sec % step
                s = points.get(b)
                if s is None:
                    s = points[b] = Sample()
                s.requests += n
                s.errors += err
                s.hist = [a + c for a, c in zip(s.hist, hist, strict=True)]
            if points:
                out[key] = points
        return out
