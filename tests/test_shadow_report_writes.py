"""GET /v1/routes/{route}/shadow (scope killgate:read) published this instance's counts
to the state store on every call, changed or not: each read of the report was a write of
the whole blob (the newest disagreements with their bodies, up to keep x 3 x max_body) to
the store the kill switch lives in, as often as a reader cared to ask. A report publishes
only what changed since the last publish (the loop's heartbeat stays every 5 s), and what
changed shows in the next report at once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.control.shadow import REPUBLISH
from tests.conftest import running_gateway, write_config
from tests.shadow_backends import v2_app, v2_request
from tests.test_shadow import INFER, report, route, settled

pytestmark = pytest.mark.timeout(60)


async def test_reading_the_report_writes_nothing_that_did_not_change(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(v2_app("v1")), await backends(v2_app("v2"))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}"))
    blob = tmp_path / "store.json.stats" / "shadow~iris" / "test.json"
    async with running_gateway(cfg) as gw:
        async with session.post(gw.url + INFER, data=v2_request(1)) as r:
            assert r.status == 200
        t0 = time.monotonic()
        await settled(session, gw.admin, 1)  # (published: the report holds it)
        # at once, not at the next heartbeat: a copy compared while a report was writing
        # the counts was marked published with them, and showed only 5 s later
        assert time.monotonic() - t0 < REPUBLISH - 1
        writes = set()
        started = time.monotonic()
        for _ in range(20):
            await report(session, gw.admin)
            writes.add(json.loads(blob.read_bytes())["t"])  # (when it was published)
        assert time.monotonic() - started < 4.0  # (within the 5 s heartbeat)
        assert len(writes) <= 2, len(writes)  # (the loop's heartbeat may fall in between)
        # a change is in the next report at once
        async with session.post(gw.url + INFER, data=v2_request(2)) as r:
            assert r.status == 200
        t0 = time.monotonic()
        rep = await settled(session, gw.admin, 2)
        assert rep["compared"] == 2
        assert time.monotonic() - t0 < REPUBLISH - 1
