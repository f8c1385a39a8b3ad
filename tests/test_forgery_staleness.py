"""A store whose state this instance cannot verify is no sync: the staleness clock runs on.

Real redis-server, an in-process gateway. Someone without the signing key rewrites the
state document and its generation key in a loop: the instance's repairs back off (so the
audit trail is not flooded), and every poll meanwhile reads a document it refuses. It
cannot learn a kill made elsewhere then (pushes can be cut: CLIENT KILL), so it must not
count those polls as syncs: past max_staleness it is stale, and with fail_closed every
route answers killed, until the store holds a document it verifies again.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_forgery import stored_doc
from tests.test_killswitch import kill, redis_state, status_of


async def test_a_store_refused_at_every_poll_is_stale_and_fails_closed(
        tmp_path: Path, backends, redis_server: RedisServer, session) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), state=redis_state(
        redis_server, tmp_path,
        extra="  on_unavailable: fail_closed\n  max_staleness: 600ms\n"))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="version", route="iris", version="v2")
        assert (await status_of(session, g.url))[0] == 200
        genuine = stored_doc(redis_server)
        sync = g.gw.sync
        assert not sync.stale and not sync.holder.fail_closed

        stop = asyncio.Event()

        async def forge() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                redis_server.cmd("SET", "kgtest:state", json.dumps({**genuine, "kills": {}}))
                redis_server.cmd("SET", "kgtest:gen", str(10_000 + n))
                await asyncio.sleep(0.01)

        forger = asyncio.create_task(forge())
        try:
            t0 = time.monotonic()
            await wait_until(lambda: sync.stale and sync.holder.fail_closed, 2.5,
                             what="the instance to count a store it refuses as no sync")
            assert time.monotonic() - t0 >= 0.5  # (not before max_staleness)
            st = sync.status()
            assert st["stale"] and st["fail_closed"] and st["last_error"], st
            assert "refused the stored state" in st["last_error"], st["last_error"]
            # every route answers killed meanwhile (the version left unkilled too)
            assert (await status_of(session, g.url))[1] == "killed"
        finally:
            stop.set()
            await forger
        # the forger stops: the next repair puts our verified state back, and it opens
        await wait_until(lambda: not sync.stale and not sync.holder.fail_closed, 6,
                         what="staleness to clear once the store is repaired")
        assert (await status_of(session, g.url))[0] == 200
        assert "version:iris:v2" in stored_doc(redis_server)["kills"]
