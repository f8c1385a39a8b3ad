"""A fleet read's removal of a heartbeat it refused as a replay (or found long gone) takes
only the value it judged (found by review revmerge35: it removed the field whatever it
held by then, so a genuine heartbeat the instance wrote while the read was judging the
hash was deleted with its addresses, and the instance vanished from every view until its
next beat: a drill's receipt or the fleet view missed a live instance). Real redis."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import RedisServer
from tests.staterig import two_stores

pytestmark = pytest.mark.timeout(30)

KEY = "kgstale:instances"


async def test_a_replay_removed_leaves_the_genuine_heartbeat_written_meanwhile(
        redis_server: RedisServer) -> None:
    async with two_stores(redis_server, "kgstale") as pair:
        a, b = pair.a, pair.b
        get = redis_server.cmd
        await b.heartbeat("b", 1, "sha256:x", {"data": "http://127.0.0.1:1"})
        old = await asyncio.to_thread(get, "HGET", KEY, "b")
        await b.heartbeat("b", 1, "sha256:x", {"data": "http://127.0.0.1:1"})
        assert set(await a.fleet(5.0)) == {"b"}  # (a has read b's second heartbeat)
        await b.heartbeat("b", 1, "sha256:x", {"data": "http://127.0.0.1:1"})
        latest = await asyncio.to_thread(get, "HGET", KEY, "b")
        await asyncio.to_thread(get, "HSET", KEY, "b", old)  # (a capture put back)

        def refused(kind: str, why: str, which: object, cause: str = "other") -> None:
            pair.refused.append(f"{kind}: {why}")
            if "replay" in why:  # (b's genuine next heartbeat lands as a judges)
                get("HSET", KEY, "b", latest)

        a.on_unverified = refused  # type: ignore[method-assign]
        await a.fleet(5.0)
        assert any("replay" in r for r in pair.refused), pair.refused
        assert await asyncio.to_thread(get, "HGET", KEY, "b") == latest
        assert await asyncio.to_thread(get, "HEXISTS", KEY + ":urls", "b") == "1"
        assert set(await a.fleet(5.0)) == {"b"}


async def test_an_instance_whose_clock_is_off_removes_nobodys_heartbeat(
        redis_server: RedisServer) -> None:
    """An instance whose clock is an hour ahead (judging by its own: the store's is off
    from it) refuses the others' heartbeats as replays, but must not delete them: before,
    every fleet read it ran removed every genuine heartbeat, and the whole fleet vanished
    from every other instance's view between beats."""
    import time

    async with two_stores(redis_server, "kgstale") as pair:
        a, b = pair.a, pair.b
        a.clock = lambda: time.time() + 3600  # type: ignore[method-assign]
        await b.heartbeat("b", 1, "sha256:x", {"data": "http://127.0.0.1:1"})
        assert "b" not in await a.fleet(5.0)  # (refused: judged by its own clock)
        assert any("replay" in r for r in pair.refused), pair.refused
        assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", KEY, "b") == "1"
        assert await asyncio.to_thread(redis_server.cmd, "HEXISTS", KEY + ":urls", "b") == "1"
