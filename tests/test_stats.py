"""Per-process window counts (gateway/domain/stats.py): the sliding window and the series."""

from __future__ import annotations

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
