"""Two faults at once: the state signing key changed (a regenerated Secret, or a rotation
without `state.previous_signing_key_env`) AND Redis lost its data. The snapshot, signed
with the old key, was refused whole: the instance became ready with no kill and served
the killed version (RELIABILITY row 13: "served to a version killed in the snapshot = 0").
Its kills are now kept (only its kills: they can only stop traffic), said in /v1/status
and `killgate status`; an unkill through the API lifts one as any other.
Real redis-server, real gateways, the real CLI."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.keyrig import OTHER_KEY_ENV, left_alone, snapshots_then_flush, stored, x_and_f
from tests.test_cli import acli
from tests.test_killswitch import auth, kill, redis_state, status_of, token, unkill

pytestmark = pytest.mark.timeout(60)


async def test_a_new_key_and_a_flushed_redis_keep_the_snapshots_kills(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="2s"))
    snap = tmp_path / "snapshot-a.json"
    async with running_gateway(cfg) as g:
        async with session.put(f"{g.admin}/v1/routes/iris/weights",
                               headers=auth("killgate:rollout"),
                               json={"weights": {"v1": 50, "v2": 50}, "reason": "x"}) as r:
            assert r.status == 200, await r.text()
        await kill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: snap.exists() and b"route:iris" in snap.read_bytes(), 5,
                         what="the snapshot")
    redis_server.cmd("FLUSHALL")
    monkeypatch.setenv("KILLGATE_TEST_STATE_KEY", "another-state-key-0123456789-abcdefghij")
    async with running_gateway(cfg) as g:
        assert await status_of(session, g.url) == (503, "killed")
        assert set(g.gw.holder.doc.kills) == {"route:iris"}
        assert not g.gw.holder.doc.overrides  # (its weights are not believed)
        async with session.get(f"{g.admin}/v1/status", headers=auth()) as r:
            st = await r.json()
        why = st["store"]["snapshot"]["kills_only"]
        assert "signed with an unknown key id" in why and "state key changed" in why, why
        env = {"KILLGATE_ADMIN_URL": g.admin, "KILLGATE_TOKEN": token("killgate:read")}
        out = (await acli("status", env=env)).stdout
        line = next(x for x in out.splitlines() if x.startswith("SNAPSHOT KILLS ONLY"))
        assert "signed with an unknown key id" in line, line
        # the kill is re-seeded into the store, signed with the new key, and lifts normally
        await wait_until(lambda: "route:iris" in redis_server.cmd("GET", "kgtest:state"), 10,
                         what="the kill re-seeded into redis")
        await unkill(session, g.admin, scope="route", route="iris")
        assert (await status_of(session, g.url))[0] == 200


async def test_a_new_key_with_the_store_intact_writes_nothing_over_the_fleets_state(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same restart with the store intact (one instance's key is not the fleet's): the
    snapshot's kills are no state to re-seed over the fleet's document, which it cannot
    verify (it would drop the fleet's weights, history and later kills): it writes nothing
    and serves no route (503 state_unknown), as an instance without a snapshot does
    (tests/test_wrong_key_start.py)."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="2s"))
    snap = tmp_path / "snapshot-a.json"
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        await wait_until(lambda: snap.exists() and b"route:iris" in snap.read_bytes(), 5,
                         what="the snapshot")
    fleets = stored(redis_server)
    monkeypatch.setenv("KILLGATE_TEST_STATE_KEY", "another-state-key-0123456789-abcdefghij")
    # (a start that cannot verify the store's document tries again until max(start_timeout,
    # 4 x command_timeout): 1 s here waits 4 s of it, where the first instance's 2 s did 8)
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0),
                       state=redis_state(redis_server, tmp_path, command_timeout="1s"))
    async with running_gateway(cfg) as g:
        await wait_until(lambda: g.gw.sync.snapshot.kills_only is not None, 5,
                         what="the snapshot read")
        for _ in range(20):
            assert await status_of(session, g.url) == (503, "fallback")  # state unknown
            await asyncio.sleep(0.05)
        assert not g.gw.sync.ready
        # nor can a write through its API put its kills-only state over the fleet's (review
        # of the merge: an unkill, or a kill, commits nothing; a clear error, not a wipe)
        for verb in ("unkill", "kill"):
            async with session.post(f"{g.admin}/v1/{verb}", headers=auth(), json={
                    "scope": "route", "route": "iris", "reason": "x"}) as r:
                answer = await r.json()
                assert r.status == 503, (verb, r.status, answer)
                assert "state.signing_key" in answer["error"]["message"], answer
    assert stored(redis_server) == fleets  # the fleet's, untouched


async def test_a_new_key_that_seeded_a_flushed_store_first_never_writes_over_the_fleet(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Both faults, in a fleet (review of the impleft4 merge): instance X (a kills-only
    snapshot, a key that is not the fleet's) seeds the flushed store first; the fleet's
    instance F (its key, its signed snapshot) then re-seeds its own state over X's document,
    which it cannot verify. X, "verified" only by its own re-seed, re-seeded over F's every
    ≤ 30 s, wiping its weights and history (a ping-pong). X now writes nothing more: it
    has verified no document but its own, and answers a kill 503 naming the key."""
    p = await backends(echo_app("v1"))
    cfg_x, cfg_f = x_and_f(tmp_path, redis_server, two_versions(p, p, 100, 0))
    monkeypatch.setenv(OTHER_KEY_ENV, STATE_KEY)  # (the fleet's, for now)
    await snapshots_then_flush(session, redis_server, tmp_path, cfg_x, cfg_f)
    monkeypatch.setenv(OTHER_KEY_ENV, "z" * 64)  # X's Secret, regenerated
    async with running_gateway(cfg_x, "gw-x") as x:
        assert x.gw.sync.snapshot.kills_only is not None
        await wait_until(lambda: "route:iris" in stored(redis_server), 5,
                         what="X seeding the empty store")
        async with running_gateway(cfg_f, "gw-f") as f:
            await wait_until(lambda: f.gw.metrics.get("killgate_state_reseeds_total") >= 1
                             and f.gw.sync.ready, 5, what="F re-seeding its state")
            assert f.gw.holder.doc.overrides  # (its weights: what X's re-seed dropped)
            fleets = stored(redis_server)
            await left_alone(redis_server, fleets)  # (15 of X's polls)
            assert x.gw.metrics.get("killgate_state_reseeds_total") == 1  # (the seeding)
            assert "state.signing_key" in (x.gw.sync.last_error or ""), x.gw.sync.last_error
            assert await status_of(session, x.url) == (503, "killed")  # (its kills held)
            async with session.post(f"{x.admin}/v1/unkill", headers=auth(), json={
                    "scope": "route", "route": "iris", "reason": "x"}) as r:
                answer = await r.json()
                assert r.status == 503, (r.status, answer)  # (a write F could not verify)
                assert "state.signing_key" in answer["error"]["message"], answer
            assert await status_of(session, x.url) == (503, "killed")
            assert stored(redis_server) == fleets  # F's, untouched
