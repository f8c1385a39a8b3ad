"""End to end against the swap's plan reuse (impkill2's tablebuild._made): a real
`killgate serve` on a real redis-server. A version kill, a reload that moves the weights
onto the killed version, a latched weights override, the unkill, the release: at every
step the data plane's answers are those of the state as it is, never of a plan from
before the kill (review revmerge32: none was found; this pins it)."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import free_port, two_versions, wait_until, write_config
from tests.staterig import redis_state
from tests.test_killswitch import INFER, auth, kill, unkill


async def _versions(session: ClientSession, url: str, n: int = 40) -> Counter[str]:
    out: Counter[str] = Counter()
    for _ in range(n):
        async with session.get(url + INFER) as r:
            body = await r.json()
            out[body.get("version", str(r.status))] += 1
    return out


async def _digest(session: ClientSession, admin: str) -> Any:
    async with session.get(admin + "/v1/status", headers=auth()) as r:
        return (await r.json())["config"]["digest"]


async def test_kill_reload_override_unkill_release_route_as_the_state_is(
        tmp_path: Path, backends, redis_server, gateway_procs, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    state = redis_state(redis_server, tmp_path, "a")
    listen, admin = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0), state=state, listen=listen,
                       admin=admin)
    g = gateway_procs(cfg)
    await asyncio.to_thread(g.wait_ready)
    assert await _versions(session, g.url) == {"v1": 40}
    await kill(session, g.admin, scope="version", route="iris", version="v2")
    # a reload between the kill and its unkill: the file now gives v2 everything
    before = await _digest(session, g.admin)
    cfg.write_text(write_config(tmp_path, two_versions(p1, p2, 0, 100), state=state,
                                listen=listen, admin=admin, name="next.yaml").read_text())
    g.proc.send_signal(signal.SIGHUP)

    async def reloaded() -> bool:
        return await _digest(session, g.admin) != before
    await wait_until(reloaded, 10, what="the reload")
    # v2 killed: its share goes elsewhere, never to v2
    assert (await _versions(session, g.url)).get("v2", 0) == 0
    async with session.put(f"{g.admin}/v1/routes/iris/weights", headers=auth("killgate:rollout"),
                           json={"weights": {"v1": 50, "v2": 50}, "reason": "split"}) as r:
        assert r.status == 200, await r.text()
    assert (await _versions(session, g.url)).get("v2", 0) == 0  # (still killed)
    await unkill(session, g.admin, scope="version", route="iris", version="v2")
    got = await _versions(session, g.url, 80)
    assert got["v1"] > 0 and got["v2"] > 0, got  # the override's split, not the old 100/0
    async with session.post(f"{g.admin}/v1/routes/iris/release", headers=auth("killgate:rollout"),
                            json={"reason": "done"}) as r:
        assert r.status == 200, await r.text()
    assert await _versions(session, g.url) == {"v2": 40}  # the reloaded file's weights
    await kill(session, g.admin, scope="version", route="iris", version="v2")
    assert await _versions(session, g.url) == {"v1": 40}  # the stable takes the share
    await unkill(session, g.admin, scope="version", route="iris", version="v2")
    assert await _versions(session, g.url) == {"v2": 40}
    # two overrides in a row: the second never takes back the plan the first replaced
    for weights, want in (({"v1": 100, "v2": 0}, {"v1"}), ({"v1": 50, "v2": 50}, {"v1", "v2"})):
        async with session.put(f"{g.admin}/v1/routes/iris/weights",
                               headers=auth("killgate:rollout"),
                               json={"weights": weights, "reason": "step"}) as r:
            assert r.status == 200, await r.text()
        assert set(await _versions(session, g.url, 60)) == want, weights
