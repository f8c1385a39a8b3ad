"""/readyz 503 `state_unverifiable` and the snapshot's `unverified_origin` against the
README's key rotation (Trust): each step a rolling restart of two instances sharing a
Redis. No instance may go unready, re-seed the store (wiping what another wrote) or drop
a kill at any step. Real redis-server, in-process gateways (the same code as `killgate
serve`)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from gateway.cli.statuswarn import store_warnings
from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
    write_config,
)
from tests.keyrig import forged_store, keyed, snapshots_then_flush, stored, x_and_f
from tests.test_killswitch import auth, kill, status_of

pytestmark = pytest.mark.timeout(60)

K1, K2 = "1" * 48, "2" * 48


async def test_the_readme_key_rotation_keeps_every_instance_ready_and_the_store_whole(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_K1", K1)
    monkeypatch.setenv("KG_K2", K2)
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)

    def cfg(name: str, current: str, previous: str | None, step: int) -> Path:
        d = tmp_path / f"{name}{step}"
        d.mkdir()
        return write_config(d, routes, state=keyed(redis_server, tmp_path, name, current,
                                                   previous))

    running: dict[str, tuple[Any, Any]] = {}
    reseeds = 0

    async def up(name: str, path: Path) -> Any:
        cm = running_gateway(path, f"gw-{name}")
        gw = await cm.__aenter__()
        running[name] = (cm, gw)
        await wait_until(lambda: gw.gw.ready_reason is None, 5, what=f"{name} ready")
        return gw

    async def down(name: str) -> None:
        nonlocal reseeds
        cm, gw = running.pop(name)
        reseeds += gw.gw.metrics.get("killgate_state_reseeds_total")
        await cm.__aexit__(None, None, None)

    async def steady(what: str) -> None:
        """For 0.4 s (4 polls each): every instance ready, the route killed, the weights set."""
        t0 = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - t0 < 0.4:
            for name, (_, gw) in running.items():
                assert gw.gw.ready_reason is None, (what, name, gw.gw.sync.unverifiable,
                                                    gw.gw.sync.last_error)
                assert "route:iris" in gw.gw.holder.doc.kills, (what, name)
                assert gw.gw.holder.doc.overrides, (what, name)
                assert gw.gw.metrics.get("killgate_state_reseeds_total") == 0, (what, name)
            await asyncio.sleep(0.05)
        for _, gw in running.values():
            assert await status_of(session, gw.url) == (503, "killed"), what

    try:
        a = await up("a", cfg("a", "KG_K1", None, 0))
        b = await up("b", cfg("b", "KG_K1", None, 0))
        async with session.put(f"{b.admin}/v1/routes/iris/weights",
                               headers=auth("killgate:rollout"),
                               json={"weights": {"v1": 50, "v2": 50}, "reason": "x"}) as r:
            assert r.status == 200, await r.text()
        await kill(session, a.admin, scope="route", route="iris")
        await steady("before")
        steps = [("KG_K1", "KG_K2"), ("KG_K2", "KG_K1"), ("KG_K2", None)]
        for step, (current, previous) in enumerate(steps, 1):
            for name in ("a", "b"):  # (a rolling restart)
                await down(name)
                await up(name, cfg(name, current, previous, step))
                await steady(f"step {step}, {name} restarted")
            if step == 2:  # "a write has re-signed the state"
                _, gw = running["a"]
                await kill(session, gw.admin, scope="version", route="iris", version="v2")
                await steady("step 2, re-signed")
    finally:
        for name in list(running):
            with contextlib.suppress(Exception):
                await down(name)
    assert reseeds == 0


async def test_a_kill_through_an_instance_that_cannot_verify_the_store_says_so(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """X (another key: a kills-only snapshot) seeded a flushed store, then the fleet's F
    re-seeded over it: a kill through X answers 503 and changes nothing, as designed. Its
    message said "the state store cannot be reached" and "this instance holds none of its own:
    it serves no route" while the store answered and X held and enforced its kills: an
    operator went looking for a Redis outage. It now says what happened and what to do."""
    p = await backends(echo_app("v1"))
    cfg_x, cfg_f = x_and_f(tmp_path, redis_server, two_versions(p, p, 100, 0), "KG_K1")
    monkeypatch.setenv("KG_K1", STATE_KEY)  # (X has the fleet's key, for now)
    await snapshots_then_flush(session, redis_server, tmp_path, cfg_x, cfg_f, weights=False)
    monkeypatch.setenv("KG_K1", K1)  # (X's Secret regenerated)
    async with running_gateway(cfg_x, "gw-x") as x:
        assert x.gw.sync.snapshot.kills_only
        await wait_until(lambda: "route:iris" in stored(redis_server), 5,
                         what="X seeding the flushed store")
        async with running_gateway(cfg_f, "gw-f") as f:
            await wait_until(lambda: f.gw.metrics.get("killgate_state_reseeds_total") >= 1
                             and x.gw.ready_reason == "state_unverifiable", 5,
                             what="F re-seeding, X not ready")
            fleets = redis_server.cmd("GET", "kgtest:state")
            async with session.post(f"{x.admin}/v1/kill", headers=auth(),
                                    json={"scope": "version", "route": "iris", "version": "v2",
                                          "reason": "x"}) as r:
                body = await r.json()
            assert r.status == 503, body
            said = body["error"]["message"]
            assert "cannot be reached" not in said and "serves no route" not in said, said
            assert "cannot verify" in said and "signing_key" in said, said
            assert "another instance" in said, said
            assert redis_server.cmd("GET", "kgtest:state") == fleets  # (nothing changed)
            assert await status_of(session, x.url) == (503, "killed")  # (still enforced)


async def test_two_workers_on_the_wrong_key_do_not_vouch_for_each_other(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """X runs two workers (`--workers 2`: two processes, one snapshot file, one key). Its
    Secret regenerated and Redis flushed, both start on the kills of the snapshot they
    cannot verify; one seeds the empty store, and the other verified that seed, an epoch it
    had not created, and took its state for the fleet's: it then re-seeded over the fleet's
    F document, which it cannot verify, wiping F's weights, at every repair."""
    monkeypatch.setenv("KG_K1", STATE_KEY)  # (X has the fleet's key, for now)
    p = await backends(echo_app("v1"))
    cfg_x, cfg_f = x_and_f(tmp_path, redis_server, two_versions(p, p, 100, 0), "KG_K1")
    await snapshots_then_flush(session, redis_server, tmp_path, cfg_x, cfg_f)
    monkeypatch.setenv("KG_K1", K1)  # (X's Secret regenerated)
    async with running_gateway(cfg_x, "gw-x-1") as x1:
        await wait_until(lambda: "route:iris" in stored(redis_server), 5,
                         what="X's first worker seeding")
        async with running_gateway(cfg_x, "gw-x-2") as x2:
            assert x2.gw.holder.doc.epoch == x1.gw.holder.doc.epoch  # (the seed, verified)
            async with running_gateway(cfg_f, "gw-f") as f:
                await wait_until(lambda: f.gw.metrics.get("killgate_state_reseeds_total") >= 1
                                 and '"overrides": {"iris"' in stored(redis_server), 5,
                                 what="F re-seeding its state")
                t0 = asyncio.get_running_loop().time()
                while asyncio.get_running_loop().time() - t0 < 1.5:  # (15 polls each)
                    assert '"overrides": {"iris"' in stored(redis_server), "X wrote over F's"
                    await asyncio.sleep(0.05)
                # (X's seed of the flushed store is its only one)
                assert x1.gw.metrics.get("killgate_state_reseeds_total") == 1
                assert x2.gw.metrics.get("killgate_state_reseeds_total") == 0
                for w in (x1, x2):
                    assert w.gw.ready_reason == "state_unverifiable", w.gw.sync.unverifiable
                    assert await status_of(session, w.url) == (503, "killed")


async def test_ready_without_state_stays_ready_over_a_document_it_cannot_verify(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    """`state.ready_without_state: true` is the operator's choice to route on the config
    alone until a sync: a forged document in the store (or the fleet's, under another key)
    made such an instance, holding no state, 503 `state_unverifiable` instead, so a forgery
    written while a fleet restarts kept every restarted instance out of its load balancer."""
    state = forged_store(redis_server, tmp_path, "  ready_without_state: true\n")
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg, "gw-a") as a:
        # (either line: the store's document refused, or the attempt's end saying why;
        # each attempt writes one then the other, so the first alone may not be seen)
        await wait_until(lambda: any(w in (a.gw.sync.last_error or "") for w in (
            "refused the stored state", "the stored state cannot be verified")), 5,
                         what="the forgery refused")
        assert a.gw.ready_reason is None, a.gw.sync.unverifiable
        assert "STATE UNVERIFIABLE" not in " ".join(
            store_warnings({"store": a.gw.sync.status()}))


async def test_a_store_holding_a_document_it_cannot_verify_is_not_said_unreachable(
        tmp_path: Path, backends, redis_server: RedisServer) -> None:
    """An instance facing a document it cannot verify (a forgery, or the fleet's under
    another key) is not ready, state_unverifiable; its killgate_state_store_connected said
    0 all the while, so KillgateStateStoreDisconnected ("cannot reach its state store")
    sent the SRE to a Redis that answers. A Redis that is gone still says 0."""
    state = forged_store(redis_server, tmp_path)
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0), state=state)
    async with running_gateway(cfg, "gw-a") as a:
        await wait_until(lambda: a.gw.ready_reason == "state_unverifiable"
                         and a.gw.metrics.get("killgate_state_store_connected") == 1, 5,
                         what="unverifiable, the store answering")
        assert not a.gw.sync.connected  # (not synced: still not ready)
        redis_server.kill()
        await wait_until(lambda: a.gw.metrics.get("killgate_state_store_connected") == 0, 5,
                         what="the store gone said so")
