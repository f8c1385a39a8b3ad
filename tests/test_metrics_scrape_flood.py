"""GET /metrics under a flood of distinct Accept headers (found by review): /metrics is open
without a token, and concurrent scrapes shared a render only when their Accept headers were
equal (admin/coalesce.py), each render queued after the others' at 20 % of the loop. So a
flood of `application/openmetrics-text; version=1.0.<n>` queued a render per header, and a
real Prometheus scrape waited behind all of them, past its scrape_timeout. The coalescer is
now keyed by the format the page is written in (telemetry/exposition.scrape_format: the text
format 0.0.4, the text format 1.0.0 and OpenMetrics 1.0.0 in the library's four escapings),
and renders waiting to start are capped (a new format past the cap: 429 with Retry-After,
counted in killgate_admin_refused_total{reason="scrapes"}). On a real `killgate serve`."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.admin.coalesce import MAX_PENDING
from tests.backends import echo_app
from tests.conftest import GatewayProcess, free_port, two_versions, write_config

pytestmark = pytest.mark.timeout(60)

#: what Prometheus 3 sends
PROMETHEUS = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
              "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;"
              "escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
FLOOD = 600
#: a real scrape's longest wait under the flood (before: seconds, one render queued
#: per distinct header; Prometheus' default scrape_timeout is 10 s)
BOUND_S = 2.0

#: the formats the page is written in (each a render of its own)
FORMATS = ["", *(f"{kind}; version=1.0.0; escaping={e}"
                 for kind in ("text/plain", "application/openmetrics-text")
                 for e in ("underscores", "allow-utf-8", "dots", "values"))]


async def _gateway(tmp_path: Path, backends: Any, gateway_procs: Any) -> GatewayProcess:
    p = await backends(echo_app("v1"))
    routes = "".join(two_versions(p, p, name=f"m{i}", prefix=f"/v2/models/m{i}")
                     for i in range(40))
    cfg = write_config(tmp_path, routes, listen=f"127.0.0.1:{free_port()}",
                       admin=f"127.0.0.1:{free_port()}")
    gw: GatewayProcess = gateway_procs(cfg)
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    return gw


async def _get(s: aiohttp.ClientSession, url: str,
               accept: str) -> tuple[int, dict[str, str], bytes]:
    async with s.get(url, headers={"Accept": accept}) as r:
        return r.status, dict(r.headers), await r.read()


async def test_a_flood_of_distinct_accept_headers_does_not_hold_a_real_scrape(
        tmp_path: Path, backends: Any, gateway_procs: Any) -> None:
    gw = await _gateway(tmp_path, backends, gateway_procs)
    url = f"{gw.admin}/metrics"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        flood = [asyncio.create_task(_get(s, url, accept)) for accept in (
            *(f"application/openmetrics-text; version=1.0.{n}" for n in range(FLOOD // 2)),
            *(f"text/plain; version=0.0.4; x={n}" for n in range(FLOOD // 2)))]
        # (the flood's requests in first: the real scrape sent once one of them is answered)
        await asyncio.wait(flood, return_when=asyncio.FIRST_COMPLETED)
        t0 = time.perf_counter()
        status, headers, body = await asyncio.wait_for(_get(s, url, PROMETHEUS), 15)
        took = time.perf_counter() - t0
        answers = await asyncio.wait_for(asyncio.gather(*flood), 30)
        flooded = time.perf_counter() - t0
    print(f"\nreal scrape under a flood of {FLOOD} distinct Accept headers: {took:.2f} s "
          f"(the flood answered {flooded:.2f} s after it was sent)")
    assert status == 200, body[:300]
    assert headers["Content-Type"] == ("application/openmetrics-text; version=1.0.0; "
                                       "charset=utf-8; escaping=allow-utf-8")
    assert body.endswith(b"# EOF\n")
    assert took < BOUND_S, took
    # every flood answer is the page, in the format its header asked for (1.0.0 for any
    # later OpenMetrics version: the one we write)
    assert {a[0] for a in answers} == {200}
    assert {a[1]["Content-Type"] for a in answers} == {
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
        "text/plain; version=0.0.4; charset=utf-8"}


async def test_renders_waiting_past_the_cap_are_refused_with_retry_after(
        tmp_path: Path, backends: Any, gateway_procs: Any) -> None:
    gw = await _gateway(tmp_path, backends, gateway_procs)
    url = f"{gw.admin}/metrics"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        # every format at once, a few times over: more formats than the cap wait to start
        answers = await asyncio.wait_for(asyncio.gather(
            *(_get(s, url, f) for _ in range(3) for f in FORMATS)), 30)
        refused = [a for a in answers if a[0] == 429]
        assert refused, [a[0] for a in answers]
        assert {a[0] for a in answers} == {200, 429}
        for _, headers, body in refused:
            assert int(headers["Retry-After"]) >= 1
            assert b'"scrapes_crowded"' in body
        # the first MAX_PENDING formats are rendered; a refusal leaves nothing behind
        assert sum(a[0] == 200 for a in answers) >= MAX_PENDING
        status, _, page = await _get(s, url, "")
    assert status == 200
    m = re.search(rb'^killgate_admin_refused_total\{reason="scrapes"\} ([0-9.]+)$', page, re.M)
    assert m is not None and float(m.group(1)) == len(refused), (m, len(refused))
