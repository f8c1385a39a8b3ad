"""While redis refuses every write (-NOREPLICAS: its own min-replicas-to-write), every
instance's heartbeat is refused, but each one still reads and applies the store (synced:
writesrefused.py). Found by revlate47 with real processes: past the lease `killgate status`
listed every other instance SILENT, "crashed, or cut off from the store and NOT enforcing
changes made since (check it, or stop it)": at 3 a.m. that sends the SRE to stop healthy,
synced instances in the middle of the store's incident. Now the row says why it is not
heard (the store refuses the heartbeats it would write) and that it cannot be told from
here. Real redis, two in-process gateways, the real CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import (
    RedisServer,
    admin_token,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.staterig import redis_state
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(90)


async def test_instances_unheard_while_writes_are_refused_are_not_called_cut_off(
        tmp_path: Path, backends: Any, session: ClientSession,
        redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    cfgs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        cfgs.append(write_config(tmp_path / name, routes,
                                 state=redis_state(redis_server, tmp_path, name)))
    async with running_gateway(cfgs[0], instance="a") as a, \
            running_gateway(cfgs[1], instance="b") as b:
        hdr = {"Authorization": f"Bearer {admin_token('killgate:read')}"}

        async def live() -> set[str]:
            async with session.get(a.admin + "/v1/status", headers=hdr) as r:
                return set((await r.json()).get("instances") or {})

        async def heard_b() -> bool:
            return "b" in await live()

        async def unheard_b() -> bool:
            return "b" not in await live()

        await wait_until(heard_b, 10, interval=0.05, what="both heard")
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "1")  # (no replica)
        await wait_until(lambda: a.gw.sync.status()["writes_refused"] is not None
                         and b.gw.sync.status()["writes_refused"] is not None, 10,
                         what="the refused writes said on both")
        # past the lease (2 s): b's heartbeat not heard by a, though b reads the store
        await wait_until(unheard_b, 10, interval=0.05,
                         what="b out of a's live instances")
        assert b.gw.sync.connected and not b.gw.sync.status()["stale"]
        env = {"KILLGATE_ADMIN_URL": a.admin, "KILLGATE_TOKEN": admin_token("killgate:read")}
        res = await acli("status", env=env)
        assert res.returncode == 0, res.stderr
        rows = [line for line in res.stdout.splitlines() if line.lstrip().startswith("b ")]
        assert rows, res.stdout
        assert "NOT enforcing" not in rows[0] and "stop it" not in rows[0], res.stdout
        assert "WRITES REFUSED" in rows[0] and "/v1/status" in rows[0], res.stdout
        redis_server.cmd("CONFIG", "SET", "min-replicas-to-write", "0")
