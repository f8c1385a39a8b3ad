"""A store-loss drill's check of a Sentinel URL (`check_store(..., hold=)`) never lets the
pause run on doubt, and no sentinel's answer crashes it. Found by review (revdrill10):

- a sentinel whose ACL lets clients ask for the master's address but not `SENTINEL MASTER`
  (a restricted default user) said nothing of its down-after-milliseconds, and the check
  took that silence for "no limit": a `--hold 60s` was cleared to pause the production
  store for a minute (every sentinel's pings waiting on it: a real failover);
- a sentinel answering a down-after of 5,000 digits (int() refuses over 4,300) or a
  nested array raised ValueError / TypeError out of the check: the drill died with a
  traceback instead of saying why;
- a sentinel the drill cannot reach (but the master can: a firewall, another network)
  was left out, and the others' down-after taken as the limit: with two sentinels at 30 s
  and the unreachable third at 2 s (quorum 1), a `--hold 3s` was cleared, and the pause
  failed the production store over (seen by hand on main: the replica promoted).

Real processes: a redis-server (the fleet's store: its state key and an instance's
heartbeat) and a real redis sentinel watching it, or a master, a replica and three
sentinels (tests/redisha.py); the forged sentinel is a tiny RESP server
on loopback (conftest's `odd_server`: what it says a real sentinel cannot be made to say)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.state.pause import check_store
from tests.conftest import OddServer, RedisServer, free_port
from tests.redisha import RedisNode, SentinelCluster

pytestmark = pytest.mark.timeout(60)

SERVICE = "kgdoubt"
PREFIX = "kgd"


def _bulk(b: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(b), b)


def _fleet_store(redis: RedisServer) -> None:
    """The fleet's store as check_store recognises it: its state and one heartbeat."""
    redis.cmd("SET", f"{PREFIX}:state", "{}")
    redis.cmd("HSET", f"{PREFIX}:instances", "i1", "{}")


def _sentinel(tmp_path: Path, redis: RedisServer, conf: str = "") -> RedisNode:
    node = RedisNode(tmp_path, f"sentinel-{len(list(tmp_path.glob('sentinel-*')))}",
                     sentinel=True)
    node.start(f"sentinel monitor {SERVICE} 127.0.0.1 {redis.port} 1\n"
               f"sentinel down-after-milliseconds {SERVICE} 2000\n" + conf)
    return node


async def test_sentinels_that_do_not_say_their_down_after_refuse_the_hold(
        tmp_path: Path, redis_server: RedisServer) -> None:
    _fleet_store(redis_server)
    s = _sentinel(tmp_path, redis_server,
                  "user default on nopass ~* &* +@all -sentinel|master\n")
    try:
        url = f"redis+sentinel://127.0.0.1:{s.port}/{SERVICE}/0"
        assert await check_store(url, PREFIX, ["i1"]) is None  # (the fleet's store)
        why = await asyncio.wait_for(check_store(url, PREFIX, ["i1"], hold=60.0), 10)
        assert why is not None, "a 60 s pause was cleared though no sentinel said its limit"
        assert "down-after-milliseconds" in why and SERVICE in why, why
        assert "NOPERM" in why, why  # (what the sentinel answered: what to change)
    finally:
        s.stop()


@pytest.mark.parametrize("forged", [
    _bulk(b"9" * 5000),  # (int() refuses more than 4,300 digits)
    b"*1\r\n*0\r\n",  # (an array where a number is: unhashable as a key)
], ids=["5000-digits", "nested-array"])
async def test_a_forged_down_after_does_not_crash_the_check(
        tmp_path: Path, redis_server: RedisServer, odd_server: OddServer,
        forged: bytes) -> None:
    _fleet_store(redis_server)
    s = _sentinel(tmp_path, redis_server)
    master = b"*2\r\n" + _bulk(b"127.0.0.1") + _bulk(str(redis_server.port).encode())

    def sentinel(cmd: list[bytes]) -> bytes:
        if bytes(cmd[1]).lower() == b"master":
            if forged.startswith(b"$"):
                return b"*2\r\n" + _bulk(b"down-after-milliseconds") + forged
            return b"*2\r\n" + forged + forged
        return master

    odd = await odd_server({b"SENTINEL": sentinel})
    odd_port = odd.split(":")[-1].split("/")[0]
    try:
        url = f"redis+sentinel://127.0.0.1:{s.port},127.0.0.1:{odd_port}/{SERVICE}/0"
        for hold in (3.0, 0.5):  # (refused, said: a sentinel that says no number is doubt)
            why = await asyncio.wait_for(check_store(url, PREFIX, ["i1"], hold=hold), 10)
            assert why is not None and f"127.0.0.1:{odd_port}: answered no down-after" \
                in why, why
    finally:
        s.stop()


async def test_a_sentinel_the_drill_cannot_reach_refuses_the_hold(tmp_path: Path) -> None:
    cluster = SentinelCluster(tmp_path, down_after_ms=2000, failover_timeout_ms=3000)
    cluster.start()
    try:
        for s in cluster.sentinels[:2]:
            s.cmd("SENTINEL", "SET", cluster.name, "down-after-milliseconds", "30000")
        near = cluster.sentinels[2]
        near.cmd("SENTINEL", "SET", cluster.name, "quorum", "1")  # (it alone fails over)
        cluster.master.cmd("SET", f"{PREFIX}:state", "{}")
        cluster.master.cmd("HSET", f"{PREFIX}:instances", "i1", "{}")
        dead = free_port()  # (where the drill would reach the third: nothing answers)
        listed = [f"127.0.0.1:{s.port}" for s in cluster.sentinels[:2]]
        url = f"redis+sentinel://{','.join([*listed, f'127.0.0.1:{dead}'])}/{cluster.name}/0"
        why = await asyncio.wait_for(check_store(url, PREFIX, ["i1"], hold=3.0), 15)
        assert why is not None, "a 3 s pause was cleared: the third sentinel fails over at 2 s"
        assert f"127.0.0.1:{dead}" in why and "down-after-milliseconds" in why, why
        # reached, it says its own: the hold is refused for it
        why = await check_store(cluster.url, PREFIX, ["i1"], hold=3.0)
        assert why is not None and "2000 ms" in why, why
        assert cluster.master_port() == cluster.master.port  # (nothing failed over)
    finally:
        cluster.stop()
