"""The body's `model` read one way by the gateway and another by a Python
backend (RELIABILITY row 57). Starlette/FastAPI (so vLLM and most OpenAI-compatible servers)
read a JSON body with `json.loads(await request.body())`: bytes, whose encoding Python's json
detects (UTF-8 with or without a BOM, UTF-16, UTF-32), and any amount of leading whitespace.
Each case below is routed by the gateway as if the body had no `model` (to the catch-all
route) while the backend reads `model: gpt-a`; refused with 400 now (from a hostile review)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import running_gateway, write_config
from tests.rawhttp import exchange

pytestmark = pytest.mark.timeout(30)


def starlette_like(name: str) -> web.Application:
    """A backend that reads its JSON body as Starlette's `Request.json()` does."""

    async def handle(request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        return web.json_response({"backend": name, "model": doc.get("model")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


_OBJ = {"model": "gpt-a", "messages": [{"role": "user", "content": "hi"}]}



def model_and_catch_all(port_a: int, port_other: int) -> str:
    """Routes `chat-a` (model gpt-a, on port_a) and `other` (every other /v1 request)."""
    return textwrap.dedent(f"""\
        - name: chat-a
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port_a}", weight: 100}}
        - name: other
          match: {{path_prefix: /v1}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{port_other}", weight: 100}}
        """)

@pytest.mark.parametrize("body", [
    pytest.param(b" " * 2048 + json.dumps(_OBJ).encode(), id="whitespace-past-peek-window"),
    pytest.param(b"\xef\xbb\xbf" + json.dumps(_OBJ).encode(), id="utf8-bom"),
    pytest.param(json.dumps(_OBJ).encode("utf-16-le"), id="utf16le"),
    pytest.param(json.dumps(_OBJ).encode("utf-32-le"), id="utf32le"),
    # whitespace past the first 64 bytes (a first fix decoded no more than those)
    pytest.param((" " * 40 + json.dumps(_OBJ)).encode("utf-16-le"), id="utf16le-40-spaces"),
    pytest.param((" " * 20 + json.dumps(_OBJ)).encode("utf-32-be"), id="utf32be-20-spaces"),
    pytest.param(b"\xef\xbb\xbf" + b" " * 70 + json.dumps(_OBJ).encode(), id="bom-70-spaces"),
    pytest.param(b"\xef\xbb\xbf" + b"\n" * 70 + json.dumps(_OBJ).encode(), id="bom-70-newlines"),
])
async def test_a_body_a_backend_reads_as_model_gpt_a_is_not_routed_elsewhere(
        tmp_path: Path, backends, body: bytes) -> None:
    pa, po = await backends(starlette_like("a")), await backends(starlette_like("other"))
    routes = model_and_catch_all(pa, po)
    cfg = write_config(tmp_path, routes, extra="server: {model_peek_bytes: 1024}\n")
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, headers, answer = await exchange(port, head + body)
    if status == 400:
        return  # refused: fine
    got = json.loads(answer)
    assert got["model"] == "gpt-a"  # what the backend read
    assert headers.get("x-killgate-route") == "chat-a", (
        f"the gateway routed a body whose model a backend reads as 'gpt-a' to route "
        f"{headers.get('x-killgate-route')!r} (backend {got['backend']!r})")
