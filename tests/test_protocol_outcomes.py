"""Protocol-aware outcomes (CONTRACT §5.6, issue 13 item 3): a model unloaded on one
MLServer-like backend under steady load costs clients no errors when the route says
`protocol: v2`; with `protocol: http` (today's behaviour) the 404s reach them."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.backends import v2_model_server
from tests.conftest import running_gateway, wait_until, write_config


@pytest.mark.parametrize("protocol", ["v2", "http"])
async def test_a_model_unloaded_under_load_costs_no_client_errors(
        tmp_path: Path, backends, protocol: str) -> None:
    held1, held2 = {"iris"}, {"iris"}
    p1 = await backends(v2_model_server("v1", held1))
    p2 = await backends(v2_model_server("v2", held2))
    routes = f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  protocol: {protocol}
  stable: v1
  outlier: {{consecutive_gateway_failures: 5, base_ejection: 30s}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 50}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 50}}
"""
    cfg = write_config(tmp_path, routes)
    statuses: Counter[int] = Counter()
    served: Counter[tuple[str, str]] = Counter()
    stop = asyncio.Event()
    async with running_gateway(cfg) as g:
        url = g.url + "/v2/models/iris/infer"
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
        conn = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=conn) as s:
            async def client() -> None:
                while not stop.is_set():
                    async with s.post(url, json=body) as r:
                        await r.read()
                        statuses[r.status] += 1
                        served[(r.headers.get("x-killgate-version", ""),
                                r.headers.get("x-killgate-decision", ""))] += 1

            tasks = [asyncio.ensure_future(client()) for _ in range(8)]
            try:
                await wait_until(lambda: sum(statuses.values()) >= 200, 20, what="steady load")
                async with s.post(f"http://127.0.0.1:{p1}/v2/repository/models/iris/unload") as r:
                    assert r.status == 200
                at_unload = sum(statuses.values())
                await wait_until(lambda: sum(statuses.values()) >= at_unload + 400, 30,
                                 what="load after the unload")
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        m = g.gw.metrics
        errors = m.get("killgate_upstream_errors_total", ("iris", "v1", "not_ready"))
        ejections = m.get("killgate_upstream_ejections_total", ("iris", "v1", "not_ready"))
    if protocol == "http":
        print(f"\nprotocol http: {statuses[404]} of {sum(statuses.values())} requests got 404")
        assert statuses[404] > 0, statuses  # the test can tell: 404s reach clients
        return
    assert statuses == {200: sum(statuses.values())}, statuses
    assert served[("v2", "failover")] > 0, served  # moved at once, answered by v2
    # counted for outlier detection: v1 ejected (5 in a row), then nothing more is moved
    assert errors >= 5 and ejections == 1, (errors, ejections)
