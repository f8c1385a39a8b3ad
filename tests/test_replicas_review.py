"""Hostile review of `min_replicas` (RELIABILITY row 19): a retry's confirmation.

WAIT counts the replicas holding the last write made on the connection it runs on; on a
connection that wrote nothing (another instance's, or one reconnected after an
outcome_unknown) it counts every attached replica at once, whatever they hold.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.faultproxy import Forwarder, redis_state_via
from tests.test_forgery import stored_doc
from tests.test_replicas import _info, _post

pytestmark = pytest.mark.timeout(60)


async def test_a_retry_on_another_instance_is_not_confirmed_by_a_stalled_replica(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    """A kill the replica did not confirm answers not_durable, and its retry (the answer
    says: retry the same call) must say so again on any instance until the replica holds
    it. The retry found the kill in force (a no-op) and WAITed on a connection that had
    written nothing: the stalled replica, still attached, was counted and the retry
    answered 200, an acknowledged kill a promotion of that replica loses."""
    primary, replica = redis_server, second_redis
    primary.cmd("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    replica.cmd("REPLICAOF", "127.0.0.1", str(primary.port))
    await wait_until(lambda: "state=online" in primary.cmd("INFO", "replication")
                     and _info(replica, "master_link_status") == "up", 15,
                     what="the replica to attach")
    p = await backends(echo_app("v1"))
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        state = redis_state_via(fwd, tmp_path / name, "kgdur", command_timeout="300ms",
                                min_replicas="1", replica_timeout="300ms")
        configs.append(write_config(tmp_path / name, two_versions(p, p, 100, 0), state=state))
    async with running_gateway(configs[0], "a") as a, running_gateway(configs[1], "b") as b:
        replica.freeze()  # still attached as far as the primary knows (repl-timeout: 60 s)
        try:
            status, data, _ = await _post(session, a.admin, "/v1/kill", scope="route",
                                          route="iris")
            assert status == 503 and data["error"]["type"] == "not_durable", data
            status, data, _ = await _post(session, b.admin, "/v1/kill", scope="route",
                                          route="iris")
            assert status == 503 and data["error"]["type"] == "not_durable", data
            status, data, _ = await _post(session, a.admin, "/v1/kill", scope="route",
                                          route="iris")
            assert status == 503 and data["error"]["type"] == "not_durable", data
        finally:
            replica.thaw()
        # (the thawed replica may not hold the key at all yet: a full resync)
        await wait_until(lambda: replica.cmd("EXISTS", "kgdur:state") == "1"
                         and "route:iris" in stored_doc(replica, "kgdur")["kills"], 10,
                         what="the replica to catch up")
        status, data, _ = await _post(session, b.admin, "/v1/kill", scope="route",
                                      route="iris")
        assert status == 200 and data["changed"] is False, data


async def test_a_kill_whose_connection_moved_to_another_node_is_not_confirmed_there(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        second_redis: RedisServer, fwd: Forwarder) -> None:
    """The sentinel check drops every connection when the sentinels name another master
    (redis._follow_the_sentinels): between a kill's commit on the old master and its WAIT,
    the WAIT went out on a new connection, to the new master, which never had the kill,
    and counted that node's replica at once (a connection that wrote nothing): 200, an
    acknowledged kill lost with the old master. The WAIT must run on the connection that
    committed; closed, nothing is confirmed."""
    old, new = redis_server, second_redis
    (tmp_path / "redis3").mkdir()
    new_replica = RedisServer(tmp_path / "redis3")
    new_replica.start()
    try:
        new.cmd("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        new_replica.cmd("REPLICAOF", "127.0.0.1", str(new.port))
        await wait_until(lambda: "state=online" in new.cmd("INFO", "replication"), 15,
                         what="the new master's replica to attach")
        p = await backends(echo_app("v1"))
        state = redis_state_via(fwd, tmp_path, "kgmove", command_timeout="300ms",
                                min_replicas="1", replica_timeout="300ms")
        cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
        async with running_gateway(cfg) as g:
            store = g.gw.sync.store

            def failover(ev: dict, doc: object) -> None:
                # what the sentinel check does when the sentinels name another master
                fwd.point(new.port)
                for c in list(store._conns.values()):
                    c.close()

            g.gw.sync.committed.append(failover)
            status, data, _ = await _post(session, g.admin, "/v1/kill", scope="route",
                                          route="iris")
            assert status == 503 and data["error"]["type"] == "not_durable", data
            assert "route:iris" in stored_doc(old, "kgmove")["kills"]  # (there only)
    finally:
        new_replica.kill()
