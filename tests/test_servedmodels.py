"""What the data plane keeps of the models a stable has answered (dataplane/servedmodels.py):
bounded in bytes, not only in entries.

The newest 4096 (route, version, path, model) a stable answered 2xx are kept, and the
model is the client's text: on an `openai` route whose versions do not rewrite it, and a
backend that answers whatever `model` it is sent (llama.cpp's server and TGI do), each
entry held a client's `model` of up to `server.model_peek_bytes` (1 MiB): 4096 of them,
4 GiB a worker, from anyone who can send requests."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiohttp import ClientSession, TCPConnector

from tests.backends import echo_app
from tests.conftest import rss_kib, serving_process

pytestmark = pytest.mark.timeout(120)

MODEL = 60 * 1024  # characters of each client's `model` (the body is read whole: < 64 KiB)


def _route(p: int) -> str:
    return f"""\
- name: chat
  match: {{path_prefix: /v1}}
  protocol: openai
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}
"""


async def test_models_clients_name_cost_bounded_memory(tmp_path: Path, backends,
                                                       gateway_procs) -> None:
    p = await backends(echo_app("v1"))
    gw, data = await serving_process(gateway_procs, tmp_path, _route(p))
    async with ClientSession(connector=TCPConnector(limit=4)) as s:
        async def send(n: int) -> None:
            async def one() -> None:
                body = json.dumps({"model": uuid.uuid4().hex * (MODEL // 32), "messages": []})
                async with s.post(f"http://127.0.0.1:{data}/v1/chat/completions", data=body,
                                  headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 200
                    await r.read()

            await asyncio.gather(*(one() for _ in range(n)))

        await send(100)  # (the allocator's working set for such requests, and warm-up)
        before = rss_kib(gw.proc.pid)
        await send(1000)
        grown = (rss_kib(gw.proc.pid) - before) / 1024
    # 1000 models of 60 KiB kept would be 60 MiB
    assert grown < 20, f"RSS grew {grown:.0f} MiB over 1000 requests"
    assert gw.stop() == 0
