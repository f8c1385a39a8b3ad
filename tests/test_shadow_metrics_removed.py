"""A shadow a reload removed has no series on /metrics any more. (Hostile shadow review:
its counters, killgate_shadow_agreement_ratio among them, stayed at their last values
until the process restarted: an alert on the ratio of a shadow since promoted and removed
from the file kept firing.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.conftest import running_gateway, wait_until, write_config
from tests.shadow_backends import v2_app, v2_request
from tests.test_shadow import INFER, route, send_all, settled

pytestmark = pytest.mark.timeout(60)


async def _metrics(session: ClientSession, admin: str) -> str:
    async with session.get(admin + "/metrics") as r:
        return await r.text()


async def test_a_removed_shadow_has_no_series(tmp_path: Path, backends,
                                              session: ClientSession) -> None:
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "change"))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}"))
    async with running_gateway(cfg) as g:
        await send_all(session, g.url + INFER, [v2_request(x) for x in range(4)])
        await settled(session, g.admin, 4)
        ratio = 'killgate_shadow_agreement_ratio{route="iris",version="v2"} 0.0'
        assert ratio in await _metrics(session, g.admin)
        digest = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(p1, p2, "null"),
                                    name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != digest, 10)
        text = await _metrics(session, g.admin)
        assert 'route="iris"' not in "\n".join(
            line for line in text.splitlines() if line.startswith("killgate_shadow_")
            and "inflight" not in line), text


async def test_counts_of_comparison_settings_a_reload_replaced_leave_the_series(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """README: a change to the shadow's version, compare or noise starts the counts afresh;
    the report does (it reads the settings in force), but /metrics kept the old settings'
    counters and ratio until the next copy came: a shadow whose comparison was fixed after
    a page (a tolerance too strict) kept its 0.0 ratio, and the alert, for as long as no
    copy came (sample 0 while the fix is reviewed, a killed shadow, a quiet route)."""
    p1 = await backends(v2_app("v1"))
    p2 = await backends(v2_app("v2", lambda x: "noise"))
    strict = "{version: v2, sample: 1.0, compare: {v2_tensors: {atol: 0.0, rtol: 0.0}}}"
    cfg = write_config(tmp_path, route(p1, p2, strict))
    async with running_gateway(cfg) as g:
        await send_all(session, g.url + INFER, [v2_request(x) for x in range(4)])
        await settled(session, g.admin, 4)
        ratio = 'killgate_shadow_agreement_ratio{route="iris",version="v2"} 0.0'
        assert ratio in await _metrics(session, g.admin)
        digest = g.gw.loaded.digest
        cfg.write_text(write_config(tmp_path, route(p1, p2, strict.replace(
            "atol: 0.0", "atol: 0.001")), name="next.yaml").read_text())
        g.gw.request_reload()
        await wait_until(lambda: g.gw.loaded.digest != digest, 10)
        text = await _metrics(session, g.admin)
        assert ratio not in text, text
        assert 'killgate_shadow_comparisons_total{outcome="disagreed",route="iris"' \
            not in text, text
        # a copy under the settings in force: its series, counted afresh
        await send_all(session, g.url + INFER, [v2_request(9)])
        await settled(session, g.admin, 1)
        assert 'killgate_shadow_agreement_ratio{route="iris",version="v2"} 1.0' in \
            await _metrics(session, g.admin)
