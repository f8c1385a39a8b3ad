"""An alert's kill while the state store is down (control/alertlocal.py): the 3 a.m. case
the emergency local kill exists for, with nobody awake to send `killgate kill --local`.

Real redis-server stopped and started, a real gateway, real backends, Alertmanager's own
payload over HTTP. Before: the webhook answered 503 `state_store_unavailable` for as long
as the store was down (Alertmanager retrying into the outage) and the version kept
serving. Now the kill is taken locally (enforced here at once, answered 200 `local`), a
resend or a resolve changes nothing (a resolved alert lifts nothing, a local kill
included), a rollback still waits for the store, and the kill is merged into the store in
the alert's name when it returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, running_gateway, two_versions, wait_until, write_config
from tests.staterig import redis_state
from tests.test_alerting import payload
from tests.test_alerts import READ, _audit, _post, _versions


async def _status(session: ClientSession, admin: str) -> dict[str, Any]:
    async with session.get(admin + "/v1/status", headers=READ) as r:
        return dict(await r.json())


@pytest.mark.timeout(60)
async def test_an_alerts_kill_in_a_store_outage_is_taken_locally_and_merged(
        tmp_path: Path, backends: Any, session: ClientSession,
        redis_server: RedisServer) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 50, 50),
                       state=redis_state(redis_server, tmp_path, "a"),
                       extra="alerts:\n  alertmanager: {}\n")
    firing = payload(killgate_action="kill", route="iris", version="v2")
    async with running_gateway(cfg) as g:
        assert await _versions(session, g.url) == {"v1", "v2"}
        redis_server.kill()
        # a rollback is never taken locally: Alertmanager's retry acts once the store answers
        rollback = payload(killgate_action="rollback", route="iris", version="v1")
        rollback["alerts"][0]["fingerprint"] = "0000000000000009"
        status, answer = await _post(session, g.admin, rollback)
        assert status == 503 and answer["error"]["type"] == "state_store_unavailable", answer

        status, answer = await _post(session, g.admin, firing)
        assert status == 200, answer  # (not retried into the outage)
        (act,) = answer["actions"]
        assert act["outcome"] == "local" and act["local"] is True and act["changed"] is True
        assert "LOCAL kill of version:iris:v2" in act["message"], act
        assert await _versions(session, g.url) == {"v1"}  # enforced here at once
        shown = await _status(session, g.admin)
        assert [(k["version"], k["local"]) for k in shown["kills"]] == [("v2", True)]
        (kept,) = shown["store"]["local_kills"]["kills"]
        assert kept["actor"] == "alertmanager/killgate" and kept["id"] == act["id"]

        # Alertmanager's resend, then the alert resolved: nothing lifted, nothing added
        status, answer = await _post(session, g.admin, firing)
        assert status == 200 and answer["actions"][0]["changed"] is False, answer
        status, answer = await _post(session, g.admin, payload(
            "resolved", killgate_action="kill", route="iris", version="v2"))
        assert status == 200 and answer["actions"][0]["outcome"] == "resolved", answer
        assert await _versions(session, g.url) == {"v1"}
        assert len((await _status(session, g.admin))["store"]["local_kills"]["kills"]) == 1

        redis_server.start()  # (empty: re-seeded, then the local kill merged)

        async def merged() -> bool:
            doc = await _status(session, g.admin)
            return doc["store"]["local_kills"]["kills"] == [] and \
                [(k["version"], k["local"]) for k in doc["kills"]] == [("v2", False)]

        await wait_until(merged, 20, 0.1, what="the alert's local kill merged into the store")
        assert await _versions(session, g.url) == {"v1"}
        kills = [e for e in await _audit(session, g.admin)
                 if e["action"] == "kill" and "local" in e]
        assert len(kills) == 1 and kills[0]["actor"] == "alertmanager/killgate", kills
        assert kills[0]["local"]["id"] == act["id"]
