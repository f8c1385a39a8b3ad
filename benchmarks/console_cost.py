"""What the operator console's live charts cost (issue 16).

Side by side in one run: (1) the per-request recording (`LiveTraffic.outcome`: one more
observer on every exchange) against a bare observer call and against the canary analysis's
own recording of the same exchange, in ns per call; (2) one instance's published blob
(bytes) and the fleet view behind `GET /v1/traffic` (encode, decode and merge, in ms) for a
fleet of N instances with R routes of V versions, every 5-second bucket of the 5-minute
window holding traffic (the largest the blobs get).

    .venv/bin/python benchmarks/console_cost.py [--instances 4] [--routes 10] [--versions 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.control.traffic import STATS_KEY, LiveTraffic
from gateway.domain import traffic
from gateway.domain.stats import WindowStats


class _Blobs:
    """The fleet's published blobs, as the store hands them back (already parsed JSON)."""

    def __init__(self) -> None:
        self.blobs: list[dict] = []

    async def put_stats(self, route: str, instance: str, blob: dict) -> None: ...

    async def get_stats(self, route: str) -> list[dict]:
        assert route == STATS_KEY
        return self.blobs

    async def drop_stats(self, route: str, instances: list[str]) -> None: ...


class _Nothing:
    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        return None


def per_call(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for i in range(n):
            fn("iris", "v1" if i % 10 else "v2", "ok", 0.004)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--routes", type=int, default=10)
    ap.add_argument("--versions", type=int, default=3)
    ap.add_argument("--calls", type=int, default=200_000)
    a = ap.parse_args()

    live = LiveTraffic(_Blobs(), "bench")
    rollout_stats = WindowStats()
    empty = per_call(_Nothing().outcome, a.calls)
    mine = per_call(live.outcome, a.calls)
    theirs = per_call(lambda r, v, k, lat: rollout_stats.record(r, v, k != "ok", lat,
                                                                time.time()), a.calls)
    print(f"## per exchange (best of 5 x {a.calls} calls)")
    print("| call | ns/call | vs a bare observer call |")
    print("|---|---|---|")
    for name, ns in (("bare observer call", empty), ("LiveTraffic.outcome (console)", mine),
                     ("canary analysis recording", theirs)):
        print(f"| {name} | {ns:.0f} | {ns / empty:.1f}x |")

    # every instance with a full window: every bucket of every route and version busy
    now = 1_000_000.0
    store = _Blobs()
    for inst in range(a.instances):
        stats = WindowStats(keep_seconds=400, bucket_s=5)
        for sec in range(int(now) - 305, int(now)):
            for r in range(a.routes):
                for v in range(a.versions):
                    stats.record(f"route-{r}", f"v{v}", sec % 7 == 0, 0.002 * (1 + v), sec + 0.5)
        blob = traffic.encode(f"i{inst}", now, 5, stats.buckets(305, now))
        store.blobs.append(json.loads(json.dumps(blob)))
        if inst == 0:
            t0 = time.perf_counter()
            for _ in range(10):
                traffic.encode("x", now, 5, stats.buckets(305, now))
            publish_ms = (time.perf_counter() - t0) / 10 * 1000
    clock = [now]
    viewer = LiveTraffic(store, "i0", clock=lambda: clock[0])
    viewer.stats = stats  # (its own counts: a full window too)

    def timed(rounds: int) -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            clock[0] += 2.0  # past the view's 1-second reuse
            asyncio.run(viewer.view())
        return (time.perf_counter() - t0) / rounds * 1000

    viewer._decoded.clear()
    first = timed(1)  # every blob decoded
    steady = timed(10)  # blobs unchanged since: decoded once, merged each time
    print()
    print(f"## GET /v1/traffic: {a.instances} instances x {a.routes} routes x {a.versions} "
          "versions, every bucket busy")
    print("| what | cost |")
    print("|---|---|")
    print(f"| one instance's blob (published every 5 s) | {len(json.dumps(store.blobs[0])) / 1024:.1f} KiB, "
          f"{publish_ms:.1f} ms to build |")
    print(f"| a view, every blob new (decode + merge) | {first:.1f} ms |")
    print(f"| a view, blobs unchanged (merge only) | {steady:.1f} ms |")
    print("| a view asked again within 1 s | served from the last one |")


if __name__ == "__main__":
    main()
