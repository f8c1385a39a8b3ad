"""The counts of instances gone for good leave the store. (Hostile shadow review: every
instance publishes its shadow counts, with up to `keep` sampled disagreements and their
bodies, under its own name, and a restarted pod or worker has a new name; nothing removed
the old ones, so the store grew by a blob per restart for good, and every instance read,
verified and parsed all of them every second for each gated route, and for each report.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.configfile import parse_config_text
from gateway.control.shadow import FORGET, FRESH, ShadowResults, stats_key
from gateway.domain.verdict import spec_for
from gateway.state.local import LocalStore
from tests.test_control_shadow import CFG, Local, tally

pytestmark = pytest.mark.timeout(20)


async def test_an_instance_silent_past_forget_is_dropped_from_the_store(tmp_path: Path) -> None:
    cfg = parse_config_text(CFG)
    rc = cfg.routes[0]
    assert rc.shadow is not None
    spec = spec_for(rc)
    store = LocalStore(tmp_path / "store.json")
    await store.open()
    now = [10_000.0]
    a = Local()
    a.tallies["iris"] = tally(spec, 3, 1)
    ra = ShadowResults(a, store, "a", lambda: cfg, clock=lambda: now[0])
    for name, age in (("gone", FORGET + 1), ("quiet", FRESH + 1), ("live", 1.0)):
        await store.put_stats(stats_key("iris"), name, {
            "instance": name, "t": now[0] - age, "tally": tally(spec, 1, 0).to_json()})
    rep = await ra.report(rc)
    assert rep["instances"] == 2  # a and live
    left = {b["instance"] for b in await store.get_stats(stats_key("iris"))}
    # (one silent past FRESH is left out of the counts, and kept: it may come back)
    assert left == {"a", "quiet", "live"}
