"""One /metrics for a `killgate serve --workers N` process group.

Owns the per-worker snapshot files in the supervisor's private run directory (one per
worker slot, `slot-<i>.json`, written whole then renamed), the carry-over that keeps a
slot's counters monotonic when its worker is replaced, and the merge a scrape answers
with: counters and histograms summed, each gauge by its meaning (`GAUGES`). A snapshot is
the raw series (metrics.py's values, requests.py's bucket counts), not rendered families:
cheap to take every `INTERVAL`. Invariant: a slot's file is never behind anything a
scrape has shown of that slot (the answering worker writes its own file first). Runs on
the event loop, never on the request path; absent with one worker. Imports telemetry only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from gateway.log import event
from gateway.telemetry.metrics import HELP, Metrics, kind_of
from gateway.telemetry.requests import Key, RequestStats

__all__ = ["GAUGES", "INTERVAL", "STALE_AFTER", "Raw", "WorkerMetrics", "add_counted", "add_gauges",
           "capture", "decode", "encode", "render"]

log = logging.getLogger("killgate.metrics")

INTERVAL = 1.0  # seconds between snapshots of a worker's series
STALE_AFTER = 3.0  # a snapshot older than this is a dead (or stopped) worker's: no gauges

# How each gauge of the group is made from the workers' values. "sum": per-worker amounts;
# "min"/"max": the worst worker, as an alert wants it (the generation every live worker
# has applied, the stalest one's state age, ...); "own": the answering worker's value
# (state every worker derives from the same replicated document), else the highest of the
# others'; "split": recomputed from the summed answers (requests.py). A test asks for a
# rule for every documented gauge; one without a rule is "own".
GAUGES: dict[str, str] = {
    "killgate_inflight_requests": "sum",
    "killgate_state_generation": "min",
    "killgate_kill_state_age_seconds": "max",
    "killgate_state_store_connected": "min",
    "killgate_state_stale": "max",
    "killgate_fail_closed": "max",
    "killgate_audit_mirror_ok": "min",
    "killgate_upstream_health": "min",
    "killgate_split_window_answers": "split",
    "killgate_split_expected_share": "split",
    "killgate_split_share": "split",
    "killgate_split_drift": "split",
    "killgate_drills_open": "own",
    "killgate_drills_overdue": "own",
    "killgate_drill_last_passed": "own",
    "killgate_drill_last_timestamp_seconds": "own",
    "killgate_drill_last_duration_seconds": "own",
    "killgate_drill_last_leaks": "own",
    "killgate_drill_last_errors": "own",
    "killgate_drill_last_seconds": "own",
    "killgate_metrics_workers": "own",
    "killgate_shadow_inflight": "sum",
}

Labels = tuple[str, ...]
Counts = tuple[list[float], list[float], list[float]]  # duration, upstream, ttfb


@dataclass
class Raw:
    """A worker's series as plain data (what its snapshot file holds)."""

    #: metrics.py's simple series: name -> (label names, labels -> value)
    values: dict[str, tuple[Labels, dict[Labels, float]]] = field(default_factory=dict)
    #: requests.py's entries: key -> bucket counts (each list: buckets, then the sum)
    entries: dict[Key, Counts] = field(default_factory=dict)
    #: answers per (route, version) in the last minute (killgate_split_window_answers)
    split: dict[tuple[str, str], float] = field(default_factory=dict)

    def counted(self) -> Raw:
        """Only what sums (counters, histograms): what a replacement worker carries on."""
        return Raw({n: (names, dict(v)) for n, (names, v) in self.values.items()
                    if kind_of(n)[0] == "counter"},
                   {k: (list(a), list(b), list(c)) for k, (a, b, c) in self.entries.items()})


def capture(metrics: Metrics, stats: RequestStats) -> Raw:
    """This worker's series now (refreshed as for a scrape)."""
    raw = Raw({name: (names, series) for name, names, series in metrics.dump()})
    for key, e in list(stats.entries.items()):
        raw.entries[key] = (list(e.duration[1]), list(e.upstream[1]), list(e.ttfb[1]))
    raw.split = {k: float(n) for k, n in stats.split()[0].items()}
    return raw


def add_counted(into: Raw, more: Raw) -> int:
    """Sum the counters and histograms of `more` into `into`; the number of histogram
    entries skipped because their bucket boundaries differ (a worker on another config)."""
    for name, (names, series) in more.values.items():
        if kind_of(name)[0] != "counter":
            continue
        _, mine = into.values.setdefault(name, (names, {}))
        for labels, v in series.items():
            mine[labels] = mine.get(labels, 0.0) + v
    skipped = 0
    for key, counts in more.entries.items():
        cur = into.entries.get(key)
        if cur is None:
            into.entries[key] = (list(counts[0]), list(counts[1]), list(counts[2]))
            continue
        if any(len(a) != len(b) for a, b in zip(cur, counts, strict=True)):
            skipped += 1
            continue
        for a, b in zip(cur, counts, strict=True):
            for i, v in enumerate(b):
                a[i] += v
    return skipped


def add_gauges(into: Raw, others: Iterable[Raw]) -> None:
    """Each gauge by its rule (`GAUGES`); the last minute's answers summed."""
    others = list(others)
    for other in others:
        for (route, version), n in other.split.items():
            into.split[(route, version)] = into.split.get((route, version), 0.0) + n
    for other in others:
        for name, (names, series) in other.values.items():
            if kind_of(name)[0] == "counter":
                continue
            rule = GAUGES.get(name, "own")
            _, mine = into.values.setdefault(name, (names, {}))
            for labels, v in series.items():
                cur = mine.get(labels)
                if cur is None:
                    mine[labels] = v
                elif rule == "sum":
                    mine[labels] = cur + v
                elif rule == "min":
                    mine[labels] = min(cur, v)
                elif rule == "max":
                    mine[labels] = max(cur, v)
                # "own": the answering worker's value (first in) stays


# ------------------------------------------------------------------ files


def encode(raw: Raw, slot: int) -> bytes:
    return json.dumps({
        "v": 1, "slot": slot, "pid": os.getpid(), "at": time.monotonic(),
        "values": [[n, names, [[labels, v] for labels, v in series.items()]]
                   for n, (names, series) in raw.values.items()],
        "entries": [[*key, *counts] for key, counts in raw.entries.items()],
        "split": [[r, v, n] for (r, v), n in raw.split.items()],
    }, separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[float, Raw]:
    """(when it was written: time.monotonic(), the same clock for every process of the
    host; the series). Raises ValueError on anything that is not a snapshot."""
    try:
        doc = json.loads(data)
        if doc["v"] != 1:
            raise ValueError("unknown version")
        raw = Raw()
        for name, names, series in doc["values"]:
            raw.values[str(name)] = (tuple(map(str, names)), {
                tuple(map(str, labels)): float(v) for labels, v in series})
        for route, version, decision, stable, status, dur, up, ttfb in doc["entries"]:
            key = (str(route), str(version), str(decision), str(stable), int(status))
            raw.entries[key] = ([float(x) for x in dur], [float(x) for x in up],
                                [float(x) for x in ttfb])
        for route, version, n in doc["split"]:
            raw.split[(str(route), str(version))] = float(n)
        return float(doc["at"]), raw
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ValueError(f"not a worker metrics snapshot: {exc}") from None


# ------------------------------------------------------------------ rendering


class _GroupStats(RequestStats):
    """The request series of the whole group: the same families, from summed counts."""

    def __init__(self, own: RequestStats, raw: Raw) -> None:
        super().__init__(own.buckets, own.expected, own.clock)
        self.skipped = sum(not self.add_counts(k, *c) for k, c in raw.entries.items())
        self._per = raw.split

    def split(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        per = {k: int(n) for k, n in self._per.items()}
        totals: dict[str, int] = {}
        for (route, _), n in per.items():
            totals[route] = totals.get(route, 0) + n
        return per, totals


def render(raw: Raw, own_stats: RequestStats, workers: int) -> tuple[list[Metric], int]:
    """The families of `raw` (the group's), as this process would render its own."""
    m = Metrics()
    for name, (names, series) in raw.values.items():
        for labels, v in series.items():
            m.set(name, v, labels, names)
    stats = _GroupStats(own_stats, raw)
    m.source(stats)
    fams = list(m.collect())
    g = GaugeMetricFamily("killgate_metrics_workers", HELP["killgate_metrics_workers"][1])
    g.add_metric([], workers)
    fams.append(g)
    return fams, stats.skipped


# ------------------------------------------------------------------ the worker's side


class WorkerMetrics:
    """One worker's part of the group: publishes its series every `interval`, and answers
    a scrape with the whole group's (a prometheus_client collector)."""

    def __init__(self, metrics: Metrics, stats: RequestStats, run_dir: Path, slot: int,
                 interval: float = INTERVAL, stale_after: float = STALE_AFTER) -> None:
        self.metrics = metrics
        self.stats = stats
        self.dir = run_dir
        self.slot = slot
        self.path = run_dir / f"slot-{slot}.json"
        self.interval = interval
        self.stale_after = stale_after
        self.base = Raw()  # the slot's counts before this process (a replaced worker's)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Continue the slot's counters from its last snapshot, then publish now and
        every `interval`."""
        try:
            self.base = decode(self.path.read_bytes())[1].counted()
            event(log, "worker_metrics_carried", slot=self.slot,
                  series=len(self.base.values) + len(self.base.entries))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            self._error("read")
            event(log, "worker_metrics_unreadable", logging.WARNING, path=str(self.path),
                  error=str(exc), action="this slot's counters start from zero")
        self.publish()
        self._task = asyncio.create_task(self._run(), name="worker-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.publish()  # the last counts stay with the slot

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.publish()

    def own(self) -> Raw:
        """This worker's series, with the slot's carried counts."""
        raw = capture(self.metrics, self.stats)
        if add_counted(raw, self.base):
            self._error("buckets")
        return raw

    def publish(self) -> Raw:
        """Write this worker's series whole (write, then rename); return them."""
        raw = self.own()
        tmp = self.dir / f".slot-{self.slot}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(encode(raw, self.slot))
            os.replace(tmp, self.path)
        except OSError as exc:
            self._error("write")
            event(log, "worker_metrics_write_failed", logging.WARNING, error=str(exc))
        return raw

    def siblings(self) -> Iterator[tuple[bool, Raw]]:
        """(fresh, series) of every other slot's latest snapshot."""
        now = time.monotonic()
        try:
            paths = sorted(self.dir.glob("slot-*.json"))
        except OSError:
            paths = []
        for p in paths:
            if p == self.path:
                continue
            try:
                at, raw = decode(p.read_bytes())
            except FileNotFoundError:
                continue
            except (OSError, ValueError):
                self._error("read")
                continue
            yield now - at <= self.stale_after, raw

    def group(self) -> tuple[Raw, int]:
        """The group's series (and how many workers' gauges are in them): this worker's,
        published first, then every sibling's counts, and the gauges of the live ones."""
        raw = self.publish()
        fresh: list[Raw] = []
        skipped = 0
        for live, other in self.siblings():
            skipped += add_counted(raw, other)  # a dead worker's counts stay in the sum
            if live:
                fresh.append(other)
        add_gauges(raw, fresh)
        if skipped:
            self._error("buckets", skipped)
        return raw, 1 + len(fresh)

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol: the group's series."""
        raw, workers = self.group()
        fams, skipped = render(raw, self.stats, workers)
        if skipped:
            self._error("buckets", skipped)
        yield from fams

    def _error(self, op: str, n: int = 1) -> None:
        self.metrics.inc("killgate_worker_metrics_errors_total", (op,), by=n,
                         label_names=("op",))

