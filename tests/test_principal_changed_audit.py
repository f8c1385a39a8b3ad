"""A 409 `principal_changed` (X-Killgate-Subject names another principal than the token's)
is a refusal like a 401 or 403: counted (`killgate_auth_failures_total{code="409"}`) and
tallied into the audit trail (action `principal_changed`, admin/denied.py), not only
logged. Found by review (impadmin3): it was only logged, so a caller probing subjects with
a valid token left nothing in the trail's tally or the metric. On a real `killgate serve`
with its state (and so its trail) in a real redis-server."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import RedisServer, bearer, free_port, two_versions, wait_until, write_config
from tests.test_killswitch import redis_state

pytestmark = pytest.mark.timeout(60)


async def test_principal_changed_is_counted_and_audited(
        tmp_path: Path, backends, gateway_procs, redis_server: RedisServer) -> None:
    p = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p, p), state=redis_state(redis_server, tmp_path),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}")
    gw = gateway_procs(cfg)
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    body = {"scope": "route", "route": "iris", "reason": "INC-7"}
    read = bearer("killgate:read")
    async with ClientSession() as s:
        for probed in ("alice", "bob", "carol"):  # dave probing whom he may pass for
            headers = {**bearer("killgate:admin", sub="dave"), "X-Killgate-Subject": probed}
            async with s.post(gw.admin + "/v1/kill", json=body, headers=headers) as r:
                assert r.status == 409, await r.text()
                assert (await r.json())["error"]["type"] == "principal_changed"

        async def tallied() -> list[dict]:
            async with s.get(gw.admin + "/v1/audit?limit=50", headers=read) as r:
                assert r.status == 200
                return [e for e in (await r.json())["events"]
                        if e["action"] == "principal_changed"]

        await wait_until(tallied, 10, 0.1, "the principal_changed refusals in the trail")
        [ev] = await tallied()  # one caller, one endpoint: one event for the three
        assert (ev["actor"], ev["source"], ev["attempts"]) == ("dave", "127.0.0.1", 3), ev
        assert ev["target"]["path"] == "/v1/kill" and "principal_changed" in ev["reason"]
        async with s.get(gw.admin + "/metrics") as r:
            text = await r.text()
        assert re.search(r'^killgate_auth_failures_total\{code="409"\} 3\.0$', text, re.M), \
            [ln for ln in text.splitlines() if "auth_failures" in ln]
        async with s.get(gw.admin + "/v1/status", headers=read) as r:
            assert r.status == 200 and not (await r.json())["kills"]  # nothing done
    assert gw.stop() == 0
