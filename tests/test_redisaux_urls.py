"""Instances' addresses for drills, published with their heartbeats (state/redisaux.py), on
a real redis-server: signed like the heartbeat, ignored when they do not verify."""

from __future__ import annotations

import asyncio

from tests.conftest import RedisServer
from tests.staterig import store_on


async def test_published_addresses_are_signed(redis_server: RedisServer) -> None:
    """A drill reaches each instance at the address it published with its heartbeat
    (state/redisaux.py): one written into Redis by anyone without the key is ignored."""
    seen: list[tuple[str, str]] = []
    store = store_on(redis_server, "kgaddr",
                     on_unverified=lambda kind, why, which, cause="other": seen.append((kind, why)))
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


async def test_a_replayed_heartbeat_does_not_bring_back_an_instance_or_its_address(
        redis_server: RedisServer) -> None:
    """Someone with write access to Redis but no key replays a heartbeat and the address
    record an instance signed long ago (it died; its pod IP may be someone else's now),
    stamped with the server's time as the heartbeat script stamps it. The signed time
    inside is hours old: the instance is not listed (not in receipts, /v1/status, nor
    among the addresses a drill sends its token to when the admin URL it was given dies:
    control/drillreach.py)."""
    import time

    seen: list[tuple[str, str]] = []
    old = store_on(redis_server, "kgrep")
    store = store_on(redis_server, "kgrep",
                     on_unverified=lambda kind, why, which, cause="other": seen.append((kind, why)))
    await old.open()
    await store.open()
    try:
        old.clock = lambda: time.time() - 3 * 3600  # type: ignore[method-assign]
        await old.heartbeat("gone", 7, "sha256:x", {"data": "http://10.0.0.9:8080",
                                                    "admin": "http://10.0.0.9:8081"})
        await store.heartbeat("live", 7, "sha256:x", {"data": "http://10.0.0.5:8080",
                                                      "admin": "http://10.0.0.5:8081"})
        rec = await asyncio.to_thread(redis_server.cmd, "HGET", "kgrep:instances", "gone")
        _, _, record = rec.partition(" ")
        now_ms = int(time.time() * 1000)
        await asyncio.to_thread(redis_server.cmd, "HSET", "kgrep:instances", "gone",
                                f"{now_ms} {record}")
        fleet = await store.fleet(5.0)
        assert set(fleet) == {"live"}, fleet
        assert any(kind == "heartbeat" and "replay" in why for kind, why in seen), seen
    finally:
        await store.close()
        await old.close()
