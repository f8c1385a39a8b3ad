"""What one /metrics for `--workers N` costs a worker, side by side in one run.

In process (no sockets; machine noise cannot blur a ratio measured this way): a worker's
series with many label sets (routes x versions x decisions x status codes, three
histograms each), then, best of `--repeat` rounds:

  scrape 1w     rendering /metrics of one process (what `--workers 1` does; no files)
  publish       one snapshot: the raw series, encoded, written and renamed (each worker,
                every INTERVAL, 1 s)
  scrape Nw     rendering the group's /metrics: own snapshot + reading and merging N-1
                siblings' files

Prints µs per call and each as a multiple of `scrape 1w`, and the share of one core the
periodic publish takes (publish / INTERVAL).

    .venv/bin/python benchmarks/worker_metrics.py [--routes 4 --workers 4 --repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from gateway.config_telemetry import BucketsConfig
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.requests import RequestStats
from gateway.telemetry.workers import INTERVAL, WorkerMetrics


def worker_series(routes: int) -> tuple[Metrics, RequestStats]:
    m = Metrics()
    stats = RequestStats(BucketsConfig())
    m.source(stats)
    for r in range(routes):
        for v in range(3):
            for decision in ("weighted", "sticky", "failover"):
                for status in (200, 400, 404, 500, 503):
                    rec = RequestRecord(0.0)
                    rec.route, rec.version, rec.decision = f"route{r}", f"v{v}", decision
                    rec.stable, rec.status, rec.end, rec.upstream = "v0", status, 0.05, 0.04
                    stats.done(rec)
    for name in ("killgate_failovers_total", "killgate_retries_total"):
        m.inc(name, by=7)
    m.set("killgate_state_generation", 12)
    m.set("killgate_inflight_requests", 3)
    return m, stats


def best(fn: object, number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6  # type: ignore[arg-type]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=4)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=50)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        group = [WorkerMetrics(*worker_series(a.routes), run, i) for i in range(a.workers)]
        for w in group:
            w.start()
        me = group[0]
        single = me.metrics
        reg = CollectorRegistry(auto_describe=False)
        reg.register(me)
        samples = sum(len(f.samples) for f in single.collect())
        size = me.path.stat().st_size
        one = best(lambda: generate_latest(single.registry), a.number, a.repeat)
        pub = best(me.publish, a.number, a.repeat)
        grp = best(lambda: generate_latest(reg), a.number, a.repeat)
        for w in group:
            await w.stop()
    print(f"{samples} samples per worker, snapshot {size / 1024:.0f} KiB, "
          f"{a.workers} workers, best of {a.repeat} x {a.number}")
    print("| call | µs | x scrape 1w |")
    print("|---|---|---|")
    for name, us in (("scrape 1w", one), ("publish (every 1 s)", pub),
                     (f"scrape {a.workers}w (merge)", grp)):
        print(f"| {name} | {us:,.0f} | {us / one:.2f} |")
    print(f"periodic publish: {pub / 1e6 / INTERVAL * 100:.2f} % of one core per worker")


if __name__ == "__main__":
    asyncio.run(main())
