"""Per-version traffic series for the operator console: encode, decode, merge.

Each instance publishes its own counts per `step`-second bucket (requests, errors and a
sparse latency histogram) as one blob; `merge` sums the fleet's blobs into chart series:
requests per second, error rate, and p99 (the upper bound, in ms, of the histogram bucket
holding the 99th percentile; the last bound stands for anything beyond it). Blobs come
from the state store, so `decode` trusts nothing: a malformed blob is dropped whole.
Pure: no I/O, no clock (time is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.domain.analysis import LATENCY_BOUNDS_MS, Sample, percentile

__all__ = ["Blob", "decode", "encode", "merge"]

FORMAT = 1
MAX_POINTS = 50_000  # per blob: bounds the work one (hostile) blob can cause
MAX_COUNT = 10**12
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1

Points = dict[tuple[str, str], dict[int, Sample]]


@dataclass(frozen=True, slots=True)
class Blob:
    instance: str
    t: float  # the instance's clock when it made the blob: its counts are whole up to here
    points: Points


def encode(instance: str, t: float, step: int, points: Points) -> dict[str, Any]:
    routes: dict[str, dict[str, list[Any]]] = {}
    for (route, version), buckets in points.items():
        rows = routes.setdefault(route, {}).setdefault(version, [])
        for start in sorted(buckets):
            s = buckets[start]
            rows.append([start, s.requests, s.errors,
                         [[i, n] for i, n in enumerate(s.hist) if n]])
    return {"format": FORMAT, "instance": instance, "t": t, "step": step, "routes": routes}


def _count(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= MAX_COUNT:
        raise ValueError("a count must be a non-negative integer")
    return x


def _name(x: Any) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= 64:
        raise ValueError("a route or version name must be a short string")
    return x


def _sample(row: Any, step: int) -> tuple[int, Sample]:
    if not isinstance(row, list) or len(row) != 4 or not isinstance(row[3], list):
        raise ValueError("a point is [start, requests, errors, histogram]")
    start = _count(row[0])
    if start % step:
        raise ValueError("a point's start is not on the step")
    s = Sample(requests=_count(row[1]), errors=_count(row[2]))
    for pair in row[3]:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError("a histogram entry is [bucket, count]")
        i, n = _count(pair[0]), _count(pair[1])
        if i >= _BUCKETS:
            raise ValueError("no such histogram bucket")
        s.hist[i] += n
    if s.errors > s.requests:
        raise ValueError("more errors than requests")
    return start, s


def decode(blob: Any, step: int) -> Blob | None:
    """The blob's counts, or None when it is not one this version can read (an older or
    newer format, another step, a malformed or oversized one)."""
    try:
        if not isinstance(blob, dict) or blob.get("format") != FORMAT or blob.get("step") != step:
            return None
        t = blob.get("t")
        if isinstance(t, bool) or not isinstance(t, int | float) or t != t:
            return None
        routes = blob.get("routes")
        if not isinstance(routes, dict):
            return None
        points: Points = {}
        n = 0
        for route, versions in routes.items():
            if not isinstance(versions, dict):
                return None
            for version, rows in versions.items():
                if not isinstance(rows, list):
                    return None
                n += len(rows)
                if n > MAX_POINTS:
                    return None
                buckets = points.setdefault((_name(route), _name(version)), {})
                for row in rows:
                    start, s = _sample(row, step)
                    buckets[start] = s
        return Blob(_name(blob.get("instance")), float(t), points)
    except ValueError:
        return None


def merge(blobs: list[Blob], until: float, window: int, step: int) -> dict[str, Any]:
    """Chart series over the `window` seconds of whole buckets ending at or before
    `until` (the time up to which every live instance's counts are known)."""
    end = int(until) - int(until) % step  # buckets starting before `end` are complete
    starts = list(range(end - window, end, step))
    first = starts[0] if starts else end
    summed: Points = {}
    for blob in blobs:
        for key, buckets in blob.points.items():
            into = summed.setdefault(key, {})
            for start, s in buckets.items():
                if first <= start < end:
                    acc = into.setdefault(start, Sample())
                    acc.requests += s.requests
                    acc.errors += s.errors
                    acc.hist = [a + b for a, b in zip(acc.hist, s.hist, strict=True)]
    routes: dict[str, dict[str, Any]] = {}
    for (route, version), buckets in sorted(summed.items()):
        pts = [buckets.get(t, Sample()) for t in starts]
        routes.setdefault(route, {})[version] = {
            "requests": [p.requests for p in pts],
            "errors": [p.errors for p in pts],
            "rps": [round(p.requests / step, 3) for p in pts],
            "error_rate": [round(p.errors / p.requests, 4) if p.requests else None
                           for p in pts],
            "p99_ms": [_p99(p) for p in pts],
        }
    return {"step_s": step, "window_s": window, "end": end, "t": starts, "routes": routes}


def _p99(s: Sample) -> float | None:
    p = percentile(s, 0.99)
    if p is None:
        return None
    return min(p, float(LATENCY_BOUNDS_MS[-1]))  # (JSON has no Infinity)
