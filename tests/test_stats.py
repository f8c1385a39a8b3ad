"""Per-process window counts (gateway/domain/stats.py): the sliding window and the series."""

from __future__ import annotations

from gateway.domain.stats import WindowStats


def test_series_sums_seconds_into_steps_and_leaves_out_old_and_empty_ones() -> None:
    w = WindowStats(keep_seconds=60)
    for sec, err, lat in ((100.2, False, 0.001), (101.9, True, 0.2), (104.0, False, 0.001),
                          (106.5, False, 0.001), (140.0, False, 0.001)):
        w.record("iris", "v1", err, lat, sec)
    w.record("iris", "v2", False, 0.001, 141.0)
    got = w.series(seconds=40, step=5, now=141.5)
    v1 = got[("iris", "v1")]
    # 100-104 are one bucket (100), 106 the next; 140 its own; nothing older than 101.5 - 1
    assert sorted(v1) == [100, 105, 140]
    assert v1[100].requests == 2 and v1[100].errors == 1  # 100.2 fell out of the window
    assert v1[105].requests == 1 and v1[140].requests == 1
    assert got[("iris", "v2")][140].requests == 1
    assert sum(v1[100].hist) == 2


def test_window_still_sums_the_last_seconds() -> None:
    w = WindowStats()
    for t in (10.0, 11.0, 12.0):
        w.record("r", "v", t == 12.0, 0.01, t)
    s = w.window("r", 1, now=12.5)["v"]  # seconds 11 and 12 overlap [11.5, 12.5]
    assert s.requests == 2 and s.errors == 1
