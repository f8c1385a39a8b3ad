"""An audit trim made while a write waits for its replicas (WAIT) does not cost that write
its confirmation (state/redistrim.py, state/rediscommit.py `replicated`).

WAIT blocks the connection it is sent on, and the trim's script went on that very
connection (the "write" one, whose writes WAIT counts): queued behind the WAIT, it missed
its deadline, and the deadline closed the connection, the WAIT's too: a kill the replica
was about to confirm was answered 503 not_durable, and the trim 503 outcome unknown. A
primary and a real replica, SIGSTOPped for a moment (its ack comes late, as a busy
replica's does); the trim now goes on the connection it reads the trail on."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_audit import H
from tests.test_audit_retention import RETAIN, _fill
from tests.test_killswitch import redis_state
from tests.test_replicas import attach_replica

pytestmark = pytest.mark.timeout(90)


async def _post(session: ClientSession, url: str, body: dict[str, Any]
                ) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body, headers=H) as r:
        return r.status, await r.json()


def _waiting(redis: RedisServer) -> bool:
    """Whether a client of `redis` is blocked in WAIT."""
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "CLIENT", "LIST"],
                         capture_output=True, text=True, timeout=5).stdout
    return "cmd=wait" in out


async def test_a_trim_beside_a_replica_wait_costs_the_write_nothing(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        second_redis: RedisServer) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    p = await backends(echo_app("v1"))
    state = redis_state(primary, tmp_path, command_timeout="500ms", extra=RETAIN % "1h"
                        + "  min_replicas: 1\n  replica_timeout: 8s\n")
    async with running_gateway(write_config(tmp_path, two_versions(p, p), state=state)) as g:
        await _fill(g, 108)  # (past the bound of 100: a manual trim removes some)
        replica.freeze()
        try:
            kill = asyncio.ensure_future(_post(session, g.admin + "/v1/kill?wait=20s",
                                               {"scope": "route", "route": "iris",
                                                "reason": "beside a trim"}))
            await wait_until(lambda: _waiting(primary), 10, 0.02, what="the kill's WAIT")
            trim = asyncio.ensure_future(_post(session, g.admin + "/v1/audit/trim",
                                               {"reason": "beside a wait"}))
            # (the trim's answer, or well past its 500 ms deadline behind the WAIT)
            await asyncio.wait({trim, kill}, timeout=3.0,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            replica.thaw()
        status, body = await asyncio.wait_for(kill, 30)
        assert status == 200, body  # (before: 503 not_durable, the WAIT's connection closed)
        status, body = await asyncio.wait_for(trim, 30)
        assert status == 200 and body["events"] == 101, body  # (the bound, and its checkpoint)
