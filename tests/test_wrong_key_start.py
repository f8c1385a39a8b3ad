"""A new instance whose state key is not the fleet's (a Secret replaced without the rotation
steps, a typo in a new overlay): it holds nothing yet (no snapshot) and cannot verify the
store's document. It must not serve as if nothing were killed, and must not write over the
fleet's kills."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, write_config
from tests.test_killswitch import kill, redis_state, status_of

pytestmark = pytest.mark.timeout(60)


async def test_an_instance_with_another_key_never_serves_a_killed_route(
        tmp_path: Path, backends, redis_server: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = await backends(echo_app("v1"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cfg_a = write_config(tmp_path / "a", two_versions(p, p, 100, 0),
                         state=redis_state(redis_server, tmp_path, "a"))
    state_b = redis_state(redis_server, tmp_path, "b").replace(
        "KILLGATE_TEST_STATE_KEY", "KILLGATE_OTHER_STATE_KEY")
    cfg_b = write_config(tmp_path / "b", two_versions(p, p, 100, 0), state=state_b)
    monkeypatch.setenv("KILLGATE_OTHER_STATE_KEY", "z" * 64)
    async with running_gateway(cfg_a, "gw-a") as a, ClientSession() as s:
        await kill(s, a.admin, "1s", scope="route", route="iris")
        assert (await status_of(s, a.url))[0] == 503
        async with running_gateway(cfg_b, "gw-b") as b:
            t0 = asyncio.get_running_loop().time()
            while asyncio.get_running_loop().time() - t0 < 2.0:  # several sync attempts
                code, decision = await status_of(s, b.url)
                assert (code, decision) == (503, "fallback"), (code, decision)  # unknown
                async with s.get(b.admin + "/readyz") as r:
                    assert r.status == 503
            # nothing written over the fleet's document: a kept it, never re-seeding
            assert b.gw.metrics.get("killgate_state_reseeds_total") == 0
            assert a.gw.metrics.get("killgate_state_reseeds_total") == 0
        assert "route:iris" in a.gw.holder.doc.kills
        assert (await status_of(s, a.url))[0] == 503
