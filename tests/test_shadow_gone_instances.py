"""The counts of instances gone for good leave the store. (Hostile shadow review: every
instance publishes its shadow counts, with up to `keep` sampled disagreements and their
bodies, under its own name, and a restarted pod or worker has a new name; nothing removed
the old ones, so the store grew by a blob per restart for good, and every instance read,
verified and parsed all of them every second for each gated route, and for each report.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.control.shadow import FORGET, FRESH, ShadowResults
from gateway.control.shadowblobs import stats_key
from tests.shadowrig import Local, local_rig, tally

pytestmark = pytest.mark.timeout(20)


async def test_an_instance_silent_past_forget_is_dropped_from_the_store(tmp_path: Path) -> None:
    cfg, rc, spec, store = await local_rig(tmp_path)
    now = [10_000.0]
    a = Local()
    a.tallies["iris"] = tally(spec, 3, 1)
    ra = ShadowResults(a, store, "a", lambda: cfg, clock=lambda: now[0])
    for name, age in (("gone", FORGET + 1), ("quiet", FRESH + 1), ("live", 1.0)):
        await store.put_stats(stats_key("iris"), name, {
            "instance": name, "t": now[0] - age, "tally": tally(spec, 1, 0).to_json()})
    rep = await ra.report(rc)
    assert rep["instances"] == 2  # a and live
    # (gone once read unchanged a second time: a blob read once may be a live instance's
    # whose clock is behind ours)
    now[0] += 1.0
    await store.put_stats(stats_key("iris"), "live", {
        "instance": "live", "t": now[0], "tally": tally(spec, 1, 0).to_json()})
    rep = await ra.report(rc)
    assert rep["instances"] == 2
    left = {b["instance"] for b in await store.get_stats(stats_key("iris"))}
    # (one silent past FRESH is left out of the counts, and kept: it may come back)
    assert left == {"a", "quiet", "live"}


async def test_freshness_is_judged_on_the_readers_clock(tmp_path: Path) -> None:
    """Each blob carries its writer's time, and freshness was its age by the reader's
    clock: an instance whose clock ran an hour ahead kept its counts in every report and
    gate for an hour after it was gone, and one whose clock ran 11 minutes behind was left
    out of all of them, its counts removed from the store at every read as an instance
    gone for good (found by hostile shadow review, sixth pass: clock-skewed instances). A
    blob is now taken as written no later than when it is read, and, once read, no earlier
    than that read: a live instance (it republishes every 5 s) counts whatever its clock,
    a gone one stops counting FRESH after it was last read changed."""
    cfg, rc, spec, store = await local_rig(tmp_path)
    now = [10_000.0]
    a = Local()
    a.tallies["iris"] = tally(spec, 3, 1)
    ra = ShadowResults(a, store, "a", lambda: cfg, clock=lambda: now[0])

    async def publish(name: str, skew: float) -> None:
        await store.put_stats(stats_key("iris"), name, {
            "instance": name, "t": now[0] + skew, "tally": tally(spec, 10, 0).to_json()})

    await publish("ahead", 3600.0)  # then gone
    await publish("behind", -FORGET - 60.0)  # live: republishes
    await ra.report(rc)  # (the first read of "behind": its age is not known yet)
    for _ in range(3):
        now[0] += FRESH / 2
        await publish("behind", -FORGET - 60.0)
        rep = await ra.report(rc)
    names = {b["instance"] for b in await store.get_stats(stats_key("iris"))}
    assert "behind" in names, "a live instance's counts were removed as gone"
    # a (4 compared) and behind (10) count; ahead, silent for 1.5 x FRESH, no longer does
    assert (rep["instances"], rep["compared"]) == (2, 14), rep
