"""The request families rows are made of, from the counts RequestStats copied.

Owns turning copied entries (telemetry/requests.py) into the rows of
`killgate_requests_total`, the three duration histograms (status codes into classes,
entries of one label set merged, cumulative buckets with their `le` labels) and the split
gauges (each version's share of the last minute beside the share the table intends), one
family at a time with points a /metrics slice may end at. Runs at scrape time only, never
on the request path. Pure: no clock, no loop.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from itertools import accumulate
from operator import add

from gateway.telemetry.exposition import Rows
from gateway.telemetry.metrics import HELP
from gateway.telemetry.record import arm_of

__all__ = ["Copied", "Hist", "Key", "families"]

Key = tuple[str, str, str, str, int]  # (route, version, decision, stable, status)
#: a histogram: its boundaries and one count per bucket (+Inf last) followed by the sum
Hist = tuple[tuple[float, ...], list[float]]
_CLASS = ("", "1xx", "2xx", "3xx", "4xx", "5xx")
_FIVE = ("route", "version", "decision", "arm", "code")
_TWO = ("route", "version")
_ENTRIES_PER_PART = 128  # entries merged between two points a /metrics slice may end at

Copied = list[tuple[Key, Hist, Hist, Hist]]  # (entries' counts copied: the rows' own lists)


def families(entries: Copied, per: Mapping[tuple[str, str], int], totals: Mapping[str, int],
              expected: Mapping[str, Mapping[str, float]]) -> Iterator[Rows | None]:
    """The request families of copied entries (telemetry/requests.py's
    RequestStats.families), one at a time."""
    counts: dict[tuple[str, str, str, str, int], int] = {}
    durations: dict[tuple[str, ...], Hist] = {}
    upstream: dict[tuple[str, ...], Hist] = {}
    ttfb: dict[tuple[str, ...], Hist] = {}
    for i, ((route, version, decision, stable, status), dur, up, first) in enumerate(entries):
        if i % _ENTRIES_PER_PART == _ENTRIES_PER_PART - 1:
            yield None  # (a slice of /metrics may end here)
        arm = arm_of(decision, version, stable)
        k = (route, version, decision, arm, status)
        counts[k] = counts.get(k, 0) + int(sum(dur[1][:-1]))
        code = _CLASS[status // 100] if 0 <= status < 600 else ""
        _add(durations, (route, version, decision, arm, code), dur)
        _add(upstream, (route, version), up)
        _add(ttfb, (route, version), first)
    name = "killgate_requests_total"
    yield Rows(name, "counter", HELP[name][1], _FIVE,
               [((route, version, decision, arm, str(status)), n)
                for (route, version, decision, arm, status), n in sorted(counts.items())])
    yield _histogram("killgate_request_duration_seconds", _FIVE, durations)
    yield _histogram("killgate_upstream_duration_seconds", _TWO, upstream)
    yield _histogram("killgate_time_to_first_byte_seconds", _TWO, ttfb)
    share: list[tuple[tuple[str, str], float]] = []
    want: list[tuple[tuple[str, str], float]] = []
    drift: list[tuple[tuple[str, str], float]] = []
    answers: list[tuple[tuple[str, str], float]] = []
    for route, weights in sorted(expected.items()):
        total = totals.get(route, 0)
        for version, pct in sorted(weights.items()):
            n = per.get((route, version), 0)
            answers.append(((route, version), n))
            want.append(((route, version), pct / 100.0))
            if total:
                share.append(((route, version), n / total))
                drift.append(((route, version), n / total - pct / 100.0))
    for name, rows in (("killgate_split_share", share), ("killgate_split_expected_share", want),
                       ("killgate_split_drift", drift), ("killgate_split_window_answers", answers)):
        yield Rows(name, "gauge", HELP[name][1], _TWO, rows)


def _add(into: dict[tuple[str, ...], Hist], key: tuple[str, ...], h: Hist) -> None:
    """Merge `h` into the histogram under `key` (boundaries are fixed for the process's
    life, so entries of one label set always share them)."""
    counts = h[1]
    if not any(counts[:-1]):
        return
    cur = into.get(key)
    if cur is None:
        into[key] = h  # (a copy: RequestStats.families)
    else:
        cur[1][:] = map(add, cur[1], counts)


def _histogram(name: str, labels: tuple[str, ...],
               series: Mapping[tuple[str, ...], Hist]) -> Rows:
    rows = []
    for key, (bounds, counts) in sorted(series.items()):
        cumulative = list(accumulate(counts[:-1]))
        rows.append((key, _les(bounds), cumulative, counts[-1]))
    return Rows(name, "histogram", HELP[name][1], labels, rows)


@functools.lru_cache(maxsize=64)
def _les(bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The `le` label of each bucket (+Inf last)."""
    return (*((repr(b) if b != int(b) else f"{b:.1f}") for b in bounds), "+Inf")
