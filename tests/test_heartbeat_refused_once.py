"""A heartbeat that does not verify is counted once, not at every fleet read (found by
review revfalse: `store.verification.unverified_total` and the console's "N store
value(s) refused" counted one value again at each read for its 10 leases: a crashed
instance's heartbeat signed with a key retired since, or one forged entry, read as
dozens). The value refused at the last read is not judged (nor counted) again; written
again (a fresh stamp), it is another value, counted again. Real redis-server."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RedisServer
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(20)


async def test_a_refused_heartbeat_is_counted_once(redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgonce") as pair:
        a, b, refused = pair.a, pair.b, pair.refused
        await b.heartbeat("b", 1, "sha256:x")
        raw = await asyncio.to_thread(redis_server.cmd, "HGET", "kgonce:instances", "b")
        stamp, _, record = raw.partition(" ")
        kid, mac, rest = record.split(" ", 2)
        assert rest.endswith(" b")
        bad = f"{stamp} {kid} {'0' * len(mac)} {rest[:-1]}c"  # (a MAC no key of ours made)
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgonce:instances", "c", bad)
        for _ in range(3):
            assert "c" not in await a.fleet(5.0)
        assert len(refused) == 1 and refused[0].startswith("heartbeat:"), refused
        assert (await a.fleet(5.0))["b"]["generation"] == 1
        stamp2 = str(int(stamp) + 1)
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgonce:instances", "c",
                                stamp2 + bad[len(stamp):])
        assert "c" not in await a.fleet(5.0)
        assert len(refused) == 2, refused
