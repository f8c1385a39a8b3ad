"""Two drills may be open at once on different routes (one per route). Each one's check
that "the fleet is exactly as it was" compared every kill in force before and after: the
other drill's kill, made or lifted in between, made a drill that restored everything it
changed report `restored: false` (and the CLI's verdict `failed`). Kills that another open
drill made are that drill's to restore, and are left out of each one's fleet state."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, write_config
from tests.drillrig import call, hdr, routes

pytestmark = pytest.mark.timeout(60)
ALL = "killgate:drill killgate:read killgate:kill"


async def test_a_drill_restored_while_another_is_open_is_as_before(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    async with running_gateway(write_config(tmp_path, routes(p1, p2))) as g:
        a = g.admin

        async def post(path: str, body: dict) -> dict:
            st, out = await call(session, "POST", f"{a}{path}", {"reason": "r", **body},
                                 hdr(ALL))
            assert st == 200, out
            return out

        one = (await post("/v1/drills", {"kind": "kill", "route": "iris-drill",
                                         "version": "v2"}))["drill"]
        await post(f"/v1/drills/{one}/inject", {})
        # a second drill, on the production route, opens and injects while the first is on
        two = (await post("/v1/drills", {"kind": "kill", "route": "iris", "version": "v1",
                                         "production": True}))["drill"]
        await post(f"/v1/drills/{two}/inject", {})
        out = await post(f"/v1/drills/{one}/restore", {})
        assert out["undone"] == [{"unkill": "version:iris-drill:v2"}]
        assert out["state"] == out["before"], (out["before"], out["state"])
        out = await post(f"/v1/drills/{two}/restore", {})
        assert out["state"] == out["before"], (out["before"], out["state"])
        for d in (one, two):
            await post(f"/v1/drills/{d}/end", {"verdict": "passed"})
