"""The automatic canary analysis (control/rollout.py) judges a canary on the answers the
split gave it, never on answers a client pinned (`x-killgate-pin`, allow_pin).

Pins are the client's choice. Counted, a client pinning requests the canary's model
answers 500 (a malformed input) had a healthy canary rolled back and its route latched
(`auto_rollback`), and a prober pinning cheap requests it answers diluted a failing
canary's error rate below the bound, so it was never rolled back (progressive steps would
then promote it); and pinned 500s ejected the canary through outlier detection, which
fails its analysis too. The console's live traffic still hears of them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiohttp import ClientSession

from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_rules_pinned import INFER, _model

ANALYSIS = ("allow_pin: true\noutlier: {enabled: false}\n"
            "analysis: {window: 1s, interval: 150ms, min_requests: 10}\n")


async def test_a_client_pinning_requests_the_canary_fails_does_not_roll_it_back(
        tmp_path: Path, backends) -> None:
    p1, p2 = await backends(_model("v1")), await backends(_model("v2"))
    # (outlier detection on, as by default: pinned 500s ejected the canary, and an ejected
    # canary fails its analysis)
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50, ANALYSIS.replace(
        "outlier: {enabled: false}\n", "")))
    async with running_gateway(cfg) as g, ClientSession() as s:
        for _ in range(10):  # (enough in a row to eject it, were they counted)
            async with s.post(g.url + INFER, json={}, headers={
                    "x-killgate-pin": "v2", "x-test-malformed": "1"}) as r:
                assert r.status == 500 and r.headers["x-killgate-version"] == "v2"
        end = time.monotonic() + 1.5  # (main's rolled it back within 1.5 s)
        while time.monotonic() < end and "iris" not in g.gw.holder.doc.overrides:
            for headers in ({}, {"x-killgate-pin": "v2", "x-test-malformed": "1"}):
                async with s.post(g.url + INFER, json={}, headers=headers) as r:
                    await r.read()
            await asyncio.sleep(0.01)
        ov = g.gw.holder.doc.overrides.get("iris")
        assert ov is None, (ov.kind, ov.actor, dict(ov.weights))
        verdict = g.gw.rollout.verdicts["iris"]  # (judged: on the split's answers alone)
        assert verdict.status == "passed", verdict
        assert g.gw.health.records[("iris", "v2")].ejections == 0


async def test_a_failing_canary_is_rolled_back_whatever_a_client_pins_to_it(
        tmp_path: Path, backends) -> None:
    p1, p2 = await backends(_model("v1")), await backends(_model("v2", broken=True))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50, ANALYSIS))
    async with running_gateway(cfg) as g, ClientSession() as s:
        async def load() -> None:
            while "iris" not in g.gw.holder.doc.overrides:
                # one request of the split's (half of them fail on the canary), and twenty
                # pinned cheap ones the canary answers
                for headers in [{}] + [{"x-killgate-pin": "v2", "x-test-probe": "1"}] * 20:
                    async with s.post(g.url + INFER, json={}, headers=headers) as r:
                        await r.read()

        task = asyncio.create_task(load())
        try:
            await wait_until(lambda: "iris" in g.gw.holder.doc.overrides, 5,
                             what="the failing canary rolled back")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        ov = g.gw.holder.doc.overrides["iris"]
        assert (ov.kind, ov.weights["v2"]) == ("auto_rollback", 0.0)
