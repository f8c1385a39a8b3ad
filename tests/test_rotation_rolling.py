"""A key rotation done as README "Key rotation" says, each step a rolling restart (the
pods of two steps running side by side, kills made meanwhile through either), every
instance keeping its snapshot across its restarts: no instance counts anything as
tampering at any point, and step 3 counts the old key's values as retired at most (review
revmerge37's question: a normal rotation must page nobody). Real redis, in-process
gateways (the code of `killgate serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.state.signing import Key
from tests.backends import echo_app
from tests.conftest import STATE_KEY, RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill, redis_state, unkill

pytestmark = pytest.mark.timeout(60)

NEW = "n" * 64
STEPS = {
    0: "signing_key_env: KILLGATE_TEST_STATE_KEY",
    1: "signing_key_env: KILLGATE_TEST_STATE_KEY\n  previous_signing_key_env: KG_NEW_KEY",
    2: "signing_key_env: KG_NEW_KEY\n  previous_signing_key_env: KILLGATE_TEST_STATE_KEY",
    3: "signing_key_env: KG_NEW_KEY",
}


async def test_a_rolling_rotation_counts_no_tampering(
        tmp_path: Path, backends, session, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KG_NEW_KEY", NEW)
    p = await backends(echo_app("v1"))
    running: dict[str, tuple[Any, Any]] = {}
    seen: list[tuple[str, int, dict[str, Any]]] = []

    def cfg(name: str, step: int) -> Path:
        (tmp_path / f"{name}{step}").mkdir()
        state = redis_state(redis_server, tmp_path, name).replace(
            "signing_key_env: KILLGATE_TEST_STATE_KEY", STEPS[step])
        return write_config(tmp_path / f"{name}{step}", two_versions(p, p, 100, 0), state=state)

    def check(name: str, step: int) -> None:
        ver = running[name][1].gw.sync.status()["verification"]
        seen.append((name, step, ver))
        assert ver["unverified_total"] == 0, (name, step, ver)

    async def start(name: str, step: int) -> Any:
        cm = running_gateway(cfg(name, step), name)
        g = await cm.__aenter__()
        running[name] = (cm, g)
        await wait_until(lambda: g.gw.sync.connected, 5, what=f"{name} at step {step} synced")
        return g

    async def stop(name: str, step: int) -> None:
        check(name, step)
        cm, _ = running.pop(name)
        await cm.__aexit__(None, None, None)

    try:
        a, b = await start("a", 0), await start("b", 0)
        await kill(session, a.admin, scope="route", route="iris")
        for step in (1, 2, 3):  # (each a rolling restart: a first, then b)
            await stop("a", step - 1)
            a = await start("a", step)
            act = unkill if step == 2 else kill  # (every one a write, signed by its step)
            await act(session, a.admin, scope="version", route="iris", version="v1")
            await act(session, b.admin, scope="version", route="iris", version="v2")
            gen = a.gw.holder.doc.generation
            await wait_until(lambda g=b, n=gen: g.gw.holder.doc.generation >= n, 5,
                             what="b applied")
            for g in (a, b):  # (each reads the other's heartbeat)
                await g.gw.sync.peers.live()
            check("a", step)
            check("b", step - 1)
            await stop("b", step - 1)
            b = await start("b", step)
            # (step 2 done: a write re-signs the state, as step 3 requires)
            await (kill if step == 2 else unkill)(session, b.admin, scope="route", route="iris")
            for g in (a, b):
                await g.gw.sync.peers.live()
            check("a", step)
            check("b", step)
        for name, (_, g) in running.items():  # (step 3 knows the old key as retired)
            ver = g.gw.sync.status()["verification"]
            assert ver["retired_key_ids"] == [Key.of(STATE_KEY.encode()).kid], (name, ver)
            assert ver["unverified_total"] == 0 and ver["previous_key_id"] is None, (name, ver)
    finally:
        for name in list(running):
            cm, _ = running.pop(name)
            await cm.__aexit__(None, None, None)
