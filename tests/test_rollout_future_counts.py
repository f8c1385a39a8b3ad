"""Canary analysis takes another instance's counts only while they are recent both ways:
the counts of an instance whose clock ran an hour ahead were "fresh" until an hour after
it stopped, so a dead instance's counts (here: every canary request failed) went on
deciding verdicts. Found by review (impleft item 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.domain.analysis import Sample
from tests.conftest import running_gateway, write_config
from tests.test_rollout import Flaky, route

pytestmark = pytest.mark.timeout(30)

SLOW = "  analysis: {window: 30s, interval: 60s, min_requests: 3}\n"


async def test_counts_dated_in_the_future_are_not_taken(tmp_path: Path, backends) -> None:
    p1, p2 = await backends(Flaky("v1").app()), await backends(Flaky("v2").app())
    cfg = write_config(tmp_path, route(p1, p2, 90, 10, SLOW))
    async with running_gateway(cfg) as g:
        rc = g.gw.holder.table.by_name["iris"].config
        bad = {"requests": 500, "errors": 500, **{k: v for k, v in Sample().to_json().items()
                                                  if k not in ("requests", "errors")}}
        for name, ahead in (("ahead", 3600.0), ("near", 1.0)):
            await g.gw.sync.store.put_stats("iris", name, {
                "instance": name, "t": time.time() + ahead, "window": 30.0,
                "versions": {"v2": bad}})
        samples = await g.gw.rollout._fleet_samples(rc)
        assert samples is not None
        # the one a second ahead (clock skew within the bound) is taken, the hour's is not
        assert samples["v2"].requests == 500, samples
