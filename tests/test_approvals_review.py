"""Hostile state review of two-person unkills: an approval lifts the kill it was asked
for, never a kill made since under the same key."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_admin_approvals import Api

pytestmark = pytest.mark.timeout(30)


async def test_an_unkill_request_does_not_lift_a_kill_made_after_it(tmp_path: Path,
                                                                     backends) -> None:
    """Bob asks to lift Alice's kill; Carol lifts it by break-glass, and Dave kills the
    route again (another incident). Erin approves Bob's request, still open: it lifted
    Dave's kill, which no one asked to lift nor reviewed (the request's hash covers the
    key only, the same for both kills). Now it is refused (409 kill_replaced), and Dave's
    kill stays in force."""
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p),
                       extra="approvals: {unkill_route: 2, ttl: 10m}\n")
    sel = {"scope": "route", "route": "iris"}
    async with running_gateway(cfg) as g, ClientSession() as s:
        api = Api(s, g.admin)
        status, _ = await api("alice", "POST", "/v1/kill", {**sel, "reason": "v2 leaks"})
        assert status == 200
        status, body = await api("bob", "POST", "/v1/unkill", {**sel, "reason": "fixed"})
        assert status == 202, body
        request = body["approval"]
        status, _ = await api("carol", "POST", "/v1/unkill",
                              {**sel, "reason": "now", "break_glass": True},
                              scope="killgate:kill killgate:breakglass")
        assert status == 200
        status, _ = await api("dave", "POST", "/v1/kill", {**sel, "reason": "new incident"})
        assert status == 200
        status, body = await api("erin", "POST", f"/v1/approvals/{request['id']}/approve",
                                 {"hash": request["hash"]})
        assert (status, body.get("error", {}).get("type")) == (409, "kill_replaced"), body
        assert g.gw.holder.doc.kills["route:iris"].reason == "new incident"
        # asked again, against the kill in force now, it is a new request, and applies
        status, body = await api("bob", "POST", "/v1/unkill", {**sel, "reason": "both fixed"})
        assert status == 202 and body["approval"]["id"] != request["id"], body
        status, _ = await api("erin", "POST",
                              f"/v1/approvals/{body['approval']['id']}/approve", {})
        assert status == 200 and "route:iris" not in g.gw.holder.doc.kills
