"""Health transitions (pure): hysteresis for active checks, growing ejections for passive."""

from __future__ import annotations

from gateway.domain.health import OutlierPolicy, VersionHealth


def test_active_checks_have_hysteresis() -> None:
    h = VersionHealth(active=True)
    assert not h.probe(False, 0, healthy_threshold=2, unhealthy_threshold=3)
    assert not h.probe(False, 1, 2, 3)
    assert h.serving(1)
    assert h.probe(False, 2, 2, 3)  # third consecutive failure
    assert not h.serving(2)
    assert not h.probe(True, 3, 2, 3)  # one pass is not enough
    assert not h.probe(False, 4, 2, 3)  # a flap resets the streak
    assert not h.probe(True, 5, 2, 3)
    assert h.probe(True, 6, 2, 3)
    assert h.serving(6)


def test_single_flap_changes_nothing() -> None:
    h = VersionHealth(active=True)
    for t in range(20):
        assert not h.probe(t % 2 == 0, t, 2, 3)
    assert h.serving(20)


def test_passive_ejection_grows_with_each_ejection() -> None:
    p = OutlierPolicy(consecutive_gateway_failures=3, consecutive_5xx=5, base_ejection=10,
                      max_ejection=25)
    h = VersionHealth()
    assert not h.traffic("connect", 0, p) and not h.traffic("connect", 0, p)
    assert h.traffic("connect", 0, p)
    assert not h.serving(9.9) and h.serving(10.0)
    for _ in range(3):
        h.traffic("error", 11, p)
    assert h.ejected_until == 31  # 2 x 10
    for _ in range(3):
        h.traffic("connect", 40, p)
    assert h.ejected_until == 65  # capped at 25


def test_5xx_and_unreachable_are_counted_apart() -> None:
    p = OutlierPolicy(consecutive_gateway_failures=3, consecutive_5xx=3)
    h = VersionHealth()
    for kind in ("5xx", "connect", "5xx", "connect", "ok", "5xx", "5xx"):
        assert not h.traffic(kind, 0, p)
    assert h.traffic("5xx", 0, p)
