"""Redis restarted empty again and again (a crash-looping pod without persistence): every
restart is re-seeded at once, not after the back-off meant for forgers.

Re-seeds that are undone at once back off to one per 30 s (README, "The state key holds
something..."), so that whoever keeps deleting or replaying the document cannot flood the
audit trail. A restart without persistence loses the trail too: there is nothing to flood,
and the back-off only left the store empty (a new instance without a snapshot then takes
the empty store for "nothing killed", and an unkill answers not_killed) for up to 30 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.test_attacks_state import post, stored_kills
from tests.test_forgery import sealed, stored_doc
from tests.test_killswitch import redis_state, status_of
from tests.test_reseed_race import missed_it

pytestmark = pytest.mark.timeout(120)


async def test_redis_restarted_empty_again_and_again_is_reseeded_each_time(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        took = []
        for n in range(8):
            await asyncio.to_thread(redis_server.restart)
            t0 = time.monotonic()
            await wait_until(lambda: "route:iris" in stored_kills(redis_server), 4, 0.02,
                             f"the kill re-seeded after restart {n + 1} (so far: {took})")
            took.append(round(time.monotonic() - t0, 2))
        assert (await status_of(session, g.url)) == (503, "killed")
        # the back-off still holds for deletions that leave the trail: tests/test_attacks_state


async def test_a_kill_another_instance_re_seeded_without_is_merged_back_each_time(
        tmp_path: Path, backends, session, redis_server: RedisServer) -> None:
    """The same crash loop in a fleet: at each restart another instance, which missed the
    kill, re-seeds the empty store first (its re-seed is the trail's one event). The
    instance holding the kill merges it back every time, not after a back-off."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await post(session, g.admin, "/v1/kill", scope="route", route="iris")
        took = []
        for n in range(8):
            held = stored_doc(redis_server)
            b = missed_it(held, held["generation"])  # b's re-seed, at our generation
            redis_server.cmd("EVAL", _WIPE_AND_RESEED, "3", "kgtest:state", "kgtest:gen",
                             "kgtest:audit", sealed(b, STATE_KEY), str(b["generation"]),
                             json.dumps({"action": "state.reseed", "by": "b"}), f"b-head-{n}")
            t0 = time.monotonic()
            await wait_until(lambda: "route:iris" in stored_kills(redis_server), 4, 0.02,
                             f"the kill merged back after restart {n + 1} (so far: {took})")
            took.append(round(time.monotonic() - t0, 2))
        assert (await status_of(session, g.url)) == (503, "killed")


#: redis restarted empty, and b's re-seed with its audit event, in one step
_WIPE_AND_RESEED = """
redis.call('FLUSHALL')
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XADD', KEYS[3], '*', 'e', ARGV[3])
redis.call('SET', KEYS[3] .. ':head', ARGV[4])
return 1
"""
