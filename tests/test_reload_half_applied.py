"""A reload is all or nothing up to its swap, and applied once swapped (app._apply_config).

Before: the health records were put back only when the history check refused the file; any
other failure before the swap (a table-build bug) left the refused file's health checks
running against the old config, and a failure after it (the admin API's reconfigure, the
pools' retirement, the callbacks) left the new file live while the reload was reported
refused, with no `config_reloaded` line and no write-back to the worker group.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

import gateway.control.table as table_mod
from gateway.dataplane.inflight import Handle
from tests.backends import echo_app, hang_app
from tests.conftest import running_gateway, two_versions, wait_until, write_config
from tests.test_killswitch import auth, kill

pytestmark = pytest.mark.timeout(30)

HEALTH = "health: {path: /h, interval: 3s, timeout: 1s}\n"


def _failing_checks(name: str) -> web.Application:
    """Serves as `name`, but its health check path answers 503."""

    async def check(_: web.Request) -> web.Response:
        return web.Response(status=503)

    async def serve(_: web.Request) -> web.Response:
        return web.json_response({"version": name})

    app = web.Application()
    app.router.add_get("/h", check)
    app.router.add_route("*", "/{tail:.*}", serve)
    return app


async def _served(session: ClientSession, url: str) -> str:
    async with session.get(f"{url}/v2/models/iris/infer") as r:
        assert r.status == 200, await r.text()
        version: str = (await r.json())["version"]
        return version


async def _config_status(session: ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(f"{admin}/v1/status", headers=auth("killgate:read")) as r:
        assert r.status == 200, await r.text()
        config: dict[str, Any] = (await r.json())["config"]
        return config


def _lines(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [{"level": r.levelname, **r.kg_fields}  # type: ignore[attr-defined]
            for r in caplog.records if r.getMessage() == name]


async def test_a_failure_before_the_swap_leaves_the_old_config_whole(
        tmp_path: Path, backends, session: ClientSession, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The file adds health checks that fail on v1; building its table fails. The reload is
    refused naming the step, and v1 (unchecked under the running config) still serves:
    the refused file's checks must not eject it."""
    p1, p2 = await backends(_failing_checks("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0))
    real = table_mod.build_table

    def build_table(config: Any, *args: Any, **kw: Any) -> Any:
        if any(rc.health is not None for rc in config.routes):
            raise RuntimeError("injected: a table-build bug")
        return real(config, *args, **kw)

    monkeypatch.setattr(table_mod, "build_table", build_table)
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest
        assert await _served(session, g.url) == "v1"
        cfg.write_text(write_config(tmp_path, two_versions(p1, p2, 100, 0, extra=HEALTH),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_error is not None, 10,
                         what="the reload refused")
        assert g.gw.loaded.digest == old
        assert g.gw.holder.unhealthy == frozenset(), g.gw.holder.unhealthy
        assert [await _served(session, g.url) for _ in range(5)] == ["v1"] * 5
        status = await _config_status(session, g.admin)
        assert status["digest"] == old
        assert "building its routing table failed (RuntimeError)" in status["last_error"]
        assert "running config stays in force" in status["last_error"]
        (failed,) = _lines(caplog, "config_apply_failed")
        assert failed["level"] == "ERROR" and failed["step"] == "building its routing table"
        assert _lines(caplog, "config_rejected") and not _lines(caplog, "config_reloaded")


async def test_a_failure_after_the_swap_is_logged_and_the_reload_applied(
        tmp_path: Path, backends, session: ClientSession, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The admin API's reconfigure fails once the new table is live: the reload is applied
    (config_reloaded, the new digest in /v1/status with the failed step among its warnings),
    and the steps after it still run (the callbacks: a group's write-back); a routing
    table listener that raises is logged too, not taken for a refusal."""
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 100, 0))
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg) as g:
        old = g.gw.loaded.digest

        def reconfigure(*_: Any) -> None:
            raise RuntimeError("injected: an admin reconfigure bug")

        assert g.gw.admin_api is not None
        monkeypatch.setattr(g.gw.admin_api, "reconfigure", reconfigure)
        handed: list[str] = []
        g.gw.config_applied.append(lambda loaded: handed.append(loaded.digest))

        def listener(*_: Any) -> None:  # (a table listener that raises, after the swap)
            raise RuntimeError("injected: a table listener bug")

        g.gw.holder.listen(listener)
        cfg.write_text(write_config(tmp_path, two_versions(p1, p2, 0, 100),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.watcher.outcome.last_attempt is not None
                         and (g.gw.watcher.outcome.last_error is not None
                              or g.gw.watcher.outcome.loaded_digest != old), 10,
                         what="the reload's outcome")
        new = g.gw.loaded.digest
        assert new != old and g.gw.watcher.outcome.last_error is None
        assert await _served(session, g.url) == "v2"
        assert handed == [new]
        status = await _config_status(session, g.admin)
        assert status["loaded_digest"] == new and status["last_error"] is None
        assert any("the admin API's settings failed" in w for w in status["warnings"]), status
        (failed,) = _lines(caplog, "config_apply_step_failed")
        assert failed["level"] == "ERROR" and failed["step"] == "the admin API's settings"
        listened = _lines(caplog, "table_listener_failed")
        assert listened and all(x["level"] == "ERROR" for x in listened), listened
        (reloaded,) = _lines(caplog, "config_reloaded")
        assert reloaded["new"] == new


async def test_a_kill_cuts_every_covered_flight_though_cutting_one_raised(
        tmp_path: Path, backends, session: ClientSession, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill with abort_inflight whose cut of one request in flight raised (the cut runs
    that request's answer code at once) still cuts the others it covers: before, the
    listener stopped at the first failure and TableHolder logged it, so the kill was said
    applied while the other requests kept streaming from the killed version."""
    hung, p2 = await backends(hang_app()), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(hung, p2, 100, 0))
    real = Handle.abort
    calls: list[int] = []

    def abort(self: Handle, why: Any) -> None:
        real(self, why)
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected: a cut that raised")

    monkeypatch.setattr(Handle, "abort", abort)
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg) as g:
        url = f"{g.url}/v2/models/iris/infer"
        flights = [asyncio.create_task(session.get(url)) for _ in range(3)]
        await wait_until(lambda: g.gw.inflight.count == 3, 5, what="three requests in flight")
        await kill(session, g.admin, scope="version", route="iris", version="v1",
                   abort_inflight=True)
        done, pending = await asyncio.wait(flights, timeout=2)
        for t in pending:
            t.cancel()
        assert not pending, f"{len(pending)} of 3 requests to the killed version not cut"
        for t in done:
            t.result().release()
        assert len(calls) == 3
        assert _lines(caplog, "inflight_abort_failed")


async def test_a_kill_whose_table_warning_raised_still_cuts_and_is_answered(
        tmp_path: Path, backends, session: ClientSession, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The table's warnings (override_unservable) ran after the swap and before the
    listeners, outside their guard: one that raised skipped every listener (the kill's cut
    of the requests in flight) and escaped the swap, though the kill's table was live."""
    hung, p2 = await backends(hang_app()), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(hung, p2, 100, 0))

    def warn(old: Any, new: Any) -> None:
        if old is not None and new.doc.kills:
            raise RuntimeError("injected: a warning that raised")

    monkeypatch.setattr(table_mod, "_warn_unservable", warn)
    caplog.set_level(logging.INFO, logger="killgate")
    async with running_gateway(cfg) as g:
        url = f"{g.url}/v2/models/iris/infer"
        flight = asyncio.create_task(session.get(url))
        await wait_until(lambda: g.gw.inflight.count == 1, 5, what="a request in flight")
        await kill(session, g.admin, scope="version", route="iris", version="v1",
                   abort_inflight=True)
        done, pending = await asyncio.wait([flight], timeout=2)
        for t in pending:
            t.cancel()
        assert not pending, "the request to the killed version was not cut"
        for t in done:
            t.result().release()
        assert await _served(session, g.url) == "v2"
        assert _lines(caplog, "table_warnings_failed")
