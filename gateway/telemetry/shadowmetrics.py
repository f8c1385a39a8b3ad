"""The shadow series of /metrics, built at scrape time from this process's tallies.

Owns `ShadowSeries`, a metrics source (telemetry/metrics.py `Source`): per route and shadow
version, what happened to the copies, comparison outcomes, kinds of difference, failures,
this process's agreement ratio, copies in flight, and both sides' latency as histograms
(`side` = primary | shadow). Labels come only from config names and fixed sets. Imports
telemetry/exposition.py's `Rows` and prometheus_client's `Metric` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate

from prometheus_client.metrics_core import Metric

from gateway.domain.analysis import LATENCY_BOUNDS_MS
from gateway.domain.shadowstats import Tally, compared_agreed
from gateway.telemetry.exposition import Rows, as_metric
from gateway.telemetry.metrics import HELP

__all__ = ["ShadowSeries"]

_BOUNDS_S = [b / 1000.0 for b in LATENCY_BOUNDS_MS]
_LES = (*(repr(b) for b in _BOUNDS_S), "+Inf")  # (each bucket's le; +Inf last)


class ShadowSeries:
    def __init__(self, tallies: Callable[[], Mapping[str, Tally]],
                 inflight: Callable[[], Mapping[str, int]]) -> None:
        self.tallies = tallies
        self.inflight = inflight

    def collect(self) -> Iterator[Metric]:
        for f in self.families():
            yield as_metric(f)

    def families(self) -> list[Rows]:
        """The families as plain rows, made now (the tallies' numbers copied into them)."""
        tallies = sorted(self.tallies().items())
        labels = ("route", "version")

        def counter(name: str, extra: str, pick: Callable[[Tally], dict[str, int]]) -> Rows:
            return Rows(name, "counter", HELP[name][1], (*labels, extra),
                        [((route, t.version, k), v) for route, t in tallies
                         for k, v in sorted(pick(t).items())])

        fams = [counter("killgate_shadow_copies_total", "result", lambda t: t.copies),
                counter("killgate_shadow_comparisons_total", "outcome", lambda t: t.outcomes),
                counter("killgate_shadow_differences_total", "kind", lambda t: t.differences),
                counter("killgate_shadow_failures_total", "kind", lambda t: t.failures)]
        ratio = []
        for route, t in tallies:
            compared, agreed = compared_agreed(t)
            if compared:
                ratio.append(((route, t.version), agreed / compared))
        name = "killgate_shadow_agreement_ratio"
        fams.append(Rows(name, "gauge", HELP[name][1], labels, ratio))
        name = "killgate_shadow_inflight"
        fams.append(Rows(name, "gauge", HELP[name][1], ("route",),
                         [((route,), n) for route, n in sorted(self.inflight().items())]))
        name = "killgate_shadow_duration_seconds"
        hist = []
        for route, t in tallies:
            for side, counts, total in (("primary", t.primary_ms, t.primary_s),
                                        ("shadow", t.shadow_ms, t.shadow_s)):
                hist.append(((route, t.version, side), _LES, list(accumulate(counts)), total))
        fams.append(Rows(name, "histogram", HELP[name][1], (*labels, "side"), hist))
        return fams
