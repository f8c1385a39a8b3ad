"""One /metrics for a `killgate serve --workers N` process group: the files.

Owns the per-worker snapshot files in the supervisor's private run directory (one per
worker slot, `slot-<i>.json`, written whole then renamed), publishing them every
`INTERVAL`, the carry-over that keeps a slot's counters monotonic when its worker is
replaced, and answering a scrape with the group's series (groupseries.py merges them).
Invariant: a slot's file is never behind anything a scrape has shown of that slot (the
answering worker writes its own file first, and shows the file's counts when it cannot).
Runs on the event loop, never on the request path; absent with one worker. Imports
telemetry only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from prometheus_client.metrics_core import Metric

from gateway.log import event
from gateway.tasks import cancel
from gateway.telemetry.exposition import Deferred, Family, Rows, as_metric, expand
from gateway.telemetry.groupfile import decode, encode
from gateway.telemetry.grouprender import Steps, drain, rendering
from gateway.telemetry.groupseries import Raw, add_counted, add_gauges, capture
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.requests import RequestStats

__all__ = ["INTERVAL", "STALE_AFTER", "WorkerMetrics"]

log = logging.getLogger("killgate.metrics")

INTERVAL = 1.0  # seconds between snapshots of a worker's series
STALE_AFTER = 3.0  # a snapshot older than this is a dead (or stopped) worker's: no gauges


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
        self.written: Raw | None = None  # what the slot's file holds (None: no file)
        self.published = 0  # publishes so far (attempted)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Continue the slot's counters from its last snapshot (in the group's histogram
        buckets), then publish now and every `interval`. Call before any request."""
        try:
            last = decode(self.path.read_bytes())[1]
            self.base = last.counted()
            self.written = last
            event(log, "worker_metrics_carried", slot=self.slot,
                  series=len(self.base.values) + len(self.base.entries))
            self._keep_buckets(last)
        except FileNotFoundError:
            for _, other in self.siblings():
                self._keep_buckets(other)
                break
        except (OSError, ValueError) as exc:
            self._error("read")
            event(log, "worker_metrics_unreadable", logging.WARNING, path=str(self.path),
                  error=str(exc), action="this slot's counters start from zero")
        self.publish()
        self._task = asyncio.create_task(self._run(), name="worker-metrics")

    def _keep_buckets(self, group: Raw) -> None:
        """Count in the boundaries the group counts in (a replacement started on a config
        whose telemetry.buckets were edited since): the siblings could not add this
        worker's histograms, nor it the slot's carried ones, and the group's counts
        would drop whenever this worker answers a scrape. Edits apply at the group's
        restart, as in one process."""
        if group.buckets is not None and group.buckets != self.stats.buckets:
            event(log, "worker_metrics_buckets_kept", logging.WARNING, slot=self.slot,
                  why="telemetry.buckets differ from the group's: they apply when the "
                      "group restarts")
            self.stats.buckets = group.buckets

    async def stop(self) -> None:
        await cancel(self._task)
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

    def publish(self, raw: Raw | None = None) -> Raw:
        """Write this worker's series (`raw`: taken before) whole (write, then rename);
        return them."""
        raw = self.own() if raw is None else raw
        self.published += 1
        tmp = self.dir / f".slot-{self.slot}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(encode(raw, self.slot))
            os.replace(tmp, self.path)
            self.written = raw
        except OSError as exc:
            self._error("write")
            event(log, "worker_metrics_write_failed", logging.WARNING, error=str(exc))
        return raw

    def shown(self, taken: tuple[Raw, int] | None = None) -> Raw:
        """This worker's series for a scrape: published first; when that failed, its
        counts as the slot's file holds them (what a sibling's scrape shows of this slot:
        fresher counts here would step back whenever a sibling answers), with its gauges.
        `taken`: the series taken earlier, and `published` then: written unless a publish
        came since (the file then holds newer counts: those are shown, never older ones)."""
        if taken is None:
            raw = self.publish()
        else:
            raw, seq = taken
            if seq == self.published:
                self.publish(raw)
        # (a copy also when `raw` is what was written: the caller sums the siblings' counts
        # into what this returns, and `written` must stay what the file holds, which the
        # next scrape shows when its write fails: the siblings' counts were shown twice)
        as_filed = self.written.counted() if self.written is not None else Raw()
        as_filed.buckets = raw.buckets
        add_gauges(as_filed, [raw])
        return as_filed

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
        """The group's series (and how many workers' gauges are in them): this worker's
        (`shown`), then every sibling's counts, and the gauges of the live ones."""
        return drain(self._merged(self.shown()))

    def _merged(self, raw: Raw) -> Steps[tuple[Raw, int]]:
        """`raw` with every sibling's counts, and the live ones' gauges: a yield per
        sibling."""
        fresh: list[Raw] = []
        skipped = 0
        for live, other in self.siblings():
            yield
            skipped += add_counted(raw, other)  # a dead worker's counts stay in the sum
            if live:
                fresh.append(other)
        add_gauges(raw, fresh)
        if skipped:
            self._error("buckets", skipped)
        return raw, 1 + len(fresh)

    def families(self) -> list[Family]:
        """The group's families for /metrics: this worker's series taken now (on the loop,
        at once); its file written, the siblings' read and merged and the families made
        later, in the page's slices (a `Deferred`: at 600 label sets, 2 workers, ~30 ms
        of the loop in one go otherwise)."""
        taken = (self.own(), self.published)
        return [Deferred(partial(self._families, taken))]

    def _families(self, taken: tuple[Raw, int]) -> Iterator[Rows | Metric | None]:
        yield None
        raw, workers = yield from self._merged(self.shown(taken))
        yield None
        fams, skipped = yield from rendering(raw, self.stats, workers)
        if skipped:
            self._error("buckets", skipped)
        for f in fams:
            if isinstance(f, Deferred):
                yield from f.make()
            else:
                yield f

    def collect(self) -> Iterator[Metric]:
        """prometheus_client's collector protocol: the group's series."""
        for f in expand(self.families()):
            yield as_metric(f)

    def _error(self, op: str, n: int = 1) -> None:
        self.metrics.inc("killgate_worker_metrics_errors_total", (op,), by=n,
                         label_names=("op",))

