"""What the admin endpoints that need no token cost the serving process (admin/api.py):
anyone who reaches the admin port can call them as fast as they like, on the event loop
that also serves the data plane and applies kills.

`GET /openapi.json` built its document (about 30 KB of JSON) afresh for every request:
about 15 times the CPU of a `GET /healthz`, and more than ten proxied requests. It depends
only on the config's route and version names, so it is built once per config now."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import ClientSession, TCPConnector

from tests.backends import echo_app
from tests.conftest import serving_process, two_versions

N = 600


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_unauthenticated_documents_cost_about_a_health_check(
        tmp_path: Path, backends, gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    gw, _ = await serving_process(gateway_procs, tmp_path, two_versions(p, p))
    async with ClientSession(connector=TCPConnector(limit=4)) as s:
        async def cost(path: str) -> float:
            async def one() -> bytes:
                async with s.get(gw.admin + path) as r:
                    assert r.status == 200
                    return await r.read()

            await one()  # (warm: first-use costs are not what a flood pays)
            before = _cpu_s(gw.proc.pid)
            bodies = await asyncio.gather(*(one() for _ in range(N)))
            assert len(set(bodies)) == 1
            return _cpu_s(gw.proc.pid) - before

        health = await cost("/healthz")
        document = await cost("/openapi.json")
    print(f"\nCPU for {N} requests: /healthz {health:.2f}s, /openapi.json {document:.2f}s")
    assert document < 4 * health + 0.1, (health, document)
    assert gw.stop() == 0
