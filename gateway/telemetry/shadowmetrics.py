"""The shadow series of /metrics, built at scrape time from this process's tallies.

Owns `ShadowSeries`, a metrics source (telemetry/metrics.py `Source`): per route and shadow
version, what happened to the copies, comparison outcomes, kinds of difference, failures,
this process's agreement ratio, copies in flight, and both sides' latency as histograms
(`side` = primary | shadow). Labels come only from config names and fixed sets. Imports
prometheus_client's family types only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway.domain.analysis import LATENCY_BOUNDS_MS
from gateway.domain.shadowstats import Tally, compared_agreed
from gateway.telemetry.metrics import HELP

__all__ = ["ShadowSeries"]

_BOUNDS_S = [b / 1000.0 for b in LATENCY_BOUNDS_MS]


class ShadowSeries:
    def __init__(self, tallies: Callable[[], Mapping[str, Tally]],
                 inflight: Callable[[], Mapping[str, int]]) -> None:
        self.tallies = tallies
        self.inflight = inflight

    def collect(self) -> Iterator[Metric]:
        tallies = sorted(self.tallies().items())
        labels = ["route", "version"]

        def counter(name: str, extra: str, pick: Callable[[Tally], dict[str, int]]) -> Metric:
            fam = CounterMetricFamily(name, HELP[name][1], labels=[*labels, extra])
            for route, t in tallies:
                for k, v in sorted(pick(t).items()):
                    fam.add_metric([route, t.version, k], v)
            return fam

        yield counter("killgate_shadow_copies_total", "result", lambda t: t.copies)
        yield counter("killgate_shadow_comparisons_total", "outcome", lambda t: t.outcomes)
        yield counter("killgate_shadow_differences_total", "kind", lambda t: t.differences)
        yield counter("killgate_shadow_failures_total", "kind", lambda t: t.failures)
        name = "killgate_shadow_agreement_ratio"
        ratio = GaugeMetricFamily(name, HELP[name][1], labels=labels)
        for route, t in tallies:
            compared, agreed = compared_agreed(t)
            if compared:
                ratio.add_metric([route, t.version], agreed / compared)
        yield ratio
        name = "killgate_shadow_inflight"
        busy = GaugeMetricFamily(name, HELP[name][1], labels=["route"])
        for route, n in sorted(self.inflight().items()):
            busy.add_metric([route], n)
        yield busy
        name = "killgate_shadow_duration_seconds"
        hist = HistogramMetricFamily(name, HELP[name][1], labels=[*labels, "side"])
        for route, t in tallies:
            for side, counts, total in (("primary", t.primary_ms, t.primary_s),
                                        ("shadow", t.shadow_ms, t.shadow_s)):
                cumulative = list(accumulate(counts))
                buckets = [(repr(b), c) for b, c in zip(_BOUNDS_S, cumulative, strict=False)]
                buckets.append(("+Inf", cumulative[-1]))
                hist.add_metric([route, t.version, side], buckets, total)
        yield hist
