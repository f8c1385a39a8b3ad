"""Heartbeats on a real redis-server (state/redisaux.py, redisbeats.py): a stopping instance removes only
the heartbeat it wrote, and a store whose clock is off is named as such, never taken
for every instance replaying."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.staterig import two_stores


async def test_a_leaving_instance_keeps_the_heartbeat_of_a_restarted_one_of_its_name(
        redis_server: RedisServer) -> None:
    """pod-1 stops (its removal is slow to land) while pod-1 restarted has already written
    its heartbeat: the removal by name took the new one too, and the restarted instance
    was out of the fleet (out of every receipt) until its next heartbeat. Only the
    heartbeat the leaving process wrote is removed (a compare-and-delete)."""
    async with two_stores(redis_server, "kgleave") as pair:
        old, new = pair.a, pair.b
        await old.heartbeat("pod-1", 3, "sha256:x", {"data": "http://10.0.0.1:8080"})
        await new.heartbeat("pod-1", 4, "sha256:x", {"data": "http://10.0.0.2:8080"})
        await old.leave("pod-1")
        fleet = await new.fleet(5.0)
        assert fleet["pod-1"]["generation"] == 4
        assert fleet["pod-1"]["data"] == "http://10.0.0.2:8080"
        # the restarted one leaving removes its own, addresses too
        await new.leave("pod-1")
        assert await new.fleet(5.0) == {}
        assert await asyncio.to_thread(redis_server.cmd, "HLEN", "kgleave:instances:urls") == "0"


async def test_a_leaving_local_instance_keeps_the_heartbeat_of_a_restarted_one(
        tmp_path: Path) -> None:
    """The same on the local store (one file per instance)."""
    from gateway.state.local import LocalStore

    old, new = LocalStore(tmp_path / "s.json"), LocalStore(tmp_path / "s.json")
    await old.open()
    await new.open()
    await old.heartbeat("pod-1", 3)
    await new.heartbeat("pod-1", 4)
    await old.leave("pod-1")
    assert (await new.fleet(5.0))["pod-1"]["generation"] == 4
    await new.leave("pod-1")
    assert await new.fleet(5.0) == {}


async def test_a_store_clock_far_off_is_named_not_every_instance_a_replay(
        redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """The store's clock an hour ahead of the instances' (here: the instances' an hour
    behind the store's, which is what each of them measures): every genuine heartbeat,
    this instance's own included, was signed "an hour before the store's clock" and
    dropped as a replay: the fleet emptied, a receipt counted this instance alone, and the
    log blamed each instance in turn. They stay live, and the log says the store's clock
    is off, with the skew measured. A real replay (signed long before either clock) is
    still refused."""
    async with two_stores(redis_server, "kgskew") as pair:
        a, b, seen = pair.a, pair.b, pair.refused
        for s in (a, b):
            s.clock = lambda: time.time() - 3600  # type: ignore[method-assign]
        await a.heartbeat("a", 5, "sha256:x")
        await b.heartbeat("b", 5, "sha256:x")
        with caplog.at_level(logging.ERROR, logger="killgate.state"):
            fleet = await a.fleet(5.0)
        assert set(fleet) == {"a", "b"}, (fleet, seen)
        assert seen == []
        msgs = [r.getMessage() + str(getattr(r, "kg_fields", "")) for r in caplog.records]
        assert any("state_store_clock_off" in m and "ahead of this instance" in m
                   and "3600s" in m for m in msgs), msgs
        assert 3595 < a.store_skew_s < 3605
        # a replay: b's heartbeat as signed 3 hours before this instance's clock
        b.clock = lambda: time.time() - 4 * 3600  # type: ignore[method-assign]
        await b.heartbeat("b", 5, "sha256:x")
        fleet = await a.fleet(5.0)
        assert set(fleet) == {"a"}
        assert any("'b'" in w and "replay" in w and "store's is 3600s ahead" in w
                   for w in seen), seen
