"""A reload applying a file that serves a kill's traffic under the kill's kept name (a more
specific route added beside a killed route, a killed version's backend under another version
name) said so only in one log line (`kill_routed_around`): /v1/status still listed the kill as
routed and in force, `killgate status` said nothing, and the reload's audit event did not name
it, though the file had in effect lifted the kill for those requests (hostile GitOps review).
Now it is a reload warning (/v1/status config.warnings, `killgate status`: RELOAD WARNING)
and the audit event's `after.kills_routed_around` names it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import echo_app
from tests.conftest import bearer, running_gateway, two_versions, wait_until, write_config
from tests.test_reload import atomic_write

pytestmark = pytest.mark.timeout(30)

H = bearer("killgate:admin", "ops", 10800)


async def test_a_reload_routing_around_a_kill_is_a_warning_in_status_and_audited(
        tmp_path: Path, backends, session: ClientSession) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    cfg = write_config(tmp_path, two_versions(p1, p2, 90, 10))
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H,
                                json={"scope": "route", "route": "iris",
                                      "reason": "INC-9: leaking data"}) as r:
            assert r.status == 200, await r.text()
        async with session.get(g.url + "/v2/models/iris/premium/x") as r:
            assert r.status == 503
        # a commit adds a more specific route that takes part of iris's requests
        premium = textwrap.dedent(f"""\
            - name: iris-premium
              match: {{path_prefix: /v2/models/iris/premium}}
              stable: v1
              versions:
                - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
            """)
        text = write_config(tmp_path, premium + two_versions(p1, p2, 90, 10),
                            name="next.yaml").read_text()
        atomic_write(cfg, text)
        await wait_until(lambda: g.gw.metrics.get("killgate_config_reloads_total") == 1, 10,
                         what="the reload")
        async with session.get(g.url + "/v2/models/iris/premium/x") as r:
            assert r.status == 200  # (what the file does: served under the new route)
        async with session.get(g.admin + "/v1/status", headers=H) as r:
            st = await r.json()
        warnings = st["config"]["warnings"]
        assert any("route:iris kill" in w and "iris-premium" in w for w in warnings), warnings

        async def reloads() -> list[dict]:
            async with session.get(g.admin + "/v1/audit?limit=20", headers=H) as r:
                events = (await r.json())["events"]
            return [e for e in events if e["action"] == "config.reload"]

        await wait_until(reloads, 5, what="the audit event")
        [ev] = await reloads()
        around = ev["after"].get("kills_routed_around")
        assert around and around[0]["kill"] == "route:iris", ev["after"]
