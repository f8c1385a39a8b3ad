"""An unkill that names the kill it means (`kill`: the `id` /v1/status shows) lifts that
kill, never one made since under the same key (the state review's open case: a retry of
an unkill whose answer was lost, which the CLI sends by itself, lifted a kill another
incident had made meanwhile). The CLI names it whenever its token can read the status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.backends import echo_app
from tests.conftest import admin_token, running_gateway, two_versions, write_config
from tests.test_admin_approvals import Api
from tests.test_cli import acli

pytestmark = pytest.mark.timeout(60)

SEL = {"scope": "route", "route": "iris"}


async def _kill_id(api: Api) -> str:
    status, body = await api("ops", "GET", "/v1/status")
    assert status == 200, body
    (kill,) = [k for k in body["kills"] if k["route"] == "iris"]
    return str(kill["id"])


async def test_an_unkill_naming_a_kill_lifted_since_leaves_the_new_one(tmp_path: Path,
                                                                       backends) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g, \
            ClientSession() as s:
        api = Api(s, g.admin)
        assert (await api("alice", "POST", "/v1/kill", {**SEL, "reason": "a"}))[0] == 200
        first = await _kill_id(api)
        # the same kill asked again (abort_inflight unchanged): the same id
        assert (await api("alice", "POST", "/v1/kill", {**SEL, "reason": "a"}))[0] == 200
        assert await _kill_id(api) == first
        assert (await api("bob", "POST", "/v1/unkill",
                          {**SEL, "reason": "fixed", "kill": first}))[0] == 200
        assert (await api("dave", "POST", "/v1/kill", {**SEL, "reason": "new incident"}))[0] \
            == 200
        second = await _kill_id(api)
        assert second != first
        # bob's retry of his unkill (its answer lost): refused, dave's kill stays
        status, body = await api("bob", "POST", "/v1/unkill",
                                 {**SEL, "reason": "fixed", "kill": first})
        assert status == 409 and body["error"]["type"] == "kill_replaced", body
        assert await _kill_id(api) == second
        for bad in (123, "", "x" * 65, "caf\u00e9"):
            status, body = await api("bob", "POST", "/v1/unkill",
                                     {**SEL, "reason": "fixed", "kill": bad})
            assert status == 400 and "'kill'" in body["error"]["message"], (bad, body)
        assert await _kill_id(api) == second
        status, _ = await api("bob", "POST", "/v1/unkill",
                              {**SEL, "reason": "fixed", "kill": second})
        assert status == 200


async def test_the_cli_names_the_kill_it_read_in_every_try(backends) -> None:
    """An admin API whose status shows kill `k-1` and which never answers the unkill: both
    tries carry `kill: k-1`. A kill-only token reads no status (a refusal would be
    audited) and names none."""
    bodies: list[dict[str, Any]] = []
    gets: list[str] = []

    async def status(req: web.Request) -> web.Response:
        gets.append(req.path)
        return web.json_response({"kills": [{"scope": "route", "route": "iris",
                                             "version": None, "id": "k-1"}]})

    async def unkill(req: web.Request) -> web.StreamResponse:
        bodies.append(json.loads(await req.read()))
        await asyncio.sleep(60)
        return web.Response()

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/unkill", unkill)
    port = await backends(app)
    env = {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}",
           "KILLGATE_TOKEN": admin_token("killgate:kill killgate:read")}
    res = await acli("unkill", "--route", "iris", "--reason", "x", "--timeout", "0.5", env=env)
    assert res.returncode == 1, res.stderr
    assert [b.get("kill") for b in bodies] == ["k-1", "k-1"], bodies
    bodies.clear()
    gets.clear()
    env["KILLGATE_TOKEN"] = admin_token("killgate:kill")
    res = await acli("unkill", "--route", "iris", "--reason", "x", "--timeout", "0.5", env=env)
    assert gets == [] and [b.get("kill") for b in bodies] == [None, None], (gets, bodies)


async def test_the_cli_lifts_the_kill_in_force_on_a_live_gateway(tmp_path: Path,
                                                                 backends) -> None:
    p = await backends(echo_app("v1"))
    async with running_gateway(write_config(tmp_path, two_versions(p, p))) as g:
        env = {"KILLGATE_ADMIN_URL": g.admin,
               "KILLGATE_TOKEN": admin_token("killgate:kill killgate:read")}
        res = await acli("kill", "--route", "iris", "--reason", "a", env=env)
        assert res.returncode == 0, res.stderr
        res = await acli("unkill", "--route", "iris", "--reason", "b", env=env)
        assert res.returncode == 0 and "lifted route:iris" in res.stdout, res.stderr
        events = [e for e in await g.gw.sync.store.audit_events() if e["action"] == "unkill"]
        assert len(events) == 1
