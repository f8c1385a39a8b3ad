"""revnewuser10's failover, seen before a kill fails: behind Sentinel with `min_replicas: 1`,
the master SIGKILLed, the promoted replica has no replica of its own until the old master
rejoins, and every kill is answered 503 not_durable meanwhile. `killgate status` said the
store was "reachable" only; now it says NOT DURABLE (and /v1/status `store.replicas`,
`killgate_state_replicas` 0) within a few heartbeats of the failover, and clears when the
old master is back as a replica. Real processes: a master, a replica and three sentinels
(tests/redisha.py), a `killgate serve` on the Sentinel URL, the `killgate` CLI.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.backends import echo_app
from tests.conftest import free_port, two_versions, wait_until, write_config
from tests.redisha import SentinelCluster, redis_state_yaml, state_key_env
from tests.test_cli import acli
from tests.test_killswitch import auth, token

pytestmark = pytest.mark.timeout(120)


def _get(url: str) -> str:
    with urllib.request.urlopen(urllib.request.Request(url, headers=auth()), timeout=2) as r:
        return str(r.read().decode())


async def test_a_failover_that_leaves_no_replica_is_said_at_once(
        tmp_path: Path, backends: Any, gateway_procs: Any) -> None:
    cluster = SentinelCluster(tmp_path, down_after_ms=500, failover_timeout_ms=2000)
    cluster.start()
    try:
        p = await backends(echo_app("v1"))
        state = redis_state_yaml(cluster.url, f"{tmp_path}/snap.json", "kgsentdur",
                                 min_replicas="1", replica_timeout="300ms")
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state,
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
        g = gateway_procs(cfg, env=state_key_env())
        await asyncio.to_thread(g.wait_ready)
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token()}

        async def replicas() -> Any:
            try:
                st = json.loads(await asyncio.to_thread(_get, f"{g.admin}/v1/status"))
            except OSError:
                return None
            return st["store"].get("replicas")

        async def gauge() -> str:
            page = await asyncio.to_thread(_get, f"{g.admin}/metrics")
            return next((ln.split()[1] for ln in page.splitlines()
                         if ln.startswith("killgate_state_replicas ")), "absent")

        async def first_line() -> str:
            res = await acli("status", env=env)
            assert res.returncode == 0, res
            return res.stdout.splitlines()[0]

        latest: list[Any] = [None]

        async def seen(want: dict[str, int]) -> bool:
            latest[0] = await replicas()
            return latest[0] == want

        await wait_until(lambda: seen({"connected": 1, "required": 1}), 15,
                         interval=0.05, what="the replica counted")
        assert "NOT DURABLE" not in await first_line()

        old = cluster.master.port
        cluster.master.kill()
        await asyncio.to_thread(cluster.wait_failover, old)
        await wait_until(lambda: seen({"connected": 0, "required": 1}), 20,
                         interval=0.05, what="the promoted primary's missing replica said")
        assert "reachable, NOT DURABLE: the primary has 0 of 1 replicas (min_replicas)" \
            in await first_line()
        assert await gauge() == "0.0"

        cluster.master.start()  # (the old master back: the sentinels make it a replica)
        await wait_until(lambda: seen({"connected": 1, "required": 1}), 30,
                         interval=0.05, what="the old master back as a replica")
        assert "NOT DURABLE" not in await first_line()
        assert await gauge() == "1.0"
    finally:
        cluster.stop()
