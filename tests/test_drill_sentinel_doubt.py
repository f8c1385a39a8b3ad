"""A store-loss drill's check of a Sentinel URL (`check_store(..., hold=)`) never lets the
pause run on doubt, and no sentinel's answer crashes it. Found by review (revdrill10):

- a sentinel whose ACL lets clients ask for the master's address but not `SENTINEL MASTER`
  (a restricted default user) said nothing of its down-after-milliseconds, and the check
  took that silence for "no limit": a `--hold 60s` was cleared to pause the production
  store for a minute (every sentinel's pings waiting on it: a real failover);
- a sentinel answering a down-after of 5,000 digits (int() refuses over 4,300) or a
  nested array raised ValueError / TypeError out of the check: the drill died with a
  traceback instead of saying why, although the other sentinel had answered 2000 ms.

Real processes: a redis-server (the fleet's store: its state key and an instance's
heartbeat) and a real redis sentinel watching it; the forged sentinel is a tiny RESP server
on loopback (conftest's `odd_server`: what it says a real sentinel cannot be made to say)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.state.pause import check_store
from tests.conftest import OddServer, RedisServer
from tests.redisha import RedisNode

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
        why = await asyncio.wait_for(check_store(url, PREFIX, ["i1"], hold=3.0), 10)
        # (the real sentinel's 2000 ms: a 3 s hold would fail the store over)
        assert why is not None and "2000 ms" in why, why
        assert await check_store(url, PREFIX, ["i1"], hold=1.0) is None
    finally:
        s.stop()
