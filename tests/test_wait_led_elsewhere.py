"""A write's WAIT for its replicas, in flight when the sentinels come to name another master,
is cut with the store's other connections (state/redis.py `_follow_the_sentinels`): the
replicas of a node the sentinels no longer lead to confirm nothing the fleet reads.

Before: the check dropped the command, write and subscribed connections but not the one a
WAIT had to itself (redislink.py `_alone`): the WAIT went on, the old master's replica
confirmed the write (a kill answered 200 that the master the fleet reads never held), and
the connection went back to the empty "write" slot, so the next commits went to the old
master too until the next check. Real redis-server processes: a master, its replica
(SIGSTOPped while the WAIT is in flight, as a busy one acks late), three sentinels, and a
second master they are re-pointed to (what a failover the old master did not see looks
like from its side)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreUnavailable
from gateway.state.redis import RedisStore
from tests.conftest import RedisServer, wait_until
from tests.redisha import RedisNode, SentinelCluster
from tests.staterig import state_keys

pytestmark = pytest.mark.timeout(90)


def _waiting(node: RedisNode) -> bool:
    out = subprocess.run(["redis-cli", "-p", str(node.port), "CLIENT", "LIST"],
                         capture_output=True, text=True, timeout=5).stdout
    return "cmd=wait" in out


async def test_a_wait_on_a_master_the_sentinels_no_longer_name_confirms_nothing(
        tmp_path: Path, second_redis: RedisServer) -> None:
    # (down-after long: the replica's SIGSTOP below starts no failover of its own)
    cluster = SentinelCluster(tmp_path, down_after_ms=60000, failover_timeout_ms=60000)
    await asyncio.to_thread(cluster.start)
    store = RedisStore(cluster.url, "kgled", 1.0, keys=state_keys())
    frozen = False
    try:
        await store.open()
        await store.commit(None, StateDoc(generation=1), AuditDraft("ops", "kill", {}, "x"))
        assert store._committed is not None
        old = store._committed[0]
        assert old.address == ("127.0.0.1", cluster.master.port)
        assert cluster.replica.proc is not None
        cluster.replica.proc.send_signal(19)  # SIGSTOP: its ack of the commit comes late
        frozen = True
        waited = asyncio.ensure_future(store.replicated(1, 20.0, 1))
        await wait_until(lambda: _waiting(cluster.master), 10, 0.02, what="the WAIT")
        for s in cluster.sentinels:  # (they name another master now)
            s.cmd("SENTINEL", "REMOVE", cluster.name)
            s.cmd("SENTINEL", "MONITOR", cluster.name, "127.0.0.1", str(second_redis.port),
                  "2")
        store._master_check = 0.0
        with pytest.raises(StoreUnavailable, match="the sentinels name"):
            await store.watch(0.01)
        cluster.replica.proc.send_signal(18)  # SIGCONT: it acks the commit now
        frozen = False
        with pytest.raises(StoreUnavailable):  # (before: 1, the old master's replica)
            await asyncio.wait_for(waited, 30)
        assert not old.is_open
        assert store._conns.get("write") is not old  # (before: back in the slot)
    finally:
        if frozen and cluster.replica.proc is not None:
            cluster.replica.proc.send_signal(18)
        await store.close()
        await asyncio.to_thread(cluster.stop)
