"""Large shadow comparisons (past 64 KiB) ran in the event loop's default executor, the
one the local state store's commits (a kill), snapshots of the kill state and JWKS fetches
wait in: a busy shadow queued them behind its comparisons, and they queued the
comparisons. Comparisons now have a thread of their own. Shown here the other way round
(deterministically, without burning CPU): with every thread of the default executor busy,
a large comparison still completes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import running_gateway, write_config
from tests.shadow_backends import v2_request
from tests.test_killswitch import redis_state
from tests.test_shadow import INFER, route, settled

pytestmark = pytest.mark.timeout(60)


def _large(shift: float) -> web.Application:
    async def infer(req: web.Request) -> web.Response:
        await req.read()
        data = [i / 7 + shift for i in range(20_000)]  # > 64 KiB: compared in a thread
        return web.json_response({"outputs": [{"name": "emb", "shape": [20_000],
                                               "datatype": "FP32", "data": data}]})

    a = web.Application()
    a.router.add_route("*", "/{tail:.*}", infer)
    return a


async def test_large_comparisons_do_not_share_the_default_executor(
        tmp_path: Path, backends, session: ClientSession, redis_server) -> None:
    p1, p2 = await backends(_large(0.0)), await backends(_large(0.5))
    # (a redis store: the local one reads and writes its files in the default executor)
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}"),
                       state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as gw:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        # every thread the default executor may start, busy (as with slow jobs queued)
        busy = [loop.run_in_executor(None, release.wait, 30) for _ in range(64)]
        try:
            async with session.post(gw.url + INFER, data=v2_request(1)) as r:
                assert r.status == 200
                await r.read()
            rep = await settled(session, gw.admin, 1, timeout=10)
            assert rep["compared"] == 1 and rep["differences"] == {"values": 1}
        finally:
            release.set()
            await asyncio.gather(*busy)
