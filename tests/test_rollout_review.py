"""Progressive delivery and the file's weights (hostile config review): a version the file
gives weight 0 (the old stable kept as the rollback target after a promotion committed to
git, a dark launch) is not a canary to roll out, and setting a running canary's weight to
0 in the file stops its rollout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.domain.analysis import Sample
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_rollout import INFER, Flaky, Load, route

pytestmark = pytest.mark.timeout(30)

STEPS = ("  analysis: {window: 1s, interval: 150ms, min_requests: 3, "
         "steps: [10, 50, 100], step_interval: 300ms}\n")


async def _reload(g: Any, cfg: Path, text: str, what: str) -> None:
    """Write `text` over the running `cfg`, reload and wait until it is applied."""
    old = g.gw.loaded.digest
    await asyncio.to_thread(cfg.write_text, text)
    g.gw.request_reload()
    await wait_until(lambda: g.gw.loaded.digest != old, 10, what=what)


async def test_the_old_stable_at_weight_0_is_not_rolled_out_again(tmp_path: Path,
                                                                  backends) -> None:
    old, new = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(old.app()), await backends(new.app())
    # v2 was promoted in git; v1 stays in the file at weight 0 as the rollback target
    cfg = write_config(tmp_path, route(p1, p2, 0, 100, STEPS, stable="v2"))
    async with running_gateway(cfg) as g:
        load = Load(g.url + INFER, 50)
        load.start()
        await wait_until(lambda: len(g.gw.rollout.recent.get("iris", ())) >= 6, 10,
                         what="six analysis rounds")
        await asyncio.sleep(0.7)  # (two step intervals more: a started rollout would step)
        await load.stop()
        served = {r[2] for r in load.results if r[1] == 200}
        assert served == {"v2"}, served
        assert "iris" not in g.gw.holder.doc.progress
        assert "iris" not in g.gw.holder.doc.overrides


async def test_a_canary_set_to_weight_0_in_the_file_stops_its_rollout(tmp_path: Path,
                                                                      backends) -> None:
    stable, canary = Flaky("v1"), Flaky("v2")
    p1, p2 = await backends(stable.app()), await backends(canary.app())
    slow = STEPS.replace("step_interval: 300ms", "step_interval: 60s")
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, slow))
    async with running_gateway(cfg) as g:
        load = Load(g.url + INFER, 50)
        load.start()
        await wait_until(lambda: g.gw.holder.doc.progress.get("iris", {}).get("state")
                         == "running", 10, what="a running rollout")
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 10.0
        await _reload(g, cfg, write_config(tmp_path, route(p1, p2, 100, 0, slow),
                                           name="next.yaml").read_text(), "the reload")
        await wait_until(lambda: g.gw.holder.doc.progress["iris"].get("state") == "paused"
                         and g.gw.holder.doc.progress["iris"].get("held") == "weight", 5,
                         what="the rollout shown paused, held by the file's weight 0")
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 0.0
        # An hour at 0 (its step began an hour ago), then the file gives v2 a weight
        # again: its step starts again, a whole step_interval. Before, it resumed on its
        # old `since` and was stepped up on its first passed verdict, unobserved.
        await load.stop()

        async def passing(rc):  # type: ignore[no-untyped-def]
            return {"v1": Sample(100, 0), "v2": Sample(100, 0)}  # (every round passes now)

        g.gw.rollout._fleet_samples = passing  # type: ignore[method-assign]
        await g.gw.sync.write(lambda cur: Change(progress={"iris": {
            **cur.progress["iris"], "since": cur.progress["iris"]["since"] - 3600}}),
            lambda cur, new: AuditDraft("t", "test", {}, "an hour at weight 0"))
        back = time.time()
        await _reload(g, cfg, write_config(tmp_path, route(p1, p2, 90, 10, slow),
                                           name="again.yaml").read_text(),
                      "the second reload")
        await wait_until(lambda: g.gw.holder.doc.progress["iris"].get("state") == "running"
                         or g.gw.holder.doc.progress["iris"]["step"] > 0, 5,
                         what="the rollout resumed")
        await wait_until(lambda: getattr(g.gw.rollout.verdicts.get("iris"), "status", "")
                         == "passed", 5, what="a passed verdict after the resume")
        prog = g.gw.holder.doc.progress["iris"]
        assert prog["step"] == 0 and "held" not in prog and prog["since"] >= back, prog
        assert g.gw.holder.table.by_name["iris"].effective_weights()["v2"] == 10.0
