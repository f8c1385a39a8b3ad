"""A body's declared charset read two ways: the gateway must not read `model` as UTF-8 where
the backend decodes the body in another charset (RELIABILITY row 57).

aiohttp's `Request.json()` decodes the body with `Request.charset`, which takes the last of
two `charset` parameters (any case) and an RFC 2231 `charset*=`: a body that is plain ASCII
JSON naming one model reads, as UTF-7, as JSON naming a killed one."""

from __future__ import annotations

from pathlib import Path

from aiohttp import ClientSession, web

from tests.conftest import running_gateway, write_config
from tests.test_killswitch import auth
from tests.test_proxy_confusion import _raw

ROUTES = """\
- name: small
  match: {{path_prefix: /v1, model: chat-small}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}]
- name: other
  match: {{path_prefix: /v1}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}]
"""

# ASCII JSON whose `model` is "chat-big"; decoded as UTF-7 (`+ACIALA-` is `",`, `+ACI-` is
# `"`), it is {"model": "chat-big", "pad": "", "model": "chat-small"}: the last one wins
BODY = b'{"model": "chat-big", "pad": "+ACIALA- +ACI-model+ACI-: +ACI-chat-small"}'


async def test_a_charset_declared_two_ways_never_reaches_a_killed_model(
        tmp_path: Path, backends, session: ClientSession) -> None:
    served: list[object] = []

    async def model_server(req: web.Request) -> web.Response:
        model = (await req.json()).get("model")  # as an aiohttp model server reads it
        served.append(model)
        return web.json_response({"model": model})

    app = web.Application()
    app.router.add_post("/{tail:.*}", model_server)
    p = await backends(app)
    cfg = write_config(tmp_path, ROUTES.format(p=p))
    async with running_gateway(cfg) as g:
        async with session.post(f"{g.admin}/v1/kill", headers=auth(),
                                json={"scope": "route", "route": "small", "reason": "t"}) as r:
            assert r.status == 200, await r.text()
        port = g.gw.data_addr[1]
        for ctype in (b"application/json; charset=utf-8; CHARSET=utf-7",
                      b"application/json; charset*=utf-8''utf-7",
                      b"application/json; charset=utf-8; charset*=utf-8''utf-7",
                      b"application/json; Charset*0=utf-7"):
            got, data = await _raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: " + ctype + b"\r\nContent-Length: %d\r\n"
                                   b"Connection: close\r\n\r\n" % len(BODY) + BODY)
            assert got == 400, (ctype, data[:400])
            assert b'"bad_request"' in data and b"charset" in data
        assert served == []
        # controls: UTF-8 declared once (any case, quoted) still routes by the body's model
        for ctype in (b"application/json", b"application/json; charset=UTF-8",
                      b'application/json;charset="utf-8"'):
            got, data = await _raw(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Type: " + ctype + b"\r\nContent-Length: %d\r\n"
                                   b"Connection: close\r\n\r\n" % len(BODY) + BODY)
            assert got == 200, (ctype, data[:400])
        assert served == ["chat-big"] * 3
        assert g.gw.metrics.get("killgate_bad_requests_total", ("model_body",)) == 4
