"""A kill repeated (a no-op: "already killed") with `min_replicas` confirms through a write
of nothing on the committing node (rediscommit._FENCE) and WAIT after it. That write was a
PUBLISH: a redis ACL user without the channels (the pushes-cut case of
tests/test_pushes_cut_status.py, whose commits go through) had every repeated kill refused
503, the kill in force all along. Real primary and replica, in-process gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.staterig import redis_section
from tests.test_forgery import stored_doc
from tests.test_killswitch import auth
from tests.test_replicas import attach_replica

pytestmark = pytest.mark.timeout(90)


async def _kill(session: ClientSession, admin: str) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{admin}/v1/kill?wait=2s", headers=auth(),
                            json={"scope": "route", "route": "iris", "reason": "fence"}) as r:
        return r.status, await r.json()


async def test_a_repeated_kill_is_confirmed_without_channel_access(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        second_redis: RedisServer) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    primary.cmd("ACL", "SETUSER", "nochan", "on", ">nochan-pw", "~*", "resetchannels",
                "+@all")
    url = primary.url.replace("redis://", "redis://nochan:nochan-pw@")
    state = redis_section(url, "kgfence", tmp_path / "snap.json", poll_interval="100ms",
                          command_timeout="1s", min_replicas="1", replica_timeout="600ms")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        status, data = await _kill(session, g.admin)
        assert status == 200, data
        assert "route:iris" in stored_doc(replica, "kgfence")["kills"]
        status, data = await _kill(session, g.admin)  # (already killed: the fence)
        assert status == 200, data


async def test_a_repeated_kill_is_confirmed_on_a_redis_at_its_memory_limit(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        second_redis: RedisServer) -> None:
    """The fence's write must go through where the PUBLISH it replaced did: a redis at its
    `maxmemory` (noeviction) refuses SET (-OOM) but not PUBLISH, so a repeated kill, in
    force and on the replica, was answered 503 not_durable ("not on enough replicas")
    for as long as redis stayed full, at the hour an SRE repeats kills (found by
    revtoday46)."""
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    state = redis_section(primary.url, "kgoom", tmp_path / "snap.json", poll_interval="100ms",
                          command_timeout="1s", min_replicas="1", replica_timeout="600ms")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        status, data = await _kill(session, g.admin)
        assert status == 200, data
        assert "route:iris" in stored_doc(replica, "kgoom")["kills"]
        primary.cmd("CONFIG", "SET", "maxmemory-policy", "noeviction")
        primary.cmd("CONFIG", "SET", "maxmemory", "1")
        try:
            status, data = await _kill(session, g.admin)  # (already killed: the fence)
            assert status == 200, data
        finally:
            primary.cmd("CONFIG", "SET", "maxmemory", "0")
