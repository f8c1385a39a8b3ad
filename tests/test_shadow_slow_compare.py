"""A copy holds its max_inflight slot until its comparison is done, however long it waits for
the comparison thread (README: a slow shadow cannot build a backlog or hold memory).
(Hostile shadow review: a copy's slot ended by the clock, 2 x shadow timeouts.total + 1 s
after it left, though the copy always gives it back when done: with comparisons slower
than that (large answers, ignore/redact paths, one thread for every route), slots of copies
still queued for the thread ended, new copies were admitted behind them, and the queue,
each holding its request and answers, grew without bound.)"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.backends import fixed_app
from tests.conftest import running_gateway, write_config
from tests.test_shadow import report, route, settled

pytestmark = pytest.mark.timeout(60)


def _app(shift: int) -> web.Application:
    return fixed_app(json.dumps({"data": list(range(shift, shift + 2000))}).encode())  # > 1 KiB


async def test_copies_waiting_for_the_comparison_thread_keep_their_slots(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(_app(0)), await backends(_app(1))
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, max_inflight: 2, compare: json, "
                "timeouts: {total: 300ms}}", protocol="http", prefix="/v1"))
    async with running_gateway(cfg) as g:
        busy = threading.Event()
        # a comparison ahead in the queue that takes long (as a large one with paths does)
        ahead = asyncio.get_running_loop().run_in_executor(g.gw.mirror.compare_pool,
                                                           busy.wait, 30)
        try:
            for _ in range(2):
                async with session.post(g.url + "/v1/x", data=b"{}") as r:
                    assert r.status == 200
            await settled(session, g.admin, 2, "sent")
            await asyncio.sleep(2.5)  # past 2 x total + 1 s
            for _ in range(4):
                async with session.post(g.url + "/v1/x", data=b"{}") as r:
                    assert r.status == 200
            rep = await report(session, g.admin)
            assert rep["copies"]["sent"] == 2 and rep["dropped"] == 4, rep
        finally:
            busy.set()
            await ahead
        rep = await settled(session, g.admin, 2)
        assert rep["compared"] == 2, rep
