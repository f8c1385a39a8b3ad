"""Instances' addresses for drills, published with their heartbeats (state/redisaux.py), on
a real redis-server: signed like the heartbeat, ignored when they do not verify."""

from __future__ import annotations

import asyncio

from tests.conftest import RedisServer


async def test_published_addresses_are_signed(redis_server: RedisServer) -> None:
    """A drill reaches each instance at the address it published with its heartbeat
    (state/redisaux.py): one written into Redis by anyone without the key is ignored."""
    from gateway.state.redis import RedisStore
    from gateway.state.signing import Key, Keyring
    from tests.conftest import STATE_KEY

    seen: list[tuple[str, str]] = []
    store = RedisStore(redis_server.url, "kgaddr", 1.0, keys=Keyring(Key.of(STATE_KEY.encode())),
                       on_unverified=lambda kind, why, which: seen.append((kind, why)))
    await store.open()
    try:
        urls = {"data": "http://10.0.0.5:8080", "admin": "http://10.0.0.5:8081"}
        await store.heartbeat("a", 3, "sha256:x", urls)
        await store.heartbeat("b", 3, "sha256:x")  # an older instance: no addresses
        fleet = await store.fleet(5.0)
        assert {k: fleet["a"][k] for k in ("data", "admin")} == urls
        assert "data" not in fleet["b"]
        # someone with write access to Redis points drills elsewhere
        forged = '- - {"admin":"http://evil:1","data":"http://evil:2"}'
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgaddr:instances:urls", "a", forged)
        fleet = await store.fleet(5.0)
        assert "data" not in fleet["a"] and fleet["a"]["generation"] == 3
        assert seen and seen[-1][0] == "heartbeat"
    finally:
        await store.close()
