"""The console's live traffic (gateway/control/traffic.py) over a real local state store:
what each instance publishes, and the fleet view merged from it. Time is a test clock."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.control.traffic import STATS_KEY, LiveTraffic
from gateway.state.local import LocalStore


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def pair(tmp: Path, t: float = 1000.0) -> tuple[LocalStore, Clock, LiveTraffic, LiveTraffic]:
    store = LocalStore(tmp / "state.json")
    clock = Clock(t)
    return (store, clock, LiveTraffic(store, "a", step=1, window=10, clock=clock),
            LiveTraffic(store, "b", step=1, window=10, clock=clock))


async def test_the_view_sums_every_instance(tmp_path: Path) -> None:
    _, clock, a, b = pair(tmp_path)
    for _ in range(3):
        a.outcome("iris", "v1", "ok", 0.002)
    b.outcome("iris", "v1", "5xx", 0.002)
    b.outcome("iris", "v2", "connect", 0.4)
    clock.t = 1001.5
    assert await a.publish() and await b.publish()
    view = await a.view()
    assert view["scope"] == "fleet" and view["instances"] == ["a", "b"] and view["silent"] == []
    i = view["t"].index(1000)
    v1, v2 = view["routes"]["iris"]["v1"], view["routes"]["iris"]["v2"]
    assert v1["requests"][i] == 4 and v1["errors"][i] == 1 and v1["error_rate"][i] == 0.25
    assert v2["requests"][i] == 1 and v2["error_rate"][i] == 1.0 and v2["p99_ms"][i] == 500.0
    assert view["end"] == 1001  # the bucket of 1001 is still filling


async def test_this_instance_counts_fresh_others_as_last_published(tmp_path: Path) -> None:
    _, clock, a, b = pair(tmp_path)
    assert await b.publish()
    clock.t = 1001.2
    a.outcome("iris", "v1", "ok", 0.001)  # in the 1001 bucket: not whole yet anywhere
    clock.t = 1002.4
    a.outcome("iris", "v1", "ok", 0.001)
    assert await b.publish()  # b is known up to 1002.4: bucket 1001 is whole for all
    view = await a.view()  # a never published: its own counts are read from memory
    assert view["end"] == 1002
    assert view["routes"]["iris"]["v1"]["requests"][-1] == 1


async def test_a_silent_instance_keeps_its_past_and_no_longer_holds_the_end(tmp_path: Path) -> None:
    _, clock, a, b = pair(tmp_path)
    b.outcome("iris", "v1", "ok", 0.001)
    clock.t = 1001.1
    assert await b.publish()  # and then b goes quiet
    clock.t = 1006.3
    view = await a.view()
    assert view["instances"] == ["a"] and view["silent"] == ["b"]
    assert view["end"] == 1006
    assert view["routes"]["iris"]["v1"]["requests"][view["t"].index(1000)] == 1


async def test_a_malformed_blob_in_the_store_is_dropped_and_counted(tmp_path: Path) -> None:
    store, clock, a, b = pair(tmp_path)
    b.outcome("iris", "v1", "ok", 0.001)
    clock.t = 1001.5
    assert await b.publish()
    await store.put_stats(STATS_KEY, "evil", {"format": 1, "step": 1, "t": 1001.0,
                                             "instance": "evil", "routes": {"iris": "x"}})
    view = await a.view()
    assert view["dropped_blobs"] == 1 and view["instances"] == ["a", "b"]
    assert view["routes"]["iris"]["v1"]["requests"][view["t"].index(1000)] == 1


async def test_a_store_that_cannot_take_the_counts_fails_nothing(tmp_path: Path) -> None:
    _, clock, a, _b = pair(tmp_path)
    (tmp_path / "state.json.stats").write_text("a file where the folder should be")
    a.outcome("iris", "v1", "ok", 0.001)
    clock.t = 1001.5
    assert await a.publish() is False  # logged, not raised
    view = await a.view()
    assert view["instances"] == ["a"]
    assert view["routes"]["iris"]["v1"]["requests"][view["t"].index(1000)] == 1


async def test_the_publisher_task_starts_and_stops(tmp_path: Path) -> None:
    store, _, a, _b = pair(tmp_path)
    a.clock = time.time
    await a.start()
    try:
        for _ in range(200):
            if await store.get_stats(STATS_KEY):
                break
            await asyncio.sleep(0.01)
        assert [x["instance"] for x in await store.get_stats(STATS_KEY)] == ["a"]
    finally:
        await a.stop()
    assert a._task is None


async def test_a_view_is_served_again_for_a_second(tmp_path: Path) -> None:
    _, clock, a, _b = pair(tmp_path)
    a.outcome("iris", "v1", "ok", 0.001)
    clock.t = 1001.5
    first = await a.view()
    a.outcome("iris", "v1", "ok", 0.001)
    clock.t = 1002.4
    assert await a.view() is first  # every console asking within the second: one merge
    clock.t = 1002.6
    again = await a.view()
    assert again is not first and sum(again["routes"]["iris"]["v1"]["requests"]) == 2


async def test_a_view_removes_the_leftovers_of_instances_long_gone(tmp_path: Path) -> None:
    store, clock, a, b = pair(tmp_path)
    b.outcome("iris", "v1", "ok", 0.001)
    assert await b.publish()  # at 1000, and then b is never heard of again
    clock.t = 1000 + 3 * 10 - 1  # not yet three windows
    await a.view()
    assert [x["instance"] for x in await store.get_stats(STATS_KEY)] == ["b"]
    clock.t = 1000 + 3 * 10 + 1
    await a.view()
    assert await store.get_stats(STATS_KEY) == []
    assert await a.publish()  # (its own entry is never pruned by itself)
    clock.t += 100
    await a.view()
    assert [x["instance"] for x in await store.get_stats(STATS_KEY)] == ["a"]


async def test_drop_stats_touches_only_file_names_of_ours(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "state.json")
    await store.put_stats(STATS_KEY, "a", {"x": 1})
    victim = tmp_path / "state.json.stats" / "keep.json"
    victim.write_text("{}")
    await store.drop_stats(STATS_KEY, ["../keep", "/etc/passwd", ".x", "a"])
    assert victim.exists() and await store.get_stats(STATS_KEY) == []
