"""A real `killgate serve` under a flood of what any client controls, on both ports: every
request a new path, sticky key, request id, traceparent, Host, pin, `model` and method,
and admin calls without a token. Nothing kept may grow with it: the process's memory
levels off, the Prometheus series stay those of the config (no label value comes from a
request), and the log does not grow a line per request."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector

from tests.backends import echo_app
from tests.conftest import rss_kib, serving_process

pytestmark = pytest.mark.timeout(180)


def _routes(p1: int, p2: int) -> str:
    return f"""\
- name: iris
  match: {{path_prefix: /v2/models/iris}}
  protocol: v2
  stable: v1
  sticky: {{header: x-user-id}}
  allow_pin: true
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 50}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 50}}
- name: chat
  match: {{path_prefix: /v1, model: chat-small}}
  protocol: openai
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100, model: m1}}
- name: open
  match: {{path_prefix: /open}}
  protocol: openai
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p2}", weight: 100}}
"""


def _series(page: str) -> set[str]:
    return {ln.split(" ", 1)[0] for ln in page.splitlines() if ln and not ln.startswith("#")}


async def test_nothing_grows_with_what_clients_send(tmp_path: Path, backends,
                                                    gateway_procs) -> None:
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2"))
    gw, data = await serving_process(gateway_procs, tmp_path, _routes(p1, p2))
    base = f"http://127.0.0.1:{data}"
    seen: dict[tuple[int, int], int] = {}
    async with ClientSession(connector=TCPConnector(limit=8)) as s:
        async def one(i: int) -> None:
            u = uuid.uuid4().hex
            kind = i % 8
            headers = {"x-request-id": u * 3, "traceparent": f"00-{u}{u[:16]}-{u[:16]}-01",
                       "x-user-id": u}
            method, url, body = "POST", f"{base}/v2/models/iris/versions/{u}/infer?{u}", None
            if kind == 1:
                url = f"{base}/{u}/{u}"
            elif kind == 2:
                headers["x-killgate-pin"] = u
            elif kind == 3:
                headers["Host"] = f"{u}.example"
            elif kind == 4:
                url, body = f"{base}/v1/chat/completions", json.dumps({"model": u})
            elif kind == 5:
                url, body = f"{base}/open/{u}", json.dumps({"model": u * 8})
            elif kind == 6:
                method = u[:8].upper()
            elif kind == 7:
                method, url = "GET", f"{gw.admin}/v1/{'status' if i % 16 == 7 else u}"
                headers = {"Authorization": f"Bearer {u}"} if i % 32 == 7 else {}
            async with s.request(method, url, data=body, headers=headers) as r:
                await r.read()
                seen[kind, r.status] = seen.get((kind, r.status), 0) + 1

        async def flood(n: int) -> None:
            await asyncio.gather(*(one(i) for i in range(n)))

        await flood(1500)  # warm-up: caches fill, the allocator's working set forms
        async with s.get(gw.admin + "/metrics") as r:
            series = _series(await r.text())
        before, lines = rss_kib(gw.proc.pid), len(gw.output().splitlines())
        await flood(6000)
        grown = (rss_kib(gw.proc.pid) - before) / 1024
        async with s.get(gw.admin + "/metrics") as r:
            new = _series(await r.text()) - series
    logged = len(gw.output().splitlines()) - lines
    print(f"\n6000 hostile requests: RSS +{grown:.1f} MiB, {len(new)} new series, "
          f"{logged} log lines", sorted(seen.items()))
    assert grown < 8, f"RSS grew {grown:.1f} MiB over 6000 hostile requests"
    # the same series, only their values moved (a status code met for the first time may
    # add a series of its own: a code is one of a handful)
    assert all('code="' in name for name in new), sorted(new)[:5]
    assert logged < 100, f"{logged} log lines for 6000 hostile requests"
    assert gw.stop() == 0
