"""What one /metrics scrape costs the event loop the data plane runs on.

In process (no sockets): one process's series with routes x versions x status codes
(request series: one label set per (route, version, code), three histograms each; split
gauges per route), then, best of `--repeat` rounds, in CPU time of this thread:

  library text / OpenMetrics   prometheus_client's render of the whole page in one call
                               (what GET /metrics did on the loop before, in one go)
  first step                   the page's values taken (Metrics.page: the one step that
                               must see the loop's counters at one instant)
  whole page                   our writer, every part (telemetry/exposition.py)
  longest step                 the longest the loop is held by one step when the page is
                               driven as admin/coalesce.py drives it (steps of SLICE)

Also checks that both writers' bytes are equal.

    .venv/bin/python benchmarks/metrics_render.py [--routes 100 --versions 2 --codes 200,404,500]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from gateway.admin.coalesce import SLICE, sliced
from gateway.config_telemetry import BucketsConfig
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import RequestRecord
from gateway.telemetry.requests import RequestStats

OM = "application/openmetrics-text; version=1.0.0"


def series(routes: int, versions: int, codes: list[int]) -> Metrics:
    names = [f"v{v}" for v in range(versions)]
    split = {f"route{r}": {n: 100.0 / versions for n in names} for r in range(routes)}
    m = Metrics()
    stats = RequestStats(BucketsConfig(), lambda: split)
    m.source(stats)
    for r in range(routes):
        for n in names:
            for status in codes:
                rec = RequestRecord(0.0)
                rec.route, rec.version, rec.decision, rec.stable = f"route{r}", n, "weighted", "v0"
                rec.status, rec.end, rec.upstream, rec.first_byte = status, 0.05, 0.04, 0.01
                stats.done(rec)
    return m


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best * 1000


def steps(m: Metrics, accept: str | None) -> tuple[float, int]:
    """(the longest step's CPU ms, steps) of one page driven in steps of SLICE."""
    t0 = time.thread_time()
    parts, _ = m.page(accept)
    longest, n = time.thread_time() - t0, 1
    gen = sliced(parts)
    while True:
        t0 = time.thread_time()
        try:
            next(gen)
        except StopIteration:
            longest = max(longest, time.thread_time() - t0)
            return longest * 1000, n + 1
        longest = max(longest, time.thread_time() - t0)
        n += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=100)
    ap.add_argument("--versions", type=int, default=2)
    ap.add_argument("--codes", default="200,404,500")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    m = series(a.routes, a.versions, [int(c) for c in a.codes.split(",")])
    text, _ = m.exposition(None)
    assert text == generate_latest(m.registry), "our text differs from the library's"
    assert m.exposition(OM)[0] == openmetrics(m.registry), "our OpenMetrics differs"
    lines = text.count(b"\n")
    print(f"{a.routes} routes x {a.versions} versions x {a.codes}: {lines:,} "
          f"lines, {len(text) / 1e6:.1f} MB; CPU ms, best of {a.repeat}")
    print("| | text | OpenMetrics |")
    print("|---|---|---|")
    lib = (cpu_ms(lambda: generate_latest(m.registry), a.repeat),
           cpu_ms(lambda: openmetrics(m.registry), a.repeat))
    first = (cpu_ms(lambda: m.page(None), a.repeat), cpu_ms(lambda: m.page(OM), a.repeat))
    whole = (cpu_ms(lambda: m.exposition(None), a.repeat),
             cpu_ms(lambda: m.exposition(OM), a.repeat))
    held = [min(steps(m, acc) for _ in range(a.repeat)) for acc in (None, OM)]
    print(f"| library, one call (the loop held, before) | {lib[0]:.1f} | {lib[1]:.1f} |")
    print(f"| first step: the values taken | {first[0]:.1f} | {first[1]:.1f} |")
    print(f"| whole page, our writer | {whole[0]:.1f} | {whole[1]:.1f} |")
    print(f"| longest step, steps of {SLICE * 1000:.0f} ms (the loop held, now) | "
          f"{held[0][0]:.1f} ({held[0][1]} steps) | {held[1][0]:.1f} ({held[1][1]} steps) |")


if __name__ == "__main__":
    main()
