"""Per-process window counts (gateway/domain/stats.py): the sliding window and the series."""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from typing import Any

from gateway.domain import stats as stats_mod
from gateway.domain.analysis import LATENCY_BOUNDS_MS
from gateway.domain.stats import WindowStats


def test_buckets_of_several_seconds_and_the_ones_that_overlap_the_window() -> None:
    w = WindowStats(keep_seconds=60, bucket_s=5)
    for sec, err, lat in ((96.0, False, 0.001), (100.2, False, 0.001), (101.9, True, 0.2),
                          (104.0, False, 0.001), (106.5, False, 0.001), (140.0, False, 0.001)):
        w.record("iris", "v1", err, lat, sec)
    w.record("iris", "v2", False, 0.001, 141.0)
    got = w.buckets(seconds=40, now=141.5)
    # 100-104 are one bucket; 95 ends before 101.5 (141.5 - 40): left out
    assert [(b[0], b[1], b[2]) for b in got[("iris", "v1")]] == [(100, 3, 1), (105, 1, 0),
                                                                  (140, 1, 0)]
    assert sum(got[("iris", "v1")][0][3]) == 3
    assert [b[0] for b in got[("iris", "v2")]] == [140]
    # the ring keeps what is younger than keep_seconds only
    w.record("iris", "v1", False, 0.001, 170.0)
    assert [b[0] for b in w.buckets(seconds=999, now=170.5)[("iris", "v1")]] == [140, 170]


def test_window_still_sums_the_last_seconds() -> None:
    w = WindowStats()
    for t in (10.0, 11.0, 12.0):
        w.record("r", "v", t == 12.0, 0.01, t)
    s = w.window("r", 1, now=12.5)["v"]  # seconds 11 and 12 overlap [11.5, 12.5]
    assert s.requests == 2 and s.errors == 1


def _one_at_a_time(keep: int, bucket: int, records: list[tuple[str, bool, float, float]],
                   ) -> dict[tuple[str, str], list[list[Any]]]:
    """The rings as bucketing each request as it comes makes them (the reference)."""
    rings: dict[tuple[str, str], deque[list[Any]]] = {}
    for version, error, latency, now in records:
        ring = rings.setdefault(("r", version), deque())
        sec = int(now) // bucket * bucket
        if not ring or ring[-1][0] != sec:
            ring.append([sec, 0, 0, [0] * (len(LATENCY_BOUNDS_MS) + 1)])
            while ring and ring[0][0] <= sec - keep:
                ring.popleft()
        b = ring[-1]
        b[1] += 1
        b[2] += error
        b[3][bisect_left(LATENCY_BOUNDS_MS, latency * 1000.0)] += 1
    return {k: [b for b in ring if b[1]] for k, ring in rings.items()}


def test_batched_buckets_equal_bucketing_each_request_as_it_comes() -> None:
    """record() only appends; what it files later (at a bucket's end, a read, or _BATCH
    waiting) is what filing each request at once gave: boundaries (le), errors, eviction,
    several versions, a clock that steps back, and reads between records."""
    rnd = random.Random(7)
    bounds_s = [b / 1000.0 for b in LATENCY_BOUNDS_MS]
    records: list[tuple[str, bool, float, float]] = []
    now = 1000.0
    for i in range(stats_mod._BATCH * 3):
        now += rnd.choice((0.0, 0.0, 0.001, 0.3, 2.5)) if i != 5000 else -7.0  # one step back
        latency = rnd.choice(bounds_s) if i % 3 == 0 else rnd.uniform(0.0, 40.0)
        records.append((rnd.choice(("v1", "v1", "v2")), rnd.random() < 0.1, latency, now))
    for keep, bucket in ((60, 5), (900, 1)):
        w = WindowStats(keep_seconds=keep, bucket_s=bucket)
        for n, (version, error, latency, at) in enumerate(records):
            w.record("r", version, error, latency, at)
            if n % 997 == 0:
                w.window("r", 10, at)  # a read files what waits, mid-bucket
            assert len(w._pending["r"][version][0]) < stats_mod._BATCH
        got = w.buckets(seconds=10**9, now=now)
        assert got == _one_at_a_time(keep, bucket, records)
        assert sum(b[1] for ring in got.values() for b in ring) > 0


def test_forget_drops_what_waits_too() -> None:
    w = WindowStats()
    w.record("r", "v", True, 0.01, 10.0)
    w.forget("r")
    w.record("s", "v", False, 0.01, 10.2)
    assert list(w.buckets(60, 10.5)) == [("s", "v")]
    assert w.window("r", 60, 10.5) == {}


def test_record_ok_counts_as_one_record_per_latency() -> None:
    rnd = random.Random(11)
    one, many = WindowStats(keep_seconds=60, bucket_s=5), WindowStats(keep_seconds=60, bucket_s=5)
    now = 1000.0
    for _ in range(300):
        now += rnd.choice((0.0, 0.4, 3.0, -6.0))
        version = rnd.choice(("v1", "v2"))
        latencies = [rnd.uniform(0.0, 40.0) for _ in range(rnd.randrange(1, 40))]
        for latency in latencies:
            one.record("r", version, False, latency, now)
        many.record_ok("r", version, latencies, now)
        if rnd.random() < 0.1:
            one.record("r", version, True, 0.5, now)
            many.record("r", version, True, 0.5, now)
    assert many.buckets(10**9, now) == one.buckets(10**9, now)
    assert many.window("r", 30, now) == one.window("r", 30, now)


def test_counts_from_before_the_clock_stepped_back_leave_the_window() -> None:
    """After a wall-clock step back (NTP), the counts stamped before it lie in the future:
    they were summed into every window for as long as the step, so a canary failing now
    was judged with the good minutes before the step (and passed)."""
    s = WindowStats()
    for i in range(100):
        s.record("r", "v2", False, 0.01, 10_000.0 + i / 10)
    for i in range(10):
        s.record("r", "v2", True, 0.01, 6_400.0 + i / 10)  # an hour earlier, by the clock
    got = s.window("r", 60, 6_401.0)["v2"]
    assert (got.requests, got.errors) == (10, 10)
    assert [b[0] for b in s.buckets(60, 6_401.0)[("r", "v2")]] == [6_400]


def test_a_version_no_longer_counted_leaves_once_its_buckets_are_older_than_keep() -> None:
    """revroll5: each (route, version) a process counted kept its ring (up to `keep`
    buckets) for the life of the process, and `window` listed it: with a new version name
    per deployment, memory and each round's published blob grew with every release."""
    w = WindowStats(keep_seconds=60)
    for i in range(60):
        w.record("r", "v1", False, 0.01, 1000.0 + i)
    for i in range(200):  # v1 retired: v2 serves from now on
        w.record("r", "v2", False, 0.01, 1060.0 + i)
    assert list(w.window("r", 60, 1260.0)) == ["v2"]
    assert set(w._rings) == {("r", "v2")} and set(w._pending["r"]) == {"v2"}
    # what is younger than keep stays, also for a version not counted this second
    w.record("r", "v1", False, 0.01, 1261.0)
    w.record("r", "v2", False, 0.01, 1300.0)
    assert w.window("r", 60, 1300.5)["v1"].requests == 1
