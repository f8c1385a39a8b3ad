"""An instance's addresses that do not verify are counted once, not at every fleet read
(found by review revfalse2: `_open_urls` reported the same stored value again at each read,
so one forged `<prefix>:instances:urls` entry beside a live instance's genuine heartbeat grew
`store.verification.unverified_total`, `killgate_state_unverified_total{kind="heartbeat"}`
and the console's "N store value(s) refused" without bound: every `/v1/fleet`, receipt
and drill read). Counted once while it stays as it is; written again (another value), it is
counted again; the instance's genuine addresses, written by its next heartbeat, are read.
Real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RedisServer
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(20)

URLS = {"admin": "http://127.0.0.1:9", "data": "http://127.0.0.1:8"}


async def test_refused_addresses_are_counted_once(redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgurls1") as pair:
        a, b, refused = pair.a, pair.b, pair.refused
        await b.heartbeat("b", 1, "sha256:x", URLS)
        assert (await a.fleet(5.0))["b"]["admin"] == URLS["admin"]
        raw = await asyncio.to_thread(redis_server.cmd, "HGET", "kgurls1:instances:urls", "b")
        kid, mac, addr = raw.split(" ", 2)
        forged = f"{kid} {'0' * len(mac)} " + addr.replace("9", "7")
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgurls1:instances:urls", "b", forged)
        for _ in range(4):
            got = await a.fleet(5.0)
            assert got["b"]["generation"] == 1 and "admin" not in got["b"], got
        assert len(refused) == 1 and refused[0].startswith("heartbeat: addresses"), refused
        # another forged value: counted again
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgurls1:instances:urls", "b",
                                forged.replace("7", "6"))
        await a.fleet(5.0)
        await a.fleet(5.0)
        assert len(refused) == 2, refused
        # its genuine addresses, written again by its heartbeat, are read; forged once more
        # as the first time: a value read since, counted again
        await b.heartbeat("b", 2, "sha256:x", URLS)
        assert (await a.fleet(5.0))["b"]["admin"] == URLS["admin"]
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgurls1:instances:urls", "b", forged)
        await a.fleet(5.0)
        assert len(refused) == 3, refused
