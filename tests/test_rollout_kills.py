"""Progressive delivery while a kill holds: a killed canary (or its killed route) is never
stepped up or promoted on the counts it gathered before the kill. The operator killed it
because something was wrong that analysis did not see; the window still held its good
pre-kill counts, so the rollout went on stepping and promoted the killed canary to stable
with 100% of the traffic, which the unkill then sent it all at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.domain.analysis import Sample
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_rollout import INFER, Flaky, Load, auth, route

pytestmark = pytest.mark.timeout(40)

# a long window: the counts from before the kill stay in it for the whole test; latency
# never fails the canary here (a 75 ms hiccup of a loaded CI host rolled it back: an
# override, where the test looks for the promotion's)
STEPS = ("  analysis: {window: 30s, interval: 100ms, min_requests: 3, "
         "steps: [10, 50, 100], step_interval: 400ms, p99_slack: 10s}\n")


@pytest.mark.parametrize("kill", [{"scope": "version", "route": "iris", "version": "v2"},
                                  {"scope": "route", "route": "iris"},
                                  {"scope": "global"}])
async def test_a_killed_canary_is_neither_stepped_nor_promoted(tmp_path: Path, backends,
                                                               kill: dict[str, str]) -> None:
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, STEPS))
    async with running_gateway(cfg) as g, ClientSession() as s:
        load = Load(g.url + INFER, 100)
        load.start()
        await wait_until(lambda: g.gw.holder.doc.progress.get("iris", {}).get("state")
                         == "running", 10, what="a running rollout")
        # enough canary counts in the window for a `passed` verdict
        await wait_until(lambda: getattr(g.gw.rollout.verdicts.get("iris"), "status", "")
                         == "passed", 10, what="a passed verdict")
        async with s.post(g.admin + "/v1/kill", json={**kill, "reason": "bad answers"},
                          headers=auth()) as r:
            assert r.status == 200, await r.text()
        held = g.gw.holder.doc.progress["iris"]
        await asyncio.sleep(2.0)  # five step intervals: an unheld rollout is promoted
        assert "iris" not in g.gw.holder.doc.overrides, g.gw.holder.doc.overrides
        prog = g.gw.holder.doc.progress["iris"]
        assert prog["step"] == held["step"], (held, prog)
        assert prog["state"] == "paused" and prog["held"], prog
        lifted = prog["since"]
        async with s.post(g.admin + "/v1/unkill", json={**kill, "reason": "fixed"},
                          headers=auth()) as r:
            assert r.status == 200, await r.text()
        # the step starts again (its interval counted from the unkill), then goes on
        await wait_until(lambda: g.gw.holder.doc.progress["iris"].get("state") == "running"
                         and "held" not in g.gw.holder.doc.progress["iris"], 5,
                         what="the rollout resumed")
        assert g.gw.holder.doc.progress["iris"]["since"] > lifted
        await wait_until(lambda: "iris" in g.gw.holder.doc.overrides, 10, what="the promotion")
        await load.stop()


async def test_analysis_goes_on_after_the_wall_clock_steps_back(tmp_path: Path,
                                                                backends) -> None:
    """An NTP step back (an hour, say) must not stop analysis, and with it automatic
    rollback, for as long as the step: rounds were due by the wall clock."""
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    extra = "  analysis: {window: 1s, interval: 100ms, min_requests: 3}\n"
    cfg = write_config(tmp_path, route(p1, p2, 50, 50, extra))
    async with running_gateway(cfg) as g:
        rollout = g.gw.rollout
        await wait_until(lambda: len(rollout.recent.get("iris", ())) >= 2, 10,
                         what="analysis rounds")
        rollout.clock = lambda: time.time() - 3600
        load = Load(g.url + INFER, 50)
        load.start()
        canary.status = 500
        await wait_until(lambda: "iris" in g.gw.holder.doc.overrides, 10,
                         what="the automatic rollback after the clock stepped back")
        await load.stop()


async def test_a_shorter_interval_from_a_reload_applies_at_once(tmp_path: Path,
                                                                backends) -> None:
    """An operator who finds analysis too slow (interval 1h) and shortens it in the file
    waited up to the old interval for the next round: it was due by the old one."""
    p1, p2 = await backends(Flaky("v1").app()), await backends(Flaky("v2").app())
    slow = "  analysis: {window: 1s, interval: 1h, min_requests: 3}\n"
    cfg = write_config(tmp_path, route(p1, p2, 50, 50, slow))
    async with running_gateway(cfg) as g:
        rollout = g.gw.rollout
        await wait_until(lambda: len(rollout.recent.get("iris", ())) == 1, 10,
                         what="the first round")
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(p1, p2, 50, 50, slow.replace("1h", "100ms")),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10, what="the reload")
        await wait_until(lambda: len(rollout.recent.get("iris", ())) >= 3, 5,
                         what="rounds at the new interval")


async def test_a_rollout_latched_by_weights_takes_a_whole_step_after_the_release(
        tmp_path: Path, backends) -> None:
    """An operator holds a running rollout with `weights` (canary 0), then releases it: the
    step it resumes at is observed for a whole `step_interval` again. Its clock ran on
    while the override governed, so the step (or the promotion, at the last one) came as
    soon as a few requests passed after the release."""
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    steps = ("  analysis: {window: 1s, interval: 100ms, min_requests: 3, "
             "steps: [10, 50, 100], step_interval: 2s}\n")
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, steps))
    async with running_gateway(cfg) as g, ClientSession() as s:
        load = Load(g.url + INFER, 100)
        load.start()
        await wait_until(lambda: g.gw.holder.doc.progress.get("iris", {}).get("state")
                         == "running", 10, what="a running rollout")
        async with s.put(g.admin + "/v1/routes/iris/weights", headers=auth(),
                         json={"weights": {"v1": 100, "v2": 0}, "reason": "hold on"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: g.gw.holder.doc.progress["iris"].get("held") == "override",
                         5, what="the rollout shown held by the override")
        assert g.gw.holder.doc.progress["iris"]["state"] == "paused"
        await asyncio.sleep(2.2)  # (longer than a step interval, all of it latched)
        step = g.gw.holder.doc.progress["iris"]["step"]
        released = time.time()
        async with s.post(g.admin + "/v1/routes/iris/release", headers=auth(),
                          json={"reason": "go on"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: g.gw.holder.doc.progress["iris"]["step"] > step, 10,
                         what="the next step")
        await load.stop()
        assert g.gw.holder.doc.progress["iris"]["since"] - released >= 1.9


async def test_a_round_judged_on_a_config_a_reload_replaced_changes_nothing(
        tmp_path: Path, backends) -> None:
    """A round reads the fleet's counts from the store (an await); a reload meanwhile
    replaced the failing canary v2 with v3. The round's rollback, computed on the old
    config, latched the route: v3 never got its traffic, until someone released it."""
    ports = [await backends(Flaky(v).app()) for v in ("v1", "v2", "v3")]
    extra = "  analysis: {window: 1s, interval: 100ms, min_requests: 3}\n"
    cfg = write_config(tmp_path, route(ports[0], ports[1], 90, 10, extra))
    async with running_gateway(cfg) as g:
        rollout = g.gw.rollout
        real = rollout._fleet_samples
        inside, go = asyncio.Event(), asyncio.Event()

        async def slow(rc):  # type: ignore[no-untyped-def]
            if not go.is_set():
                inside.set()
                await go.wait()
                return {"v1": Sample(100, 0), "v2": Sample(100, 100)}  # v2 failing
            return await real(rc)

        rollout._fleet_samples = slow  # type: ignore[method-assign]
        await asyncio.wait_for(inside.wait(), 10)
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(ports[0], ports[2], 90, 10, extra)
                                    .replace("name: v2", "name: v3"),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != old, 10, what="the reload")
        go.set()
        await wait_until(lambda: "iris" in g.gw.holder.doc.overrides
                         or any(r["canary"] == "v3" for r in rollout.recent["iris"]), 10,
                         what="a round on the new config")
        assert "iris" not in g.gw.holder.doc.overrides, g.gw.holder.doc.overrides
