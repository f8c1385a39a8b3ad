"""The shadow series of /metrics, refreshed from this process's tallies at each scrape.

Owns `ShadowSeries`, a metrics collector (telemetry/metrics.py `Metrics.collector`): per
route and shadow version, what happened to the copies, comparison outcomes, kinds of
difference, failures, and the summed time to the whole answer on each side; and the copies
in flight per route. Plain counters and a gauge (no families of its own), so a
`--workers N` group merges them like every other series (telemetry/workers.py). Labels
come only from config names and fixed sets. The agreement ratio is the counters' quotient
(README "Shadow traffic"); a per-process ratio could not be merged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gateway.domain.shadowstats import Tally
from gateway.telemetry.metrics import Metrics

__all__ = ["ShadowSeries"]

_ROUTE = ("route", "version")


class ShadowSeries:
    def __init__(self, tallies: Callable[[], Mapping[str, Tally]],
                 inflight: Callable[[], Mapping[str, int]]) -> None:
        self.tallies = tallies
        self.inflight = inflight
        # label sets written before: a count that starts afresh (new comparison settings)
        # goes back to 0 rather than keep an old value beside the new ones
        self._seen: dict[str, set[tuple[str, ...]]] = {}

    def refresh(self, metrics: Metrics) -> None:
        now: dict[str, dict[tuple[str, ...], float]] = {}
        names: dict[str, tuple[str, ...]] = {}

        def put(name: str, label: str, route: str, t: Tally, counts: Mapping[str, float]) -> None:
            names[name] = (*_ROUTE, label)
            series = now.setdefault(name, {})
            for k, v in counts.items():
                series[(route, t.version, k)] = float(v)

        for route, t in self.tallies().items():
            put("killgate_shadow_copies_total", "result", route, t, t.copies)
            put("killgate_shadow_comparisons_total", "outcome", route, t, t.outcomes)
            put("killgate_shadow_differences_total", "kind", route, t, t.differences)
            put("killgate_shadow_failures_total", "kind", route, t, t.failures)
            put("killgate_shadow_seconds_total", "side", route, t,
                {"primary": t.primary_s, "shadow": t.shadow_s})
        names["killgate_shadow_inflight"] = ("route",)
        now["killgate_shadow_inflight"] = {(r,): float(n) for r, n in self.inflight().items()}
        for name, series in now.items():
            seen = self._seen.setdefault(name, set())
            for labels in seen - series.keys():
                metrics.set(name, 0.0, labels, names[name])
            for labels, v in series.items():
                metrics.set(name, v, labels, names[name])
            seen |= series.keys()
