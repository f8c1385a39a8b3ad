"""Drills and the emergency local kill (admin/localkill.py, control/alertlocal.py), on an
in-process gateway with a real redis-server stopped and started, real backends.

Found by review of implocalkill: a kill drill holds v2 killed; the store goes down; the
on-call sends `killgate kill --local` for v2 (v2 really is broken now). Before: the local
kill saw v2 killed already ("in force from the store") and kept nothing, answered 200
`changed: false`; once the store was back, the drill's restore lifted the drill's kill,
and with it the only kill of v2: the on-call's emergency stop was undone silently by a
rehearsal. A kill an open drill holds is taken locally like any other, and merged as a
kill of its own that takes the drill's over (the one kill rule), so the restore keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, wait_until, write_config
from tests.drillrig import DRILL, call, hdr, routes
from tests.staterig import redis_state
from tests.test_alerting import payload
from tests.test_alerts import _post

pytestmark = pytest.mark.timeout(60)

ONCALL = hdr("killgate:kill killgate:read", sub="oncall")


@pytest.mark.parametrize("lever", ["api", "alert"])
async def test_a_local_kill_of_what_a_drill_holds_survives_the_drills_restore(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer,
        lever: str) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, routes(p1, p2), state=redis_state(redis_server, tmp_path),
                       extra="alerts:\n  alertmanager: {}\n")
    async with running_gateway(cfg) as g:
        a, both = g.admin, hdr(DRILL + " killgate:kill")
        st, out = await call(session, "POST", f"{a}/v1/drills", {
            "kind": "kill", "route": "iris", "version": "v2", "production": True,
            "reason": "r"}, both)
        assert st == 200, out
        drill = out["drill"]
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/inject",
                             {"reason": "r"}, both)
        assert st == 200, out

        redis_server.kill()
        if lever == "api":
            st, out = await call(session, "POST", f"{a}/v1/kill?local=1", {
                "scope": "version", "route": "iris", "version": "v2",
                "reason": "real incident"}, ONCALL)
            assert st == 202 and out["local"] is True and out["changed"] is True, out
            who = ("oncall", "real incident")
        else:  # (the alert's kill in the outage, control/alertlocal.py)
            st, out = await _post(session, a, payload(killgate_action="kill", route="iris",
                                                      version="v2"))
            assert st == 200 and out["actions"][0]["outcome"] == "local", out
            who = ("alertmanager/killgate", "")

        redis_server.start()  # (empty: re-seeded, then the local kill merged)

        async def merged() -> bool:
            st, doc = await call(session, "GET", f"{a}/v1/status", None, ONCALL)
            return st == 200 and doc["store"]["local_kills"]["kills"] == []

        await wait_until(merged, 20, 0.1, what="the local kill merged into the store")
        st, out = await call(session, "POST", f"{a}/v1/drills/{drill}/end",
                             {"verdict": "aborted", "reason": "r"}, both)
        assert st == 200, out
        assert out["undone"] == [{"kept": "version:iris:v2",
                                  "why": "lifted or replaced since the drill made it"}], out
        flag = g.gw.holder.doc.kills["version:iris:v2"]
        assert flag.actor == who[0] and who[1] in flag.reason, flag
