"""Backend failure handling, from a hostile review (revfailover): passive ejection and the
versions that can serve, deadlines across failover. Each failed before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import kill

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"


async def test_the_last_version_left_by_a_kill_is_never_ejected(tmp_path: Path,
                                                                 backends) -> None:
    """README: "Passive ejection never removes the last version that can serve." v1 is
    killed; v2, the only version left, answers 5xx. It used to be ejected all the same (a
    killed v1 counted as serving), and the route then answered 503 `unavailable` for 30 s
    even once v2 recovered. Expected: v2 keeps serving (its 5xx are forwarded)."""
    p1 = await backends(echo_app("v1"))
    p2 = await backends(echo_app("v2", status=503))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50,
                                              "outlier: {consecutive_5xx: 2}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        await kill(session, g.admin, scope="version", route="iris", version="v1")
        await wait_until(lambda: g.gw.holder.table.by_name["iris"].excluded.get("v1")
                         == "killed")
        seen = []
        for _ in range(6):
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
                seen.append((r.status, r.headers.get("x-killgate-version"),
                             r.headers.get("x-killgate-decision")))
        assert [s[:2] for s in seen] == [(503, "v2")] * 6, seen
        assert ("iris", "v2") not in g.gw.holder.unhealthy


async def test_the_last_version_beside_a_shadow_is_never_ejected(tmp_path: Path,
                                                                 backends) -> None:
    """A route with one serving version and a shadow: the shadow never answers a client,
    so it is not a version that can serve; the serving version answering 5xx used to be
    ejected, leaving the route with nothing (503 `unavailable`)."""
    p1 = await backends(echo_app("v1", status=503))
    p2 = await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0,
                                              "outlier: {consecutive_5xx: 2}\n"
                                              "shadow: {version: v2}\n"))
    async with running_gateway(cfg) as g, ClientSession() as session:
        seen = []
        for _ in range(6):
            async with session.post(g.url + INFER, data=b"{}") as r:
                await r.read()
                seen.append((r.status, r.headers.get("x-killgate-version")))
        assert seen == [(503, "v1")] * 6, seen
