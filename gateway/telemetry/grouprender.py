"""The series of a `--workers N` group rendered: the merged `Raw` as the families one
process would render of its own.

Owns rendering a merge (groupseries.py's `Raw`) with the same family code one process uses:
metrics.py's values set again, the request series from the summed bucket counts (entries
counted in other boundaries skipped, and counted), the other sources' families as they
were, and `killgate_metrics_workers`; in steps (a yield every ENTRIES_PER_STEP entries) for
/metrics' slices, or at once. Pure: no files, no clock, no asyncio.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

from gateway.telemetry.exposition import Family as Exposed
from gateway.telemetry.exposition import Rows
from gateway.telemetry.groupseries import Raw
from gateway.telemetry.metrics import HELP, Metrics
from gateway.telemetry.requests import RequestStats

__all__ = ["ENTRIES_PER_STEP", "Steps", "drain", "render", "rendering"]


class _GroupStats(RequestStats):
    """The request series of the whole group: the same families, from summed counts."""

    def __init__(self, own: RequestStats, raw: Raw) -> None:
        super().__init__(own.buckets, own.expected, own.clock)
        self.skipped = 0  # (entries whose boundaries differ: `rendering` adds them)
        self._per = raw.split

    def split(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        per = {k: int(n) for k, n in self._per.items()}
        totals: dict[str, int] = {}
        for (route, _), n in per.items():
            totals[route] = totals.get(route, 0) + n
        return per, totals


R = TypeVar("R")
Steps = Generator[None, None, R]  # work in parts (a yield between two), then its result
ENTRIES_PER_STEP = 128  # request entries summed between two yields


def drain(steps: Steps[R]) -> R:
    """The result of `steps`, run to the end at once."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def render(raw: Raw, own_stats: RequestStats, workers: int) -> tuple[list[Exposed], int]:
    """The families of `raw` (the group's), as this process would render its own (ours as
    `Rows`: exposition.as_metric makes `Metric`s of them)."""
    return drain(rendering(raw, own_stats, workers))


def rendering(raw: Raw, own_stats: RequestStats,
              workers: int) -> Steps[tuple[list[Exposed], int]]:
    """`render` in parts: a yield every ENTRIES_PER_STEP request entries summed."""
    m = Metrics()
    for name, (names, series) in raw.values.items():
        for labels, v in series.items():
            m.set(name, v, labels, names)
    stats = _GroupStats(own_stats, raw)
    for i, (key, counts) in enumerate(raw.entries.items()):
        if i % ENTRIES_PER_STEP == ENTRIES_PER_STEP - 1:
            yield
        stats.skipped += not stats.add_counts(key, *counts)
    m.source(stats)
    fams: list[Exposed] = list(m.families())
    fams.extend(f.metric() for f in raw.families.values())
    name = "killgate_metrics_workers"
    fams.append(Rows(name, "gauge", HELP[name][1], (), [((), workers)]))
    return fams, stats.skipped
