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


def test_a_live_instance_is_taken_whatever_its_clock_and_a_dead_one_is_not() -> None:
    """With `|now - t|` alone, a live instance whose clock is 30 s off (the bound: two 10 s
    intervals and a second) had its counts left out of every verdict: a canary failing only
    there was promoted on the others' counts (found by review of impleft item 2). A blob
    that changed to a later time since our last read is its instance publishing: taken,
    within the skew the heartbeats tolerate; one that stopped changing is not, whatever
    its clock."""
    from gateway.control.freshness import CLOCK_SKEW, recent

    bound, now = 21.0, 1_000_000.0
    heard: dict[str, tuple[float, float]] = {}
    for i in range(4):
        t = now + 10 * i
        blobs = [{"instance": "ahead", "t": t + 30}, {"instance": "behind", "t": t - 30},
                 {"instance": "dead-ahead", "t": now + 60},
                 {"instance": "far", "t": t + CLOCK_SKEW + 5},
                 {"instance": "well", "t": t}]
        fresh, heard = recent(blobs, heard, t, bound)
        names = {b["instance"] for b in fresh}
        if i == 0:  # (first seen: only the time they say can tell)
            assert names == {"well"}, names
        else:
            assert names == {"well", "ahead", "behind"}, (i, names)
