"""Publishing the shadow's kept disagreements does not stall the event loop. (Hostile shadow
review, third pass: every process publishes its counts with its ring of up to `keep`
(1000 allowed) records, each the request and both answers as parsed JSON (up to
`max_body` each), serialised again every second on the loop that serves requests and
kills, and every reader (the gate's refresh, every second per gated route; the report)
parsed every instance's ring again: 100 records of two 57 KB answers of numbers held the
loop ~1.5 s per publish, 1000 records of 3 KB bodies ~2 s; at the defaults, 20 records
cost ~15 ms per publish and ~6 ms per instance read, every second.)"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.backends import fixed_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.loopwatch import LoopWatch
from tests.test_shadow import report, route, send_all

pytestmark = pytest.mark.timeout(90)


def _scores(seed: int) -> web.Application:
    r = random.Random(seed)
    return fixed_app(json.dumps({"scores": [r.random() for _ in range(3000)]}).encode())


async def test_a_full_ring_of_large_records_is_published_without_holding_the_loop(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(_scores(1)), await backends(_scores(2))
    shadow = ("{version: v2, sample: 1.0, max_inflight: 1000, "
              "disagreements: {keep: 100, max_body: 65536}}")
    routes = route(p1, p2, shadow, protocol="http", prefix="/v1").replace(
        "  shadow:", "  analysis: {min_shadow_agreement: 0.9}\n  shadow:", 1)
    cfg = write_config(tmp_path, routes)  # (gated: the fleet's counts are read every second)
    async with running_gateway(cfg) as gw:
        await send_all(session, gw.url + "/v1/x", [b"{}"] * 100, concurrency=4)
        tallies = gw.gw.mirror.tallies
        await wait_until(lambda: tallies["iris"].outcomes.get("disagreed", 0) >= 100, 60,
                         what="100 comparisons")
        blob = tmp_path / "store.json.stats" / "shadow~iris" / "test.json"

        def ring_published_since(t: float) -> bool:
            # (written whole, by rename: its time is the publish's; the ring was full
            # before the watch began. Read no further: parsing ~17 MB here would hold the
            # loop being watched)
            try:
                return blob.stat().st_mtime >= t
            except FileNotFoundError:
                return False

        watched_from, t0 = time.time(), time.monotonic()
        async with LoopWatch() as watch:
            # watched until the full ring was published (when changed, and every 5 s in any
            # case) and the fleet read for the gate (every second) at least once
            await wait_until(lambda: time.monotonic() - t0 > 1.5
                             and ring_published_since(watched_from), 10, 0.05,
                             "the full ring published while the loop is watched")
        rep = await report(session, gw.admin, limit=100)  # (an answer of 17 MB: not timed)
        assert rep["outcomes"]["disagreed"] == 100, rep["outcomes"]
        got = rep["disagreements"]
        assert len(got) == 100 and isinstance(got[0]["primary"]["body"], dict), got[0]
        assert len(got[0]["primary"]["body"]["scores"]) == 3000
        assert watch.worst < 0.4, f"the event loop was held {watch.worst * 1000:.0f} ms"
