"""A store-loss drill given the fleet's Sentinel URL (`--store redis+sentinel://...`, as the
README's plan comment allows) pauses the master with CLIENT PAUSE ALL, which keeps the
sentinels' pings waiting too: a `--hold` as long as their `down-after-milliseconds` ends in
a real failover of the production store. Found by review (revnewuser10, following the
README on a Sentinel setup with down-after 3 s): `--hold 8s` promoted the replica, and the
drill said PASSED, "the state store was unreachable for 8000 ms", never that it had failed
the store over. The drill now asks the sentinels first, and skips (exit 3, nothing
opened, nothing paused) a hold that is not well below (half) their down-after.

Real processes: a master, a replica and three sentinels (tests/redisha.py), a `killgate
serve` on the Sentinel URL with two backends, and the `killgate drill` CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import free_port, write_config
from tests.drillfleet import token
from tests.drillrig import routes
from tests.redisha import SentinelCluster, redis_state_yaml, state_key_env
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(90)


async def test_a_store_loss_hold_the_sentinels_would_fail_over_is_skipped(
        tmp_path: Path, backends, gateway_procs) -> None:
    cluster = SentinelCluster(tmp_path, down_after_ms=2000, failover_timeout_ms=3000)
    cluster.start()
    try:
        p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
        state = redis_state_yaml(cluster.url, f"{tmp_path}/snap.json", "kgsenthold")
        cfg = write_config(tmp_path, routes(p1, p2), state=state,
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
        g = gateway_procs(cfg, env=state_key_env())
        await asyncio.to_thread(g.wait_ready)
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token()}
        # without --store: skipped, saying which URL to give (it named none)
        res = await acli("drill", "store-loss", "--route", "iris-drill", "--version", "v2",
                         "--json", env=env)
        assert res.returncode == 3, res
        assert "give it the fleet's state.url (behind Sentinel, its redis+sentinel:// URL)" \
            in json.loads(res.stdout)["reasons"][0], res
        res = await acli("drill", "store-loss", "--route", "iris-drill", "--version", "v2",
                         "--rate", "20", "--steady", "500ms", "--hold", "3s", "--settle",
                         "500ms", "--store", cluster.url, "--json", "--out",
                         str(tmp_path / "reports"), env=env)
        report = json.loads(res.stdout) if res.stdout.strip() else {}
        # the master the fleet started on is the master still: nothing was failed over
        assert cluster.master_port() == cluster.master.port, res
        assert cluster.master.info("replication", "role") == "master", res
        assert (res.returncode, report.get("verdict"), report.get("id")) \
            == (3, "skipped", None), res
        [why] = report["reasons"]
        assert "down-after-milliseconds" in why and "2000 ms" in why, why
        assert "--hold 1s" in why, why  # (what would run: below half of it)
        # a hold at half of it runs, pauses the master, and fails nothing over
        res = await acli("drill", "store-loss", "--route", "iris-drill", "--version", "v2",
                         "--rate", "20", "--steady", "500ms", "--hold", "1s", "--settle",
                         "500ms", "--store", cluster.url, "--json", "--out",
                         str(tmp_path / "reports"), env=env)
        report = json.loads(res.stdout) if res.stdout.strip() else {}
        assert (res.returncode, report.get("verdict")) == (0, "passed"), res
        assert "store paused for 1s" in res.stderr, res.stderr
        assert cluster.master_port() == cluster.master.port, res
    finally:
        cluster.stop()
