"""The shadow promotion gate reads the fleet's counts only (found by review, left: every
instance's whole stats blob, counts and kept disagreement records with their bodies, up to
MAX_DOC_BYTES each, was read, verified and parsed every second per gated route, on the loop
the data plane runs on). Counts and records are published as separate entries; a report
reads both; an instance of an older version (records and counts in one blob) is still read
whole during a rolling upgrade, and reads the new counts as a tally that kept no records.
On a real redis-server; the gate's read timed before/after (printed, -s)."""

from __future__ import annotations

import time

import pytest

from gateway.configfile import parse_config_text
from gateway.control.shadow import ShadowResults
from gateway.control.shadowblobs import records_key, stats_key
from gateway.domain.verdict import spec_for
from tests.conftest import RedisServer
from tests.shadowrig import CFG, Local, tally
from tests.staterig import store_on

pytestmark = pytest.mark.timeout(30)

KEEP = CFG.replace("shadow: {version: v2, sample: 1.0}",
                   "shadow: {version: v2, sample: 1.0, disagreements: {keep: 300}}")


def _heavy(spec: str, n: int) -> object:
    t = tally(spec, 50, 0)
    t.keep = 300
    for i in range(n):
        t.outcome("disagreed", (), 0.01, 0.02, {})
        t.disagreement({"time": "2030-01-01T00:00:00Z", "request": i,
                        "primary": {"body": "p" * 1500}, "shadow": {"body": "s" * 1500}})
    return t


async def _gate_ms(r: ShadowResults, rc: object, n: int = 5) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        await r.refresh(rc)  # type: ignore[arg-type]
    return (time.perf_counter() - t0) * 1000 / n


async def test_the_gate_reads_counts_not_records(redis_server: RedisServer) -> None:

    cfg = parse_config_text(KEEP)
    rc = cfg.routes[0]
    spec = spec_for(rc)
    store = store_on(redis_server, "kgsh")
    await store.open()
    try:
        rs = []
        for i in range(4):
            local = Local()
            local.tallies["iris"] = _heavy(spec, 300)  # type: ignore[assignment]
            rs.append(ShadowResults(local, store, f"i{i}", lambda: cfg))
            await rs[-1].publish(rc, force=True)
        counts = f"{store.k_stats}:{stats_key('iris')}"
        sizes = [await store._call("HSTRLEN", counts, f"i{i}") for i in range(4)]
        apart = [await store._call("HSTRLEN", f"{store.k_stats}:{records_key('iris')}",
                                   f"i{i}") for i in range(4)]
        assert max(sizes) < 8192, sizes  # (the counts: no records in them)
        assert min(apart) > 500_000, apart  # (the records: apart)
        rep = await rs[0].report(rc, limit=5)
        assert rep["instances"] == 4 and rep["gate"]["compared"] == 4 * 350, rep["gate"]
        assert len(rep["disagreements"]) == 5, rep["disagreements"]  # (a report has them)
        after = await _gate_ms(rs[0], rc)

        # an instance of the older version: one blob, records in it, read whole
        old = _heavy(spec, 300).to_json()  # type: ignore[attr-defined]
        for i in range(4):
            await store.put_stats(stats_key("iris"), f"i{i}",
                                  {"instance": f"i{i}", "t": time.time(), "tally": old})
        await store.drop_stats(records_key("iris"), [f"i{i}" for i in range(4)])
        before = await _gate_ms(rs[0], rc)
        rep = await rs[0].report(rc, limit=5)
        assert rep["instances"] == 4 and rep["gate"]["compared"] == 4 * 350, rep["gate"]
        assert len(rep["disagreements"]) == 5, rep["disagreements"]
        assert after < before, (after, before)
        # records whose counts an older instance dropped (one gone) leave with a report
        await store.put_stats(records_key("iris"), "gone", {"instance": "gone", "t": 1.0,
                                                            "records": [], "disagreements": []})
        await rs[0].report(rc, limit=5)
        assert not await store.get_stats(records_key("iris"))
        print(f"\nthe gate's read, 4 instances x 300 records of 3 KB: {before:.2f} ms "
              f"(records in the blob) -> {after:.2f} ms (counts only); "
              f"entry {len(str(old)) // 1024} KiB -> {max(sizes)} B")
    finally:
        await store.close()
