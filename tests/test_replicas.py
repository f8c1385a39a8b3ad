"""RELIABILITY row 19: a replica promotion must not lose an acknowledged kill.

A primary and a replica on loopback; the gateway reaches "the primary" through a small
TCP forwarder the test can repoint, which is what a failover looks like from the client.
With `min_replicas: 1` a write is acknowledged only once the replica holds it (WAIT);
when the replica does not confirm, the call says so (503 `not_durable`) while the kill
stays in force; and when the replica that missed the kill is promoted anyway, the
instances that hold it re-seed it.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_forgery import stored_doc
from tests.test_killswitch import auth, status_of


def _info(redis: RedisServer, field: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "INFO", "replication"],
                         capture_output=True, text=True, timeout=5).stdout
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


async def attach_replica(primary: RedisServer, replica: RedisServer) -> None:
    """`replica` made the only replica of `primary`, and online: it has acked once, so WAIT
    counts it (right after a sync it may not have yet)."""
    replica.cmd("REPLICAOF", "127.0.0.1", str(primary.port))
    await wait_until(lambda: _info(primary, "connected_slaves") == "1"
                     and "state=online" in _info(primary, "slave0")
                     and _info(replica, "master_link_status") == "up", 10,
                     what="the replica to attach")


async def _post(session: ClientSession, admin: str, path: str, **body: object
                ) -> tuple[int, dict, str | None]:
    body.setdefault("reason", "row 19")
    async with session.post(f"{admin}{path}?wait=2s", json=body, headers=auth()) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def test_promotion_never_loses_an_acknowledged_kill(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    primary, replica = redis_server, second_redis
    await attach_replica(primary, replica)
    p = await backends(echo_app("v1"))
    # (replica_timeout 600 ms: an attached replica's ack took over 200 ms once in a CI run)
    state = redis_state_via(fwd, tmp_path, "kgrep", command_timeout="1s",
                            min_replicas="1", replica_timeout="600ms")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        # 1. Confirmed: when the call answers, the replica already holds the kill.
        status, data, _ = await _post(session, g.admin, "/v1/kill", scope="route",
                                      route="iris")
        assert status == 200, data
        assert "route:iris" in stored_doc(replica, "kgrep")["kills"]  # no waiting: WAIT did
        status, data, _ = await _post(session, g.admin, "/v1/unkill", scope="route",
                                      route="iris")
        assert status == 200, data

        # 2. The replica stops replicating: the kill is in force, the call says it is
        #    not confirmed (quickly), and a retry says so again rather than "done".
        replica.cmd("REPLICAOF", "NO", "ONE")
        await wait_until(lambda: _info(primary, "connected_slaves") == "0", 10,
                         what="the replica to detach")
        counted = g.gw.metrics.get("killgate_writes_not_durable_total") or 0
        t0 = time.monotonic()
        status, data, retry_after = await _post(session, g.admin, "/v1/kill",
                                                scope="route", route="iris")
        assert status == 503 and data["error"]["type"] == "not_durable", data
        assert retry_after == "1"
        assert "in force" in data["error"]["message"]
        assert time.monotonic() - t0 < 2.0  # (replica_timeout, not the 2 s ?wait too)
        assert (await status_of(session, g.url))[0] == 503  # enforced all the same
        assert "route:iris" not in stored_doc(replica, "kgrep")["kills"]
        status, data, _ = await _post(session, g.admin, "/v1/kill", scope="route",
                                      route="iris")
        assert status == 503 and data["error"]["type"] == "not_durable", data
        # both counted (a write of the instance's own, its config record, may be too)
        assert g.gw.metrics.get("killgate_writes_not_durable_total") - counted >= 2

        # 3. The replica that missed the kill is promoted: the gateway follows it,
        #    keeps enforcing, and re-seeds it with the kill it holds.
        fwd.point(replica.port)
        deadline = time.monotonic() + 10
        while "route:iris" not in stored_doc(replica, "kgrep")["kills"]:
            assert time.monotonic() < deadline, "the promoted replica was not re-seeded"
            assert (await status_of(session, g.url))[0] == 503  # never lifted meanwhile
            await asyncio.sleep(0.02)
        assert "state.reseed" in replica.cmd("XREVRANGE", "kgrep:audit", "+", "-",
                                             "COUNT", "5")


async def test_waiting_for_replicas_does_not_stall_the_sync(tmp_path: Path, backends, session,
                                                            fwd: Forwarder) -> None:
    """WAIT blocks its connection for up to replica_timeout; polls and heartbeats run on
    another, so the instance does not go stale while a write waits for replicas."""
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kgwait", command_timeout="300ms",
                            min_replicas="1", replica_timeout="1500ms")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        t0 = time.monotonic()
        call = asyncio.ensure_future(_post(session, g.admin, "/v1/kill", scope="route",
                                           route="iris"))
        worst = 0.0
        while not call.done():
            worst = max(worst, g.gw.sync.staleness())
            await asyncio.sleep(0.05)
        status, data, _ = await call
        assert status == 503 and data["error"]["type"] == "not_durable", data  # no replica
        assert time.monotonic() - t0 >= 1.4  # the WAIT ran its course, undisturbed
        # and polls went on meanwhile: a sync loop held up by the WAIT would be >= 1.4 s
        # stale. Healthy it is poll_interval + a round trip (~0.1 s); the bound leaves a
        # loaded machine room for one poll that misses command_timeout (0.3 s) and reconnects
        assert worst < 1.0, worst
        assert g.gw.sync.connected


async def test_a_demoted_primary_is_left_for_the_new_one(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    """After a failover the connection we hold may lead to the old primary, now a replica
    (READONLY). The refused call drops it, and the retry reaches the new primary."""
    old, new = redis_server, second_redis
    p = await backends(echo_app("v1"))
    state = redis_state_via(fwd, tmp_path, "kgdem", command_timeout="300ms")
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg) as g:
        # the failover: `new` takes over, `old` follows it; connections stay open, and
        # new connections (as a sentinel would say) go to `new`
        new.cmd("REPLICAOF", "127.0.0.1", str(old.port))
        await wait_until(lambda: _info(new, "master_link_status") == "up", 10,
                         what="the new node to catch up")
        new.cmd("REPLICAOF", "NO", "ONE")
        old.cmd("REPLICAOF", "127.0.0.1", str(new.port))
        fwd.target = new.port
        status, data, _ = await _post(session, g.admin, "/v1/kill", scope="route",
                                      route="iris")
        assert status == 503, data  # refused by the demoted node: nothing changed
        status, data, _ = await _post(session, g.admin, "/v1/kill", scope="route",
                                      route="iris")
        assert status == 200, data  # the retry found the new primary
        assert "route:iris" in new.cmd("GET", "kgdem:state")
        assert (await status_of(session, g.url))[0] == 503
