"""Canary analysis behind the outcome fan-out (gateway/wiring/dataplane.py, `Outcomes`):
"ok" outcomes held and handed to `RolloutDriver.served` a batch at a time give the same
fleet samples, and so the same verdicts, as telling the driver of each outcome as it comes,
across a reload that changes which routes are analysed. Real drivers and a real (file)
store; time is a test clock."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from gateway.configfile import load_config
from gateway.control.rollout import RolloutDriver
from gateway.control.table import TableHolder
from gateway.domain.analysis import analyze
from gateway.state.local import LocalStore
from gateway.wiring.dataplane import Batched, Outcomes
from tests.conftest import write_config

ANALYSIS = "  analysis: {window: 20s, interval: 1s, min_requests: 30}\n"


def routes(analysed: set[str]) -> str:
    out = ""
    for name in ("r", "s", "quiet"):
        out += (f"- name: {name}\n  match: {{path_prefix: /{name}}}\n  stable: v1\n"
                + (ANALYSIS if name in analysed else "")
                + "  versions:\n"
                '    - {name: v1, url: "http://127.0.0.1:9", weight: 80}\n'
                '    - {name: v2, url: "http://127.0.0.1:9", weight: 20}\n')
    return out


KEYS = [(r, v) for r in ("r", "s", "quiet", "gone") for v in ("v1", "v2")]


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Fleet:
    """What the driver reads of `Sync`: its store (one per driver: each is its own fleet)."""

    def __init__(self, path: Path) -> None:
        self.store = LocalStore(path)


def driver(tmp: Path, name: str, holder: TableHolder, clock: Clock) -> RolloutDriver:
    return RolloutDriver(holder, Fleet(tmp / f"{name}.json"), "a",  # type: ignore[arg-type]
                         clock=clock)


async def test_held_oks_give_the_same_samples_and_verdicts_as_each_told(tmp_path: Path) -> None:
    """Random outcomes, mostly "ok" (the canary of `r` fails more), to one driver told of
    each and one behind `Outcomes`: at every read, the same fleet samples of every analysed
    route and so the same verdict; a reload midway stops analysing `r` and starts `quiet`."""
    first = load_config(write_config(tmp_path, routes({"r", "s"}), name="first.yaml"))
    second = load_config(write_config(tmp_path, routes({"s", "quiet"}), name="second.yaml"))
    rnd = random.Random(7)
    clock = Clock(1000.0)
    each_holder, batched_holder = TableHolder(first), TableHolder(first)
    each = driver(tmp_path, "each", each_holder, clock)
    batched = driver(tmp_path, "batched", batched_holder, clock)
    fan = Outcomes(batched, clock=clock)
    assert fan.batched == (batched,) and isinstance(batched, Batched)
    verdicts: Counter[str] = Counter()
    for i in range(6000):
        clock.t += rnd.choice((0.0, 0.0, 0.001, 0.01, 0.3)) if i != 1500 else -2.5
        route, version = rnd.choice(KEYS)
        bad = 0.3 if (route, version) == ("r", "v2") else 0.03
        kind = rnd.choice(("5xx", "connect")) if rnd.random() < bad else "ok"
        latency = rnd.uniform(0.001, 0.2 if version == "v1" else 0.4)
        each.outcome(route, version, kind, latency)
        fan.outcome(route, version, kind, latency)
        if i == 3000:  # a reload: the loop refreshes the analysed routes of both
            each_holder.set_config(second)
            batched_holder.set_config(second)
            each._refresh_routes()
            batched._refresh_routes()
            assert not fan._held  # (what was held went to the old set of routes)
        if i % 151 == 0:
            for rc in each_holder.loaded.config.routes:
                if rc.analysis is None:
                    continue
                told = await each._fleet_samples(rc)
                held = await batched._fleet_samples(rc)  # (hands over what is held)
                assert held == told, (i, rc.name)
                assert told is not None and held is not None
                v = analyze(told.get("v2"), told.get("v1"), rc.analysis, rc.analysis.window)
                assert analyze(held.get("v2"), held.get("v1"), rc.analysis,
                               rc.analysis.window) == v
                verdicts[v.status] += 1
            assert not fan._held
    # (the sequence reached real verdicts both ways: the comparison means something)
    assert verdicts["failed"] and verdicts["passed"], verdicts
    fan.flush()
    assert each.stats.buckets(9999, clock.t) == batched.stats.buckets(9999, clock.t)
    assert {k[0] for k in each.stats.buckets(9999, clock.t)} == {"r", "s", "quiet"}


def test_oks_of_routes_without_analysis_are_not_counted(tmp_path: Path) -> None:
    clock = Clock(50.0)
    rollout = driver(tmp_path, "d", TableHolder(load_config(write_config(tmp_path,
                                                                           routes({"r"})))),
                     clock)
    fan = Outcomes(rollout, clock=clock)
    for route in ("r", "s", "r"):
        fan.outcome(route, "v1", "ok", 0.01)
    assert fan._held
    fan.flush()
    assert set(rollout.stats.buckets(10, 50.0)) == {("r", "v1")}
    assert rollout.stats.window("r", 10, 50.0)["v1"].requests == 2
