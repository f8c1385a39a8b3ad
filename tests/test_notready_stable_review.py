"""The stable blamed for a not-ready answer only for a model it has answered (servedmodels.py),
reviewed (hostile review, 2026-12-04). A client chooses what the memory reads: each case
below got the healthy stable ejected by requests any client may send, before its fix.

An OpenAI-compatible stable v1 holds `iris`; the canary v2 (no traffic of its own) holds
`iris` and `iris-next`. Three not-ready answers of v1 in a row eject it
(`consecutive_gateway_failures: 3`), and every client of the route then goes to v2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.backends import NOT_HELD
from tests.conftest import running_gateway, write_config
from tests.test_notready_blame import _route

pytestmark = pytest.mark.timeout(30)

_NOT_HELD = NOT_HELD["openai"][2]


def openai_server(models: set[str]) -> web.Application:
    """An OpenAI-compatible server: chat completions (the body's `model`, read by Python's
    json: the last of duplicate keys), the model list (which reads no body) and a model's
    own entry (`GET /v1/models/<m>`: 404 `model_not_found` for one it does not hold, as
    OpenAI's API and LiteLLM answer)."""

    async def chat(req: web.Request) -> web.Response:
        model = json.loads(await req.read()).get("model", "")
        if model not in models:
            return web.json_response(_NOT_HELD(model), status=404)
        return web.json_response({"object": "chat.completion", "model": model, "choices": []})

    async def listing(req: web.Request) -> web.Response:
        await req.read()
        return web.json_response({"object": "list", "data": [{"id": m} for m in models]})

    async def one(req: web.Request) -> web.Response:
        model = req.match_info["model"]
        if model not in models:
            return web.json_response(_NOT_HELD(model), status=404)
        return web.json_response({"id": model, "object": "model"})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", listing)
    app.router.add_get("/v1/models/{model}", one)
    return app


async def _send(s: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, str]:
    async with s.request(method, url, **kw) as r:
        await r.read()
        return r.status, r.headers.get("x-killgate-version", "")


async def _ejections_after(tmp_path: Path, backends, steps: list[tuple[Any, ...]],
                           ) -> tuple[int, tuple[int, str]]:
    """Send `steps` (method, path, raw JSON body or None), then an ordinary request for
    `iris`: (v1's not-ready ejections, that request's (status, version))."""
    p1 = await backends(openai_server({"iris"}))
    p2 = await backends(openai_server({"iris", "iris-next"}))
    cfg = write_config(tmp_path, _route(p1, p2))
    headers = {"content-type": "application/json"}
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        for method, path, body, *expect in steps:
            status, _ = await _send(s, method, g.url + path, data=body, headers=headers)
            # (served by v1 or by v2; or, where named, the answer v1 gave)
            assert status == (expect[0] if expect else 200), (method, path, body)
        got = await _send(s, "POST", g.url + "/v1/chat/completions",
                          json={"model": "iris", "messages": []})
        ejections = g.gw.metrics.get("killgate_upstream_ejections_total",
                                     ("chat", "v1", "not_ready"))
    return ejections, got


async def test_duplicate_model_keys_do_not_eject_the_stable(tmp_path: Path, backends) -> None:
    """A body naming `model` twice is one the gateway cannot read (jsonpeek: Ambiguous) and
    the model server reads as its last. Its model was None in the memory, the same None
    for every such body: one v1 answered (the last one `iris`) made every later one v1's
    to answer (the last one `iris-next`, which only v2 holds): v1 ejected."""
    served = b'{"model": "iris-next", "model": "iris", "messages": []}'
    other = b'{"model": "iris", "model": "iris-next", "messages": []}'
    steps = [("POST", "/v1/chat/completions", served)]
    steps += [("POST", "/v1/chat/completions", other)] * 3
    assert await _ejections_after(tmp_path, backends, steps) == (0, (200, "v1"))


async def test_the_model_list_does_not_name_a_model_for_a_models_own_entry(
        tmp_path: Path, backends) -> None:
    """`GET /v1/models` (any client listing the models) has no body: model None, noted for
    v1; `GET /v1/models/iris-next` (a client looking the new model up) is v1's 404
    `model_not_found`, moved to v2, and had model None too: v1 ejected. (Since a not-ready
    answer is one to a POST on an inference path (notready.py), that 404 is v1's answer,
    passed on, not moved: nor counted.)"""
    steps: list[tuple[Any, ...]] = [("GET", "/v1/models", None)]
    steps += [("GET", "/v1/models/iris-next", None, 404)] * 3
    assert await _ejections_after(tmp_path, backends, steps) == (0, (200, "v1"))


async def test_an_answer_that_read_no_model_does_not_name_one(tmp_path: Path, backends) -> None:
    """`GET /v1/models` with a body naming `iris-next`: v1 answers the list (it reads no
    body), and `iris-next` was noted as a model v1 answered; then chat requests for it
    (v1's 404, moved to v2) counted as v1's failures: v1 ejected."""
    steps: list[tuple[Any, ...]] = [
        ("GET", "/v1/models", b'{"model": "iris-next"}')]
    steps += [("POST", "/v1/chat/completions",
               b'{"model": "iris-next", "messages": []}')] * 3
    assert await _ejections_after(tmp_path, backends, steps) == (0, (200, "v1"))
