"""A body's `model` key spelled in another case (`Model`, `MODEL`) reads as `model` to the
backends whose JSON readers match names in any case: Go's encoding/json (Ollama, LocalAI:
"preferring an exact match but also accepting a case-insensitive match", the last of two
winning) and ASP.NET Core's web defaults (PropertyNameCaseInsensitive). Found by hostile
review (revplane): the gateway saw no `model` in `{"Model": "gpt-a"}`, so with route `chat-a`
(match.model gpt-a) killed, the catch-all served the killed model; and `{"model": "gpt-b",
"MODEL": "gpt-a"}` was routed as gpt-b. Refused (400) now, as a duplicate `model` is."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from tests.conftest import bearer, running_gateway, write_config
from tests.rawhttp import exchange

pytestmark = pytest.mark.timeout(30)

H = bearer("killgate:admin", "ops", 10800)


def go_like(name: str, seen: list[str]) -> web.Application:
    """A backend that reads `model` as gin's `ShouldBindJSON` (Ollama's handlers) does:
    whatever the Content-Type, Go's json.Decoder reads the body's first JSON value (the bytes
    after it are not read), and fills a `json:"model"` field from every top-level key equal
    to it in any case, in order (the last wins)."""

    async def handle(request: web.Request) -> web.Response:
        text = (await request.read()).decode()
        start = len(text) - len(text.lstrip(" \t\r\n"))
        seen.append(name)
        try:
            pairs, _ = json.JSONDecoder(object_pairs_hook=list).raw_decode(text, start)
        except ValueError:  # (gin's answer: a 400)
            return web.json_response({"backend": name, "model": None}, status=400)
        model = None
        for key, value in pairs:
            if key.lower() == "model":
                model = value
        return web.json_response({"backend": name, "model": model})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _routes(pa: int, po: int) -> str:
    return textwrap.dedent(f"""\
        - name: chat-a
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{pa}", weight: 100}}
        - name: other
          match: {{path_prefix: /v1}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{po}", weight: 100}}
        """)


@pytest.mark.parametrize("body", [
    b'{"Model": "gpt-a", "messages": []}',
    b'{"MODEL": "gpt-a"}',
    b'{"model": "gpt-b", "mOdEl": "gpt-a"}',   # routed as gpt-b, read as gpt-a (the last)
    b'{"mod\\u0045l": "gpt-a"}',                # an escaped upper-case letter
], ids=["Model", "MODEL", "model-then-mOdEl", "escaped-E"])
async def test_a_killed_model_is_not_served_through_a_key_in_another_case(
        tmp_path: Path, backends, session: ClientSession, body: bytes) -> None:
    seen: list[str] = []
    pa = await backends(go_like("a", seen))
    po = await backends(go_like("other", seen))
    cfg = write_config(tmp_path, _routes(pa, po))
    async with running_gateway(cfg) as g:
        async with session.post(g.admin + "/v1/kill", headers=H, json={
                "scope": "route", "route": "chat-a", "reason": "bad model"}) as r:
            assert r.status == 200, await r.text()
        port = int(g.url.rsplit(":", 1)[1])
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        status, headers, answer = await exchange(port, head + body)
        assert seen == [], (
            f"the killed model gpt-a was served by route {headers.get('x-killgate-route')!r}: "
            f"{status} {answer[:200]!r}")
        assert status == 400, (status, answer)
        message = json.loads(answer)["error"]["message"]
        assert "reads as 'model'" in message and "send it as 'model'" in message, message
        # the key as it should be: the kill answers
        good = b'{"model": "gpt-a"}'
        head = head.replace(b"Length: %d" % len(body), b"Length: %d" % len(good))
        status, headers, _ = await exchange(port, head + good)
        assert (status, seen) == (503, [])
