"""Redis lost mid-drill (restarted empty: no persistence): the open drill and its kill
live on in the instances' memory, are re-seeded into the new redis, and the drill's
restore then lifts its kill and ends it; nothing of the drill is left, in memory or in
the store. An in-process gateway on a real redis-server, restarted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    running_gateway,
    wait_until,
    write_config,
)
from tests.drillrig import answer, call, routes
from tests.staterig import redis_section

pytestmark = pytest.mark.timeout(90)


async def test_a_drill_outlives_a_redis_restart_and_restores(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_section(redis_server.url, "lost", tmp_path / "snap.json",
                          poll_interval="100ms", heartbeat_interval="200ms",
                          command_timeout="300ms")
    async with running_gateway(write_config(tmp_path, routes(p1, p2), state=state)) as g:
        st, out = await call(session, "POST", f"{g.admin}/v1/drills",
                             {"kind": "kill", "route": "iris-drill", "version": "v2",
                              "reason": "rehearsal"})
        assert st == 200, out
        drill = out["drill"]
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/inject",
                             {"reason": "pull"})
        assert st == 200, out
        redis_server.restart()
        url = g.url + "/drill/iris/infer"
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v1", "failover")

        deadline = time.monotonic() + 20  # (the restore waits for the re-seeded store)
        while True:
            st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/restore",
                                 {"reason": "done"})
            if st == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert st == 200, out
        assert out["undone"] == [{"unkill": "version:iris-drill:v2"}], out
        st, out = await call(session, "POST", f"{g.admin}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "done"})
        assert st == 200, out
        await wait_until(lambda: not g.gw.holder.doc.drills and not g.gw.holder.doc.kills, 10,
                         what="the drill gone")
        assert await answer(session, url, **{"x-killgate-pin": "v2"}) == (200, "v2", "pinned")
