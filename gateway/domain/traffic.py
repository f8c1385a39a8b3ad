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

from gateway.domain.analysis import LATENCY_BOUNDS_MS

__all__ = ["Blob", "decode", "encode", "local", "merge"]

FORMAT = 1
MAX_POINTS = 50_000  # per blob: bounds the work one (hostile) blob can cause
MAX_COUNT = 10**12
_BUCKETS = len(LATENCY_BOUNDS_MS) + 1

Row = tuple[int, int, tuple[tuple[int, int], ...]]  # requests, errors, sparse histogram
Points = dict[tuple[str, str], dict[int, Row]]  # (route, version) -> bucket start -> counts
Buckets = dict[tuple[str, str], list[list[Any]]]  # WindowStats.buckets: [start, n, err, hist]


@dataclass(frozen=True, slots=True)
class Blob:
    instance: str
    t: float  # the instance's clock when it made the blob: its counts are whole up to here
    points: Points


def _sparse(hist: list[int]) -> tuple[tuple[int, int], ...]:
    return tuple((i, n) for i, n in enumerate(hist) if n)


def encode(instance: str, t: float, step: int, buckets: Buckets) -> dict[str, Any]:
    """The blob an instance publishes (buckets `step` seconds long, from WindowStats)."""
    routes: dict[str, dict[str, list[Any]]] = {}
    for (route, version), rows in buckets.items():
        routes.setdefault(route, {})[version] = [
            [start, n, err, [list(p) for p in _sparse(hist)]] for start, n, err, hist in rows]
    return {"format": FORMAT, "instance": instance, "t": t, "step": step, "routes": routes}


def local(instance: str, t: float, buckets: Buckets) -> Blob:
    """This instance's own counts, as `decode(encode(...))` would give, without the trip."""
    return Blob(instance, t, {key: {start: (n, err, _sparse(hist)) for start, n, err, hist in rows}
                              for key, rows in buckets.items()})


def _name(x: Any) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= 64:
        raise ValueError("a route or version name must be a short string")
    return x


def _row(row: Any, step: int) -> tuple[int, Row]:
    # `type(x) is int`: not a bool, not a float; checked inline (a view decodes thousands)
    if type(row) is not list or len(row) != 4:
        raise ValueError("a point is [start, requests, errors, histogram]")
    start, n, err, hist = row
    if type(start) is not int or type(n) is not int or type(err) is not int \
            or type(hist) is not list:
        raise ValueError("a point is [start, requests, errors, histogram]")
    if not (0 <= start <= MAX_COUNT and 0 <= err <= n <= MAX_COUNT) or start % step:
        raise ValueError("counts out of range, more errors than requests, or off the step")
    pairs = []
    for pair in hist:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("a histogram entry is [bucket, count]")
        i, c = pair
        if type(i) is not int or type(c) is not int or not (0 <= i < _BUCKETS
                                                             and 0 <= c <= MAX_COUNT):
            raise ValueError("no such histogram bucket, or a bad count")
        pairs.append((i, c))
    return start, (n, err, tuple(pairs))


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
                points[(_name(route), _name(version))] = dict(_row(r, step) for r in rows)
        return Blob(_name(blob.get("instance")), float(t), points)
    except ValueError:
        return None


def merge(blobs: list[Blob], until: float, window: int, step: int) -> dict[str, Any]:
    """Chart series over the `window` seconds of whole buckets ending at or before
    `until` (the time up to which every live instance's counts are known)."""
    end = int(until) - int(until) % step  # buckets starting before `end` are complete
    starts = list(range(end - window, end, step))
    first = starts[0] if starts else end
    summed: dict[tuple[str, str], dict[int, list[Any]]] = {}
    for blob in blobs:
        for key, rows in blob.points.items():
            into = summed.setdefault(key, {})
            for start, (n, err, pairs) in rows.items():
                if first <= start < end:
                    acc = into.get(start)
                    if acc is None:
                        acc = into[start] = [0, 0, [0] * _BUCKETS]
                    acc[0] += n
                    acc[1] += err
                    hist = acc[2]
                    for i, c in pairs:
                        hist[i] += c
    routes: dict[str, dict[str, Any]] = {}
    empty = [0, 0, None]
    for (route, version), buckets in sorted(summed.items()):
        pts = [buckets.get(t, empty) for t in starts]
        routes.setdefault(route, {})[version] = {
            "requests": [p[0] for p in pts],
            "errors": [p[1] for p in pts],
            "rps": [round(p[0] / step, 3) for p in pts],
            "error_rate": [round(p[1] / p[0], 4) if p[0] else None for p in pts],
            "p99_ms": [_p99(p[2]) for p in pts],
        }
    return {"step_s": step, "window_s": window, "end": end, "t": starts, "routes": routes}


def _p99(hist: list[int] | None) -> float | None:
    """The upper bound (ms) of the bucket holding the 99th percentile (the last bound for
    anything beyond it: JSON has no Infinity)."""
    total = sum(hist) if hist else 0
    if not total:
        return None
    rank, seen = 0.99 * total, 0
    for i, c in enumerate(hist or ()):
        seen += c
        if seen >= rank:
            return float(LATENCY_BOUNDS_MS[min(i, len(LATENCY_BOUNDS_MS) - 1)])
    return float(LATENCY_BOUNDS_MS[-1])
