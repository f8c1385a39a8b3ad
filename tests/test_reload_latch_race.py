"""A rollback latched while a reload waits for its new backends' health round: the reload
checked the latch before that round, against the document as it was, and swapped in the
file without the rolled-back-to version after it; the route then served the file's stable,
the version just rolled back from, with no error and an audit trail saying 'rolled back'."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.backends import echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.test_kill_after_routing_reload import _route
from tests.test_killswitch import auth
from tests.test_reload_latch_review import ROLLOUT, _served

pytestmark = pytest.mark.timeout(30)

HEALTH = "  health: {path: /h, interval: 3s, timeout: 2s}\n"


def _slow_health(probed: asyncio.Event, release: asyncio.Event) -> web.Application:
    """A new version whose first health check answers only once the test says so."""
    async def health(_: web.Request) -> web.Response:
        probed.set()
        await release.wait()
        return web.json_response({})

    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"version": "v4"})

    app = web.Application()
    app.router.add_get("/h", health)
    app.router.add_route("*", "/{t:.*}", answer)
    return app


async def test_a_rollback_during_the_reload_health_round_is_not_undone(
        tmp_path: Path, backends, session: ClientSession) -> None:
    probed, release = asyncio.Event(), asyncio.Event()
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2")}
    p4 = await backends(_slow_health(probed, release))
    cfg = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                 "v1": (ports["v1"], 0)}))
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        # a pipeline deploys: v1 retired, v4 added (with health checks)
        cfg.write_text(write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                              "v4": (p4, 0)}, HEALTH),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await asyncio.wait_for(probed.wait(), 10)  # the reload waits for v4's first check
        # meanwhile v2 misbehaves: the operator rolls back to v1, which the file still has
        async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v1", "reason": "INC-2: v2 is bad"},
                                params={"wait": "0s"}) as r:
            assert r.status == 200, await r.text()
        release.set()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None
                         or g.gw.loaded.digest != old, 10, what="the reload's outcome")
        assert g.gw.loaded.digest == old, await _served(session, g.url)  # (v2 before the fix)
        err = g.gw.watcher.outcome.last_error
        assert "routes[0].versions" in err and "'v1'" in err, err
        assert await _served(session, g.url) == {"200 v1"}


async def test_a_file_refused_for_a_latch_goes_live_once_the_route_is_released(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """README: keep the version, or `release` the route first. An operator who releases
    after the deploy was refused expects the file to govern; the refused file was never
    read again (it did not change), so the gateway kept the old file's routes and showed
    the latch error, now stale, for as long as nobody touched the file. (SIGHUP only, so
    that no watcher event reads the file again on its own.)"""
    ports = {v: await backends(echo_app(v)) for v in ("v1", "v2", "v3")}
    hup = "server: {watch_config: false}\n"
    cfg = write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                 "v1": (ports["v1"], 0)}), extra=hup)
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/routes/iris/rollback", headers=auth(ROLLOUT),
                                json={"to": "v1", "reason": "INC-3"}) as r:
            assert r.status == 200, await r.text()
        old = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, _route("iris", {"v2": (ports["v2"], 100),
                                                              "v3": (ports["v3"], 0)}),
                                    extra=hup, name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10,
                         what="the refusal")
        assert g.gw.loaded.digest == old
        async with session.post(f"{g.admin}/v1/routes/iris/release", headers=auth(ROLLOUT),
                                json={"reason": "INC-3 over: deploy the file"}) as r:
            assert r.status == 200, await r.text()
        await wait_until(lambda: g.gw.watcher.outcome.loaded_digest != old, 10,
                         what="the file applied after the release")
        assert g.gw.watcher.outcome.last_error is None
        assert await _served(session, g.url) == {"200 v2"}
