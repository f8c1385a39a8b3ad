"""A kill outlives a reload that removes what it names: the route (or version) put back by a
later reload comes back killed, never served (ninth hostile review: held, kept as evidence)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth

pytestmark = pytest.mark.timeout(30)


async def test_a_killed_route_and_version_removed_then_put_back_come_back_killed(
        tmp_path: Path, backends, session: ClientSession) -> None:
    bad = Recorder()
    p_bad, p_ok = await backends(echo_app("bad", bad)), await backends(echo_app("ok"))
    full = (_route("iris", {"v1": (p_bad, 100)})
            + _route("wine", {"v1": (p_ok, 50), "v2": (p_bad, 50)}))
    cfg = write_config(tmp_path, full)
    async with running_gateway(cfg) as g:
        async def reload_to(routes: str) -> None:
            old = g.gw.loaded.digest
            cfg.write_text(write_config(tmp_path, routes, name="next.yaml").read_text())
            g.gw.request_reload()
            await wait_until(lambda: g.gw.loaded.digest != old, 10)

        for body in ({"scope": "route", "route": "iris", "reason": "t"},
                     {"scope": "version", "route": "wine", "version": "v2", "reason": "t"}):
            async with session.post(f"{g.admin}/v1/kill", headers=auth(), json=body) as r:
                assert r.status == 200, await r.text()
        await reload_to(_route("wine", {"v1": (p_ok, 100)}))
        async with session.get(f"{g.url}/v2/models/iris/x") as r:
            assert r.status == 404
        await reload_to(full)
        async with session.get(f"{g.url}/v2/models/iris/x") as r:
            assert r.status == 503 and r.headers["x-killgate-decision"] == "killed"
        for i in range(20):
            async with session.get(f"{g.url}/v2/models/wine/x",
                                   headers={"x-killgate-pin": "v2", "x-user": str(i)}) as r:
                assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
    assert not bad.requests
