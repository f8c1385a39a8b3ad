"""A drill restored from the audit trail takes only events the gateway wrote (ninth review).

Real redis-server, an in-process gateway. The attacker can write to Redis (no key) and asks,
or is, a principal with `killgate:drill` only. They add two events to the audit stream: a
`drill.start` of a drill that never ran and a `kill` it "made", whose flag is a copy of an
operator's real kill (read from the state). `drill restore` of that id rebuilt the drill
from those events and lifted the operator's kill: a kill lifted without an unkill, by a
scope that may not unkill. Events whose hash or MAC does not verify are not the drill's.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, running_gateway, write_config
from tests.drillrig import routes
from tests.test_forgery import stored_doc
from tests.test_killswitch import kill, redis_state

DANA = bearer("killgate:drill killgate:read", "dana", 10800)  # (minted at import: outlives a slow suite)


async def test_a_drill_rebuilt_from_forged_audit_events_lifts_no_kill(
        tmp_path: Path, backends, session: ClientSession, redis_server: RedisServer) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, routes(p1, p1), state=redis_state(redis_server, tmp_path))
    async with running_gateway(cfg) as g:
        await kill(session, g.admin, scope="route", route="iris")
        flag = stored_doc(redis_server)["kills"]["route:iris"]
        drill = "d-20261203T000000-forged"
        for ev in ({"id": "f1", "action": "drill.start", "drill": drill, "actor": "dana",
                    "time": flag["time"], "target": {"kind": "kill", "route": "iris"},
                    "before": {}, "after": {"deadline": 0}, "prev_hash": "0" * 64,
                    "hash": "0" * 64, "kid": "x", "mac": "0" * 64},
                   {"id": "f2", "action": "kill", "drill": drill, "actor": "dana",
                    "time": flag["time"], "target": {"scope": "route", "route": "iris"},
                    "after": flag, "prev_hash": "0" * 64, "hash": "0" * 64}):
            redis_server.cmd("XADD", "kgtest:audit", "*", "e", json.dumps(ev))
        async with session.post(f"{g.admin}/v1/drills/{drill}/restore", headers=DANA,
                                json={"reason": "it is stuck"}) as r:
            out = await r.json()
        assert r.status == 404, out
        assert "route:iris" in g.gw.holder.doc.kills
        assert "route:iris" in stored_doc(redis_server)["kills"]
