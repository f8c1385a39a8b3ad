"""Start-up's sync (gateway/state/sync.py `Sync.start`): bounded, and not lost to one slow reply.

A reply that misses `command_timeout` at start (a loaded host, a Redis busy for a moment)
used to end the start-up sync at once: the instance opened without the kill state (503
state_unknown, or its snapshot) although the store answered a moment later. Start-up now
tries again until `state.start_timeout`, and still opens without the store after it. A
`Sync` in this process on our own redis-server, frozen (SIGSTOP) or stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.state import make_sync
from gateway.telemetry.metrics import Metrics
from tests.conftest import RedisServer, wait_until
from tests.staterig import redis_section, sync_config


def loaded(redis: RedisServer, tmp: Path, start_timeout: str) -> LoadedConfig:
    return sync_config(redis_section(redis.url, "kgstart", f"{tmp}/snap.json",
                                     command_timeout="300ms", start_timeout=start_timeout),
                       tmp / "killgate.yaml")


def gave_up(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "state_store_unavailable_at_start"]


async def test_a_reply_late_at_start_fails_an_attempt_not_the_start(
        redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="killgate.state")
    cfg = loaded(redis_server, tmp_path, "20s")  # (a loaded machine's slack; not waited out)
    holder = TableHolder(cfg, state_unknown=True)
    sync = make_sync(cfg, holder, Metrics(), "inst-a")
    redis_server.freeze()
    try:
        start = asyncio.ensure_future(sync.start())
        # an attempt has missed command_timeout; the store answers again from here on
        await wait_until(lambda: sync.last_error is not None, 10, what="a failed attempt")
        redis_server.thaw()
        await asyncio.wait_for(start, 30)
        assert sync.synced_once and sync.connected and sync.ready, sync.last_error
        assert not holder.state_unknown  # the data plane opens knowing the kill state
        assert not gave_up(caplog)
    finally:
        redis_server.thaw()
        await sync.stop()


async def test_a_store_away_through_the_deadline_is_started_without(
        redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """The documented fallback stays: after start_timeout the instance opens without the
    store (not ready, with no snapshot), says why, and syncs once the store is back."""
    caplog.set_level(logging.INFO, logger="killgate.state")
    cfg = loaded(redis_server, tmp_path, "1500ms")
    sync = make_sync(cfg, TableHolder(cfg, state_unknown=True), Metrics(), "inst-a")
    redis_server.kill()
    try:
        t0 = time.monotonic()
        await asyncio.wait_for(sync.start(), 30)
        took = time.monotonic() - t0
        assert 1.4 <= took < 15, took  # tried until the deadline, and no longer (+ slack)
        assert not sync.synced_once and not sync.ready and not sync.connected
        [line] = gave_up(caplog)
        error = line.kg_fields["error"]  # type: ignore[attr-defined]
        assert error.startswith("no sync within 1.5s") and "unreachable" in error, error
        redis_server.start()
        await wait_until(lambda: sync.ready and sync.connected, 10, what="the first sync")
    finally:
        await sync.stop()


async def test_a_push_during_stop_starts_no_reread(
        redis_server: RedisServer, tmp_path: Path) -> None:
    """A push that asks for a re-read of the store (one that would relax something; one
    too large to verify is throttled, and the throttle stops first) arriving while `stop`
    runs started a re-read task that stop had already stopped waiting for: it ran against
    a closing store and could outlive it (a pending task at the loop's end)."""
    cfg = loaded(redis_server, tmp_path, "10s")
    sync = make_sync(cfg, TableHolder(cfg, state_unknown=True), Metrics(), "inst-a")
    await asyncio.wait_for(sync.start(), 30)
    assert sync._recheck is None
    stopping = asyncio.ensure_future(sync.stop())
    await asyncio.sleep(0)  # (stop has begun: one loop turn)
    sync._reread()  # what a push that would relax something calls (_pushed)
    await asyncio.wait_for(stopping, 30)
    assert sync._recheck is None


async def test_a_kill_pushed_during_stop_lands_in_the_snapshot(
        redis_server: RedisServer, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A push still applies while `stop` runs (the kill is enforced), but the side task
    that snapshots an applied document is no longer started then: the snapshot written on
    the way out lacked the kill, so the instance restarted from a snapshot without it
    (what lets a kill survive a store that lost it: README, the replica row). Its
    `state_applied` line, written a little later, was lost too once past stop's flush."""
    from gateway.domain.statedoc import Change, KillFlag, apply_change
    caplog.set_level(logging.INFO, logger="killgate.state")
    cfg = loaded(redis_server, tmp_path, "10s")
    holder = TableHolder(cfg, state_unknown=True)
    sync = make_sync(cfg, holder, Metrics(), "inst-a")
    await asyncio.wait_for(sync.start(), 30)
    killed = apply_change(holder.doc, Change(kills={"route:iris": KillFlag(
        "route", "iris", None, "bob", "bad", "2026-12-04T00:00:00Z", 0)}))
    stopping = asyncio.ensure_future(sync.stop())
    await asyncio.sleep(0)  # (stop has begun: one loop turn)
    sync._pushed(killed)  # a verified push of a new kill, as the store's listener hands it
    assert "route:iris" in holder.doc.kills  # (in force at once)
    await asyncio.wait_for(stopping, 30)
    snap = sync.snapshot.read()
    assert snap is not None and snap.generation == killed.generation, snap
    assert "route:iris" in snap.kills
    applied = [r.kg_fields["generation"] for r in caplog.records  # type: ignore[attr-defined]
               if r.getMessage() == "state_applied"]
    assert killed.generation in applied, applied
