"""A reload refused at its final swap (a rollback latched during its health round, to a version
the file drops) must leave the running config's health exactly as it was: a version ejected by
outlier detection that the refused file dropped stays ejected."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth
from tests.test_reload_latch_race import _slow_health
from tests.test_reload_latch_review import ROLLOUT

pytestmark = pytest.mark.timeout(30)

OUTLIER = "  outlier: {consecutive_5xx: 2, base_ejection: 60s}\n"
HEALTH = "  health: {path: /h, interval: 3s, timeout: 2s}\n"


async def _v2(session: ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(f"{admin}/v1/status", headers=auth("killgate:read")) as r:
        assert r.status == 200, await r.text()
        v2: dict[str, Any] = (await r.json())["routes"]["iris"]["versions"]["v2"]
        return v2


async def test_a_reload_refused_at_the_swap_keeps_an_ejected_version_ejected(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """Before: the refused reload restored the old config's health by configuring it again;
    the records of the versions the refused file dropped were made afresh, so v2, ejected
    for failing (60 s), served again at once. Expected: v2 stays ejected."""
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v3")}
    ports["v2"] = await backends(echo_app("v2", status=500))
    p4 = await backends(_slow_health(probed := asyncio.Event(), release := asyncio.Event()))
    cfg = write_config(tmp_path, _route("iris", {"v1": (ports["v1"], 50),
                                                 "v2": (ports["v2"], 50),
                                                 "v3": (ports["v3"], 0)}, OUTLIER))
    async with running_gateway(cfg) as g:
        deadline = time.monotonic() + 10
        while (await _v2(session, g.admin))["healthy"]:  # v2 fails until it is ejected
            assert time.monotonic() < deadline, "v2 was never ejected"
            async with session.get(f"{g.url}/v2/models/iris/infer") as r:
                await r.read()
        assert (await _v2(session, g.admin))["health"]["ejected_for_s"] > 30
        old = g.gw.loaded.digest
        # a deploy keeps v1 and adds v4 (health-checked: the reload waits for its first
        # check), dropping v2 and v3 ...
        cfg.write_text(write_config(tmp_path, _route("iris", {"v1": (ports["v1"], 100),
                                                              "v4": (p4, 0)}, HEALTH),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await asyncio.wait_for(probed.wait(), 10)
        # ... and meanwhile an operator rolls back to v3, which the file drops: refused
        async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v3", "reason": "INC-3: v1 is slow"},
                                params={"wait": "0s"}) as r:
            assert r.status == 200, await r.text()
        release.set()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None
                         or g.gw.loaded.digest != old, 10, what="the reload's outcome")
        assert g.gw.loaded.digest == old
        assert "'v3'" in (g.gw.watcher.outcome.last_error or "")
        v2 = await _v2(session, g.admin)
        assert not v2["healthy"] and v2["health"]["ejected_for_s"] > 30, v2
