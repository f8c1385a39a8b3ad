"""Two signing keys in one fleet (a rotation step skipped: X's Secret regenerated) and a
flushed Redis. X (a kills-only snapshot: signed with its old key) seeds the empty store
first; the fleet's F (its key, its signed snapshot) re-seeds its own state over X's
document, which it cannot verify, and X writes nothing over F's (stop 36).

1. X's next snapshot was signed with its own (wrong) key, so after a restart it looked
   fully trusted and X re-seeded over F's document again, wiping F's weights, overrides and
   history from the store at every restart. The snapshot now says where its state came
   from (`unverified_origin`, inside the signed body, with the epochs X created), so X
   restarted still never writes over a document it cannot verify.
2. X stayed READY (200 /readyz) while the store held a document it cannot verify: a load
   balancer kept sending it traffic it routes on state the fleet may have changed. It now
   answers /readyz 503 `state_unverifiable` (its kills still enforced), and `killgate
   status` says why and what to do.

Real redis-server, real `killgate serve` processes with different keys, the real CLI."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import (
    STATE_KEY,
    GatewayProcess,
    RedisServer,
    running_gateway,
    two_versions,
    wait_until,
)
from tests.keyrig import OTHER_KEY_ENV, left_alone, snapshots_then_flush, stored, x_and_f
from tests.test_cli import acli
from tests.test_killswitch import (
    fixed_ports_config,
    status_of,
    token,
)

pytestmark = pytest.mark.timeout(90)

X_KEY = "z" * 64  # X's Secret, regenerated (not the fleet's)


async def readyz(session: ClientSession, admin: str) -> tuple[int, dict[str, Any]] | None:
    try:
        async with session.get(admin + "/readyz") as r:
            return r.status, await r.json()
    except aiohttp.ClientConnectionError:
        return None


async def two_keys(tmp_path: Path, backends: Any, redis: RedisServer, session: ClientSession,
                   monkeypatch: pytest.MonkeyPatch,
                   start: Callable[..., GatewayProcess],
                   ) -> tuple[Path, GatewayProcess, GatewayProcess, str]:
    """X and F, each with a snapshot of the fleet's state (F set weights, X killed iris);
    Redis flushed; X back with another key seeds the store, F re-seeds over X's document.
    (X's config, X and F running, F's document in the store)."""
    p = await backends(echo_app("v1"))
    routes = two_versions(p, p, 100, 0)
    cfg_x, cfg_f = x_and_f(tmp_path, redis, routes, make=lambda folder, state, name:
                           fixed_ports_config(folder, routes, state, name))
    monkeypatch.setenv(OTHER_KEY_ENV, STATE_KEY)  # (the fleet's, for now)
    await snapshots_then_flush(session, redis, tmp_path, cfg_x, cfg_f)
    env_x = {OTHER_KEY_ENV: X_KEY}
    gx = start(cfg_x, env=env_x)
    await asyncio.to_thread(gx.wait_ready)
    await wait_until(lambda: "route:iris" in stored(redis), 5, what="X seeding the empty store")
    assert '"overrides": {}' in stored(redis), stored(redis)  # (X's: kills only)
    gf = start(cfg_f)
    await asyncio.to_thread(gf.wait_ready)
    await wait_until(lambda: '"overrides": {"iris"' in stored(redis), 5,
                     what="F re-seeding its state (with its weights) over X's")
    return cfg_x, gx, gf, stored(redis)


async def test_an_instance_that_cannot_verify_the_stores_state_is_not_ready(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, gateway_procs) -> None:
    """Item 2: X, up on its own seed, cannot verify F's document: /readyz 503 with the
    reason, its kill still enforced, `killgate status` naming the key; ready again once the
    store holds a document it can verify (here: Redis flushed, X seeds it again)."""
    _, x, f, fleets = await two_keys(tmp_path, backends, redis_server, session, monkeypatch,
                                     gateway_procs)

    async def unverifiable() -> dict[str, Any] | None:
        got = await readyz(session, x.admin)
        return got[1] if got is not None and got[0] == 503 else None

    body = await wait_until(unverifiable, 10, 0.02, what="X's /readyz 503")
    assert body["reason"] == "state_unverifiable", body
    assert body["ready"] is False
    assert "signing_key" in body["state"]["unverifiable"], body
    assert await status_of(session, x.url) == (503, "killed")  # (its kill still enforced)
    env = {"KILLGATE_ADMIN_URL": x.admin, "KILLGATE_TOKEN": token("killgate:read")}
    out = (await acli("status", env=env)).stdout
    line = next(x for x in out.splitlines() if x.startswith("STATE UNVERIFIABLE"))
    assert "signing_key_env" in line and "ready" in line, line
    assert stored(redis_server) == fleets  # (and X wrote nothing over F's)
    # the store's document becomes one X can verify (F gone, Redis flushed: X seeds it):
    # ready again, its kill still enforced
    assert f.stop() == 0
    redis_server.cmd("FLUSHALL")

    async def ready() -> bool:
        got = await readyz(session, x.admin)
        return got is not None and got[0] == 200 and got[1]["reason"] is None

    await wait_until(ready, 10, 0.02, what="X ready again on a store it verifies")
    assert await status_of(session, x.url) == (503, "killed")


async def test_an_instance_restarted_on_its_own_seed_never_writes_over_the_fleet(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch, gateway_procs) -> None:
    """Item 1: X restarted reads a snapshot signed with its own key, of state that came from
    its kills-only seed: it must still never re-seed over F's document."""
    cfg_x, x, _, fleets = await two_keys(tmp_path, backends, redis_server, session,
                                         monkeypatch, gateway_procs)
    snap = json.loads((tmp_path / "snapshot-a.json").read_bytes().partition(b"\n")[2])
    assert snap["unverified_origin"]["why"], snap  # (what the restart reads)
    assert x.stop() == 0
    x = gateway_procs(cfg_x, env={"KILLGATE_OTHER_STATE_KEY": X_KEY})
    # its start ends after its first sync attempts (where it re-seeded over F's document);
    # then 1.5 s more: 15 of its polls, a reconnect or two
    loop = asyncio.get_running_loop()
    deadline, seen = loop.time() + 20, None
    while seen is None or loop.time() - seen < 1.5:
        assert stored(redis_server) == fleets, "X restarted wrote over F's document"
        answer = await readyz(session, x.admin)
        if seen is None and answer is not None and answer[0] == 503 \
                and answer[1]["reason"] == "state_unverifiable":
            seen = loop.time()
        assert loop.time() < deadline, f"X's /readyz: {answer}"
        await asyncio.sleep(0.05)
    assert (await status_of(session, x.url))[0] == 503  # (the killed route: never served)
    assert "state_store_reseed" not in x.output(), x.output()


async def test_its_own_earlier_document_read_after_a_restart_is_not_the_fleets(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """X restarted while the store still holds the document X seeded (F not up yet): that
    document verifies, but is of an epoch X created (the snapshot's `unverified_origin`
    names them), so it does not clear the mark; F then re-seeds over it, and X writes
    nothing over F's. (In process: the same code as `killgate serve`, faster.)"""
    p = await backends(echo_app("v1"))
    cfg_x, cfg_f = x_and_f(tmp_path, redis_server, two_versions(p, p, 100, 0))
    monkeypatch.setenv(OTHER_KEY_ENV, STATE_KEY)  # (the fleet's, for now)
    await snapshots_then_flush(session, redis_server, tmp_path, cfg_x, cfg_f)
    monkeypatch.setenv(OTHER_KEY_ENV, X_KEY)
    snaps = (tmp_path / "snapshot-a.json", tmp_path / "snapshot-b.json")
    async with running_gateway(cfg_x, "gw-x") as x:
        await wait_until(lambda: "route:iris" in stored(redis_server), 5, what="X seeding")
        seeded = x.gw.holder.doc
        await wait_until(lambda: b'"unverified_origin"' in snaps[0].read_bytes(), 5,
                         what="X's snapshot of its seed")
    async with running_gateway(cfg_x, "gw-x") as x:
        assert x.gw.sync.ready and x.gw.holder.doc.epoch == seeded.epoch  # (its own, verified)
        async with running_gateway(cfg_f, "gw-f") as f:
            await wait_until(lambda: f.gw.metrics.get("killgate_state_reseeds_total") >= 1
                             and '"overrides": {"iris"' in stored(redis_server), 5,
                             what="F re-seeding its state")
            await left_alone(redis_server, stored(redis_server))  # (15 of X's polls)
            assert x.gw.metrics.get("killgate_state_reseeds_total") == 0
            assert x.gw.ready_reason == "state_unverifiable"
            assert await status_of(session, x.url) == (503, "killed")
