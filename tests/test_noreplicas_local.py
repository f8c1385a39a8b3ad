"""A kill taken with `?local=1` while redis refuses writes (-NOREPLICAS: the lever the
refusal names) does not blind the instance to kills the fleet makes meanwhile, and is
merged exactly once (one audit event) when writes are taken again. Checked by revlate47
(passes on main: the local kill is an overlay, never a document of its own that the
store's would have to be merged with by a refused write). A kill made on B while writes
are taken for a moment (A's loop not running meanwhile) is applied on A within a few
polls. Real redis, an in-process A, a real `killgate serve` B.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    free_port,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_section
from tests.test_killswitch import auth, status_of

pytestmark = pytest.mark.timeout(90)


def _section(redis: RedisServer, tmp: Path, name: str) -> str:
    return redis_section(redis.url, "kglocal", tmp / f"snap-{name}.json",
                         poll_interval="100ms", heartbeat_interval="200ms",
                         command_timeout="1s")


def _kill_blocking(admin: str, body: dict[str, Any]) -> tuple[int, str]:
    """A kill on another instance, without yielding to this test's loop (where A runs)."""
    hdr = {**auth("killgate:kill killgate:read"), "Content-Type": "application/json"}
    req = urllib.request.Request(admin + "/v1/kill", data=json.dumps(body).encode(),
                                 headers=hdr, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_a_local_kill_does_not_blind_the_instance_to_the_fleets_kills(
        tmp_path: Path, backends: Any, session: ClientSession, redis_server: RedisServer,
        gateway_procs: Any) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path / "a", routes, state=_section(redis_server, tmp_path, "a"))
    cfg_b = write_config(tmp_path / "b", routes, state=_section(redis_server, tmp_path, "b"),
                         listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    b = gateway_procs(cfg_b)
    async with running_gateway(cfg_a, instance="a") as g:
        await asyncio.get_running_loop().run_in_executor(None, b.wait_ready)
        sync = g.gw.sync
        await wait_until(lambda: sync.connected, 10, what="A synced")
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "1")  # (no replica)
        await wait_until(lambda: sync.status()["writes_refused"] is not None, 10,
                         what="the refused writes said")
        # the lever the refusal names, on A: v2 (weight 0) killed here only
        hdr = auth("killgate:kill killgate:read")
        async with session.post(g.admin + "/v1/kill?local=1", headers=hdr, json={
                "scope": "version", "route": "iris", "version": "v2",
                "reason": "local"}) as r:
            assert r.status == 202, await r.text()
        assert (await status_of(session, g.url))[0] == 200
        # writes taken for a moment (a replica back briefly), while A's loop does not run:
        # an operator on B kills the whole route
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "0")
        st, text = _kill_blocking(b.admin, {"scope": "route", "route": "iris",
                                            "reason": "fleet"})
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "1")
        assert st == 200, text
        # A reads the store every 100 ms and hears B's push: the fleet's kill in force here
        await wait_until(lambda: "route:iris" in sync.holder.doc.kills, 3,
                         what="B's kill applied on A while writes are refused")
        assert (await status_of(session, g.url))[0] == 503
        assert "version:iris:v2" in sync.holder.local_kills  # (the local kill kept)
        # and when writes come back, merged exactly once, audited once
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "0")
        await wait_until(lambda: sync.status()["writes_refused"] is None, 10,
                         what="writes taken again")
        await wait_until(lambda: "version:iris:v2" in sync.holder.doc.kills, 10,
                         what="the local kill merged")
        await wait_until(lambda: not sync.holder.local_kills, 10, what="journal emptied")
        async with session.get(g.admin + "/v1/audit?limit=100", headers=hdr) as r:
            trail = await r.json()
        merged = [e for e in trail["events"] if "local" in e]
        assert [(e["action"], e["target"].get("version")) for e in merged] \
            == [("kill", "v2")], trail
    b.stop()
