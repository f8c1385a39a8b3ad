"""The outcome fan-out (gateway/wiring/dataplane.py, `Outcomes`): "ok" outcomes held and
handed over a batch at a time give the same ejections (outlier detection) and the same
counts (live traffic) as telling each observer of each outcome as it comes. Real
observers; time is a test clock."""

from __future__ import annotations

import random
from pathlib import Path

from gateway.configfile import load_config
from gateway.control.probes import HealthMonitor
from gateway.control.table import TableHolder
from gateway.control.traffic import LiveTraffic
from gateway.state.local import LocalStore
from gateway.telemetry.metrics import Metrics
from gateway.wiring.dataplane import Batched, Outcomes
from tests.conftest import write_config

ROUTES = """\
- name: r
  match: {path_prefix: /r}
  stable: v1
  outlier: {consecutive_5xx: 3, consecutive_gateway_failures: 2, base_ejection: 2s}
  versions:
    - {name: v1, url: "http://127.0.0.1:9", weight: 40}
    - {name: v2, url: "http://127.0.0.1:9", weight: 30}
    - {name: v3, url: "http://127.0.0.1:9", weight: 30}
- name: s
  match: {path_prefix: /s}
  stable: v1
  outlier: {consecutive_5xx: 2, consecutive_gateway_failures: 2, base_ejection: 1s}
  versions:
    - {name: v1, url: "http://127.0.0.1:9", weight: 50}
    - {name: v2, url: "http://127.0.0.1:9", weight: 50}
- name: quiet
  match: {path_prefix: /quiet}
  stable: v1
  versions:
    - {name: v1, url: "http://127.0.0.1:9", weight: 100}
"""
KEYS = [("r", "v1"), ("r", "v2"), ("r", "v3"), ("s", "v1"), ("s", "v2"), ("quiet", "v1"),
        ("gone", "v1")]
KINDS = ["ok"] * 8 + ["5xx", "5xx", "connect", "error", "not_ready", "overflow"]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Told:
    """An observer that is not `Batched`: told of every outcome."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, float]] = []

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        self.seen.append((route, version, kind, latency))


async def monitor(tmp: Path, clock: Clock) -> HealthMonitor:
    health = HealthMonitor(TableHolder(load_config(write_config(tmp, ROUTES))), Metrics(),
                           clock=clock)
    await health.configure(health.holder.loaded.config)  # (no probes: outlier detection)
    return health


def ejections(h: HealthMonitor) -> dict[tuple[str, str], tuple[object, ...]]:
    return {k: (rec.ejections, rec.ejected_until, tuple(rec.transitions))
            for k, rec in h.records.items()}


async def test_held_oks_eject_at_the_same_request_as_each_told(tmp_path: Path) -> None:
    """Random outcomes, mostly "ok", to one monitor told of each and one behind `Outcomes`:
    after every outcome, the same ejections, the same versions out, the same counter; the
    streaks agree once the held outcomes are handed over."""
    for seed in range(4):
        rnd = random.Random(seed)
        clock, wall = Clock(100.0), Clock(5000.0)
        each, batched = await monitor(tmp_path, clock), await monitor(tmp_path, clock)
        told = Told()
        fan = Outcomes(told, batched, clock=wall)
        assert fan.batched == (batched,) and fan.each == (told,)
        tripped = 0
        for i in range(3000):
            clock.t += rnd.choice((0.0, 0.001, 0.05, 0.4))
            wall.t += rnd.choice((0.0, 0.001, 0.05, 0.4, -1.5 if i % 500 == 0 else 0.2))
            route, version = rnd.choice(KEYS)
            # runs of one version: streaks of failures long enough to trip
            kind = rnd.choice(KINDS) if i % 40 < 30 else rnd.choice(("5xx", "connect", "ok"))
            each.outcome(route, version, kind, 0.01)
            fan.outcome(route, version, kind, 0.01)
            assert ejections(batched) == ejections(each), (seed, i)
            assert batched._published == each._published
            if i % 97 == 0:
                fan.flush()
                assert {k: (r.fivexx_streak, r.gateway_fail_streak)
                        for k, r in batched.records.items()} == {
                    k: (r.fivexx_streak, r.gateway_fail_streak)
                    for k, r in each.records.items()}
        tripped = sum(rec.ejections for rec in each.records.values())
        assert tripped >= 3, tripped  # (the sequence did eject: the comparison means something)
        assert batched.metrics.render() == each.metrics.render()
        assert len(told.seen) == 3000  # told of each, "ok" or not
        await each.stop()
        await batched.stop()


async def test_held_oks_are_counted_as_each_told(tmp_path: Path) -> None:
    """Live traffic behind `Outcomes` has the same buckets as one told of each outcome:
    seconds that change mid-batch, a clock that steps back, several routes interleaved,
    more than a batch's worth in one second, failures between "ok"s."""
    rnd = random.Random(3)
    clock = Clock(1000.0)
    store = LocalStore(tmp_path / "state.json")
    each = LiveTraffic(store, "a", step=1, window=900, clock=clock)
    batched = LiveTraffic(store, "a", step=1, window=900, clock=clock)
    fan = Outcomes(batched, clock=clock)
    for i in range(6000):
        if i < 4000:
            clock.t += rnd.choice((0.0, 0.0, 0.001, 0.3)) if i != 3000 else -2.5
            route, version = rnd.choice(KEYS)
            kind = rnd.choice(KINDS)
        else:  # then more than a batch's worth of one version in one second
            clock.t += 0.0001
            route, version, kind = "r", "v1", "ok"
        latency = rnd.uniform(0.0, 3.0)
        each.outcome(route, version, kind, latency)
        fan.outcome(route, version, kind, latency)
        if i % 401 == 0:  # a read hands over what is held
            assert batched._blob() == each._blob()
    assert batched._blob() == each._blob()
    assert sum(b[1] for ring in each.stats.buckets(999, clock.t).values() for b in ring) == 6000


async def test_a_view_reads_what_is_held(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    traffic = LiveTraffic(LocalStore(tmp_path / "state.json"), "a", step=1, window=10,
                          clock=clock)
    fan = Outcomes(traffic, clock=clock)
    for _ in range(3):
        fan.outcome("iris", "v1", "ok", 0.002)
    assert fan._held  # (held: not yet in the counts)
    clock.t = 1001.5
    assert await traffic.publish()
    view = await traffic.view()
    i = view["t"].index(1000)
    assert view["routes"]["iris"]["v1"]["requests"][i] == 3
    assert not fan._held


def test_the_serving_observers_are_batched() -> None:
    assert isinstance(LiveTraffic(None, "a"), Batched)  # type: ignore[arg-type]
    assert not isinstance(Told(), Batched)
    nobody = Outcomes(clock=Clock(1.0))
    nobody.outcome("r", "v1", "ok", 0.1)  # (no batched observer: nothing is held)
    assert not nobody._held


async def test_pinned_outcomes_reach_all_but_the_judges_after_what_is_held(
        tmp_path: Path) -> None:
    """A pinned answer's outcome goes to live traffic, not to outlier detection nor canary
    analysis (`judges`: a pin is the client's choice); what was held goes first, so every
    observer sees the outcomes in order."""
    clock = Clock(100.0)
    health, judge, told = await monitor(tmp_path, clock), Told(), Told()
    fan = Outcomes(health, judge, told, clock=Clock(5000.0), judges=(health, judge))
    route, version = KEYS[0]
    fan.outcome(route, version, "ok", 0.01)  # held for the batched monitor
    for _ in range(20):  # (enough 5xx in a row to eject it, told as any other)
        fan.pinned(route, version, "5xx", 0.02)
    assert not fan._held  # (handed over before the pinned outcomes)
    assert told.seen == [(route, version, "ok", 0.01)] + [(route, version, "5xx", 0.02)] * 20
    assert judge.seen == [(route, version, "ok", 0.01)]
    assert (route, version) not in health._streaking
    assert all(rec.ejections == 0 for rec in health.records.values())
