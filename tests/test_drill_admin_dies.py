"""The instance behind the drill's admin URL dies mid-drill (SIGKILL after the injection):
the restore and the end go through another instance's admin address (those the instances
publish with their heartbeat), so the drill's kill is lifted and the drill closed at once,
not left in force until the fleet closes it minutes later (drills.auto_restore_after past
the deadline) after a `RESTORE FAILED` naming the dead address. Two real `killgate
serve` processes on one real redis."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.admin.tokens import mint
from gateway.control.drillload import AdminClient
from gateway.control.drillreach import Reach
from gateway.control.drills import DrillRunner
from gateway.domain.drillplan import plan_from
from tests.backends import echo_app
from tests.conftest import (
    SECRET,
    STATE_KEY,
    STATE_KEY_ENV,
    GatewayProcess,
    RedisServer,
    free_port,
    wait_until,
    write_config,
)
from tests.drillrig import call, hdr, routes
from tests.staterig import redis_section

pytestmark = pytest.mark.timeout(60)


async def test_a_drill_whose_admin_instance_dies_restores_through_another(
        tmp_path: Path, backends, gateway_procs, session: ClientSession,
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STATE_KEY_ENV, STATE_KEY)
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    gws: list[GatewayProcess] = []
    for name in "ab":
        state = redis_section(redis_server.url, "dies", poll_interval="100ms",
                              heartbeat_interval="200ms")
        cfg = write_config(tmp_path, routes(p1, p2), state=state, name=f"{name}.yaml",
                           listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
        gws.append(gateway_procs(cfg, env={STATE_KEY_ENV: STATE_KEY}))
    for g in gws:
        await asyncio.to_thread(g.wait_ready)
    a, b = gws

    async def both_published() -> bool:
        st, out = await call(session, "GET", f"{b.admin}/v1/status")
        return st == 200 and sum(1 for i in out["instances"].values() if i.get("admin")) == 2

    await wait_until(both_published, 10, what="both instances' admin addresses")
    tok = mint(SECRET, "dana", "killgate:drill killgate:read", 600, "killgate",
               "killgate-admin")
    plan = plan_from({"kind": "kill", "route": "iris-drill", "version": "v2", "rate": 40,
                      "steady": "400ms", "hold": "800ms", "settle": "300ms",
                      "instances": [b.url], "targets": {"time_to_restore_ms": {"max": 300}}})
    said: list[str] = []
    runner = DrillRunner(plan, session, AdminClient(session, a.admin, tok), said.append)

    async def kill_a_after_the_injection() -> None:
        await wait_until(lambda: runner.marks.inject_done is not None, 10, what="injected")
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait(5)

    killer = asyncio.create_task(kill_a_after_the_injection())
    report = await runner.run()
    await killer
    assert not any("RESTORE FAILED" in s for s in said), said
    assert any(f"went through {b.admin}" in s for s in said), said
    assert report["receipts"]["restore"]["acked"] >= 1, report  # (a restore, and its receipt)
    st, out = await call(session, "GET", f"{b.admin}/v1/drills", headers=hdr())
    assert st == 200 and out["open"] == [], out  # (restored and ended)
    assert out["history"][0]["target"]["drill"] == report["id"], out["history"]
    st, status = await call(session, "GET", f"{b.admin}/v1/status", headers=hdr())
    assert status["kills"] == [], status["kills"]


async def test_an_https_admin_urls_token_never_goes_to_a_plain_http_address(
        session: ClientSession) -> None:
    api = AdminClient(session, "https://admin.example", "secret-token")
    reach = Reach(api, ["http://10.0.0.5:8081", "https://10.0.0.6:8081",
                        "https://admin.example/"], lambda _: None)
    others = reach._others()
    assert [o.base for o in others] == ["https://10.0.0.6:8081"]
    assert others[0].headers["authorization"] == "Bearer secret-token"
