"""`killgate drill` while the instance it asks holds an emergency local kill not yet in the
store (POST /v1/kill?local=1): refused before anything opens, naming the local kill (found
by review of implocalkill: it failed with "no instance published its address", or with the
open's 503, saying nothing of the incident on). A drill never lifts a local kill: see
test_drill_local_kill.py for one it held the same key of.

Real `killgate serve` process on a real redis-server (stopped, then started again), the
real CLI in its own process."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer
from tests.drillrig import FAST, Drill, call, routes
from tests.staterig import redis_state
from tests.test_killswitch import fixed_ports_config

pytestmark = pytest.mark.timeout(60)

ONCALL = bearer("killgate:kill killgate:read", "oncall", 10800)


@dataclass
class _Fleet:  # (what Drill needs of tests/drillfleet.Fleet)
    admin: str
    tmp: Path


async def test_a_drill_is_refused_while_a_local_kill_is_not_in_the_store(
        tmp_path: Path, redis_server: RedisServer, backends: Any, gateway_procs: Any) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = fixed_ports_config(tmp_path, routes(p1, p2), redis_state(redis_server, tmp_path),
                             "a")
    a = gateway_procs(cfg)
    await asyncio.to_thread(a.wait_ready)
    redis_server.kill()
    async with ClientSession() as s:
        st, out = await call(s, "POST", a.admin + "/v1/kill?local=1", {
            "scope": "version", "route": "iris", "version": "v2", "reason": "broken"}, ONCALL)
        assert st == 202, out
    # (before: "no instance published its address", the store being down; with
    # --instances, the open's 503: neither said why, nor that a local kill is in force)
    for extra in ((), ("--instances", a.url)):
        rc, report, err = await Drill(_Fleet(a.admin, tmp_path), "kill", "--route",
                                      "iris-drill", "--version", "v2", *FAST,
                                      *extra).result(40)
        assert rc == 1 and report is not None, (rc, err)
        message = report["error"]["message"]
        assert "holds 1 emergency local kill(s) not yet in the state store" in message, message
        assert "version:iris:v2" in message and "LOCAL KILL NOT IN STORE" in message, message
    redis_server.start()
