"""The shadow's counts with many routes: what a sampled request and a scrape cost on the
loop does not grow with the number of routes in the file. (Hostile shadow review, fifth
pass: the counts looked the route's config in force up with Config.route, a scan of every
route's model, twice per copy, twice per dropped one, and once per route on every /metrics
scrape: ~40 ns a route, so with a thousand shadowed routes ~80 µs of the loop per sampled
request of the last route, and O(routes²) per scrape, ~30 ms.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import running_gateway, wait_until, write_config

pytestmark = pytest.mark.timeout(30)

N = 500


def _routes(n: int) -> str:
    return "".join(f"""\
- name: r{i}
  match: {{path_prefix: /r{i}/}}
  stable: v1
  shadow: {{version: v2, sample: 1.0}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:1", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:2", weight: 0}}
""" for i in range(n))


def _least(fn: Callable[[], object], rounds: int = 7) -> float:
    """The least time of `rounds` runs of `fn` (the machine's other load left out)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


async def test_counting_a_copy_costs_the_same_for_the_first_and_the_last_route(
        tmp_path: Path) -> None:
    cfg = write_config(tmp_path, _routes(N))
    async with running_gateway(cfg) as g:
        mirror = g.gw.mirror
        first, last = (g.gw.holder.table.by_name[f"r{i}"] for i in (0, N - 1))

        def count(plan: object) -> Callable[[], None]:
            def run() -> None:
                for _ in range(200):
                    mirror.count(plan, "dropped")  # type: ignore[arg-type]
            return run

        cost_first, cost_last = _least(count(first)), _least(count(last))
        # the scrape's list of live counts: for N routes, not N² of work
        for i in range(N // 5):
            mirror.count(g.gw.holder.table.by_name[f"r{i}"], "dropped")
        scrape_fifth = _least(mirror.counts.live)
        for i in range(N // 5, N):
            mirror.count(g.gw.holder.table.by_name[f"r{i}"], "dropped")
        scrape_all = _least(mirror.counts.live)
        assert len(mirror.counts.live()) == N
    # (an index: the same cost; a scan: the last route ~15 times the first)
    assert cost_last < 3 * cost_first, (cost_first, cost_last)
    # (five times the routes: ~5 times the work; a scan of each, ~25 times)
    assert scrape_all < 12 * scrape_fifth, (scrape_fifth, scrape_all)


async def test_a_full_max_inflight_costs_a_request_nothing_more_when_it_is_large(
        tmp_path: Path) -> None:
    """A sampled request finding the route's copies at max_inflight (a shadow that hangs)
    is dropped; the check looked for slots past their end through every slot held, each
    time: with max_inflight 20000 (allowed up to 100000) ~0.6 ms of the loop per request,
    while the shadow hangs, for every client of the process."""
    two = _routes(2)
    for name, n in (("r0", 20), ("r1", 20000)):
        two = two.replace(f"{name}/}}\n  stable: v1\n  shadow: {{version: v2, sample: 1.0}}",
                          f"{name}/}}\n  stable: v1\n  timeouts: {{connect: 50ms, total: 100ms}}\n"
                          f"  shadow: {{version: v2, sample: 1.0, max_inflight: {n}}}")
    cfg = write_config(tmp_path, two)
    async with running_gateway(cfg) as g:
        mirror = g.gw.mirror

        def taps(route: str) -> Callable[[], None]:
            plan = g.gw.holder.table.by_name[route]
            sh = plan.config.shadow
            assert sh is not None
            # (the slots of max_inflight copies under way: held until each is done)
            mirror.leases[route] = dict.fromkeys(range(sh.max_inflight), float("inf"))

            def run() -> None:
                for _ in range(200):
                    tap = mirror.tap(plan, plan.targets["v1"], b"POST", b"/x", [], b"{}",
                                     True, None, b"", 0.0)
                    assert tap is None  # dropped, never queued
            return run

        try:
            small, large = _least(taps("r0")), _least(taps("r1"))
            # a tap's slot lost with its request still ends with its clock (the route's
            # timeouts.total + 1 s): then it is free
            plan = g.gw.holder.table.by_name["r0"]
            mirror.leases["r0"] = dict.fromkeys(range(-18, 0), float("inf"))
            lost = [mirror.tap(plan, plan.targets["v1"], b"POST", b"/x", [], b"{}", True,
                               None, b"", 0.0) for _ in range(3)]
            assert lost[0] is not None and lost[1] is not None and lost[2] is None  # (full)
            for tap in lost[:2]:
                assert tap is not None
                tap.lease = 0  # (lost: never gives its slot back)
            ends = max(set(mirror.leases["r0"].values()) - {float("inf")})
            await wait_until(lambda: mirror.loop.time() > ends, 3, 0.02)
            tap = mirror.tap(plan, plan.targets["v1"], b"POST", b"/x", [], b"{}", True, None,
                             b"", 0.0)
            assert tap is not None and len(mirror.leases["r0"]) == 19
            tap.lease = 0
        finally:
            mirror.leases.clear()
    assert large < 5 * small, (small, large)
