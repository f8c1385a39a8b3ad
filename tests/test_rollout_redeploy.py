"""Canary analysis after a reload that redeploys a version under its name (another url,
no artifact: allowed, versions are only immutable by artifact). The counts kept per
(route, version) name were not dropped: the new deployment was judged on the old one's
answers for a whole window. A broken deployment replaced by a fixed one was rolled back
automatically on the broken one's errors; a good one replaced by a broken one passed (and
was stepped up) on the good one's (hostile GitOps review)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import running_gateway, wait_until, write_config
from tests.test_reload import atomic_write
from tests.test_rollout import INFER, Flaky, route

pytestmark = pytest.mark.timeout(30)


async def _send(s: ClientSession, url: str, n: int) -> dict[int, int]:
    seen: dict[int, int] = {}
    for i in range(n):
        async with s.get(url + INFER, headers={"x-user": str(i)}) as r:
            seen[r.status] = seen.get(r.status, 0) + 1
    return seen


async def test_a_redeployed_canary_is_judged_on_its_own_answers(tmp_path: Path,
                                                                backends) -> None:
    stable, broken, fixed = Flaky("v1"), Flaky("v2"), Flaky("v2")
    broken.status = 500
    p1, pa, pb = [await backends(b.app()) for b in (stable, broken, fixed)]
    # one round at the start (nothing counted: inconclusive), the next an hour later:
    # the test runs the round itself
    extra = "  analysis: {window: 30s, interval: 1h, min_requests: 10}\n"
    cfg = write_config(tmp_path, route(p1, pa, 50, 50, extra))
    async with running_gateway(cfg) as g, ClientSession() as s:
        rollout = g.gw.rollout
        await wait_until(lambda: "iris" in rollout.verdicts, 5, what="the first round")
        seen = await _send(s, g.url, 40)
        assert seen.get(200, 0) + seen.get(500, 0) + seen.get(502, 0) == 40, seen
        # the fix is deployed at another url under the same name
        old = g.gw.loaded.digest
        atomic_write(cfg, cfg.read_text().replace(f":{pa}\"", f":{pb}\""))
        await wait_until(lambda: g.gw.loaded.digest != old, 10, what="the reload")
        assert await _send(s, g.url, 40) == {200: 40}
        verdict = await rollout.evaluate(g.gw.loaded.config.route("iris"))
        assert verdict is not None
        # before the fix: failed on the broken deployment's 500s, and the fixed one rolled back
        assert verdict.status == "passed", (verdict.reasons, verdict.evidence)
        assert "iris" not in g.gw.holder.doc.overrides


async def test_a_redeployed_canary_is_not_judged_on_other_instances_counts_of_the_old(
        tmp_path: Path, backends) -> None:
    """The same redeploy in a fleet: another instance has not read the new file yet (a
    ConfigMap reaches pods up to a minute apart) and still publishes its counts of the
    broken deployment under the version's name. This instance, on the fixed one, merged
    them and rolled the fixed canary back for the whole fleet. (The other instance's counts
    are published here through the real store, as its own rounds publish them.)"""
    stable, broken, fixed = Flaky("v1"), Flaky("v2"), Flaky("v2")
    broken.status = 500
    p1, pa, pb = [await backends(b.app()) for b in (stable, broken, fixed)]
    extra = "  analysis: {window: 30s, interval: 1h, min_requests: 10}\n"
    cfg = write_config(tmp_path, route(p1, pa, 50, 50, extra))
    async with running_gateway(cfg) as g, ClientSession() as s:
        rollout = g.gw.rollout
        store = g.gw.sync.store
        await wait_until(lambda: "iris" in rollout.verdicts, 5, what="the first round")
        await _send(s, g.url, 40)
        # this instance's round on the broken deployment: what the other one publishes
        assert await rollout._fleet_samples(g.gw.loaded.config.route("iris")) is not None
        (old,) = [b for b in await store.get_stats("iris") if b["instance"] == rollout.instance]
        digest = g.gw.loaded.digest
        atomic_write(cfg, cfg.read_text().replace(f":{pa}\"", f":{pb}\""))
        await wait_until(lambda: g.gw.loaded.digest != digest, 10, what="the reload")
        assert await _send(s, g.url, 40) == {200: 40}
        await store.put_stats("iris", "other", {**old, "instance": "other",
                                                "t": rollout.clock()})
        verdict = await rollout.evaluate(g.gw.loaded.config.route("iris"))
        assert verdict is not None
        assert verdict.status == "passed", (verdict.reasons, verdict.evidence)
        assert "iris" not in g.gw.holder.doc.overrides
