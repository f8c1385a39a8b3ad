"""Protocol-aware outcomes (CONTRACT §5.6): on a `v2` route only a model server's own
"model not found / not ready" message, naming the model the request's path routed, is a
not-ready answer (gateway/dataplane/notready.py).

Before, any error message with "model" and later "not found" / "not ready" on one line was
one: Triton echoes a client's input name in its 400 (`unexpected inference input '<name>'
for model 'iris'`), so an input named "model not ready" made the stable's answer to a bad
request look like an unloaded model. The request was sent to every version (one extra
backend request each) and the stable's `not_ready` error counted (outlier detection, canary
analysis, alerts on it), though the stable holds the model and answered the client's
mistake. End to end with a Triton-shaped model server, and the judgement without sockets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.dataplane.notready import is_not_ready
from tests.conftest import running_gateway, write_config
from tests.notreadyrig import v2_routes

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"


def triton_like(models: set[str], hits: list[str]) -> web.Application:
    """Answers as Triton's HTTP endpoint does: an unknown model is a 400 naming it; an input
    the model does not have is a 400 echoing the input's name (the client's text)."""
    async def infer(req: web.Request) -> web.Response:
        model = req.match_info["model"]
        hits.append(model)
        if model not in models:
            return web.json_response(
                {"error": f"Request for unknown model: '{model}' is not found"}, status=400)
        doc: dict[str, Any] = json.loads(await req.read())
        for i in doc.get("inputs", []):
            if i.get("name") != "INPUT0":
                return web.json_response(
                    {"error": f"unexpected inference input '{i.get('name')}' for model "
                              f"'{model}'"}, status=400)
        return web.json_response({"model_name": model, "outputs": []})

    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    return app



def _inputs(name: str) -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": [1], "datatype": "FP32", "data": [1.0]}]}


async def test_a_client_named_input_echoed_in_an_error_is_not_a_model_not_ready(
        tmp_path: Path, backends) -> None:
    v1: list[str] = []
    v2: list[str] = []
    p1 = await backends(triton_like({"iris"}, v1))
    p2 = await backends(triton_like({"iris"}, v2))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 100))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        async with s.post(g.url + INFER, json=_inputs("INPUT0")) as r:
            assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
        for name in ("model not ready", "Model iris not found", "unknown model"):
            async with s.post(g.url + INFER, json=_inputs(name)) as r:
                body = await r.json()
                assert r.status == 400 and r.headers["x-killgate-version"] == "v1", body
                assert body == {"error": f"unexpected inference input '{name}' for model "
                                         "'iris'"}
        errors = g.gw.metrics.get("killgate_upstream_errors_total", ("models", "v1", "not_ready"))
        # a model the stable does not hold: still moved on (and unblamed: v2 says so too)
        async with s.post(g.url + "/v2/models/lily/infer", json=_inputs("INPUT0")) as r:
            assert r.status == 400
    assert v2 == ["lily"], v2  # only the unknown model was sent to the second version
    assert len(v1) == 5 and not errors, (v1, errors)


BAD_REQUESTS = [  # a model server's answers to a client's mistake, echoing its text
    "unexpected inference input 'model not ready' for model 'iris'",       # Triton
    "[request id: model iris not found] unexpected inference input 'x' for model 'iris'",
    "Request for unknown model: 'iris' is not found; model x not found",   # not the whole text
    "Model iris not found but model lily is",
    "Model lily not found",                                  # another model than the path's
    "Request for unknown model: 'lily' is not found",
    "Model with name lily is not ready.",
    "input 'model' is not found",
    "unknown model input: 'x'",
    "Model x with version 1 not found for model iris",
]

NOT_READY = [  # as MLServer, Triton and KServe say it (the model: the path's)
    "Model iris not found", "Model iris with version 2 not found",
    "Model iris is not ready yet.", "Model iris with version 2 is not ready yet.",
    "Request for unknown model: 'iris' is not found",
    "Request for unknown model: 'iris' has no available versions",
    "Request for unknown model: 'iris' version 2 is not found",
    "Request for unknown model: 'iris' version 2 is not at ready state",
    "Model with name iris is not ready.", "Model with name iris does not exist.",
    "Model with name iris is not ready. The model is still loading.",
    "  model IRIS not found\n",  # (spaces around, letters' case: as before)
]


@pytest.mark.parametrize("msg", BAD_REQUESTS)
def test_other_errors_that_mention_a_model_are_the_clients(msg: str) -> None:
    for status in (400, 404, 503):
        assert not is_not_ready("v2", status, INFER, json.dumps({"error": msg}).encode())


@pytest.mark.parametrize("msg", NOT_READY)
def test_the_servers_own_not_ready_messages(msg: str) -> None:
    body = json.dumps({"error": msg}).encode()
    assert is_not_ready("v2", 404, INFER, body)
    assert is_not_ready("v2", 400, "/v2/models/iris/versions/2/infer", body)
    assert is_not_ready("v2", 503, "/v2/models/iris/generate_stream", body)
    assert not is_not_ready("v2", 404, "/v2/models/lily/infer", body)  # not the path's model


def test_a_model_name_with_escapes_in_the_path() -> None:
    """The backend reads the path's model percent-decoded: either spelling is it."""
    body = json.dumps({"error": "Model my model not found"}).encode()
    assert is_not_ready("v2", 404, "/v2/models/my%20model/infer", body)
    body = json.dumps({"error": "Model my%20model not found"}).encode()
    assert is_not_ready("v2", 404, "/v2/models/my%20model/infer", body)


@pytest.mark.parametrize("msg, says", [
    ("Model with name iris is not ready. " + "model not ready " * 3_500, True),
    ("Model iris with version " + "1" * 60_000 + " not found", True),
    ("Model iris with version " + "1 " * 30_000 + "not found", False),
    ("Request for unknown model: 'iris' version " + "v" * 60_000 + " is not founds", False),
    ("Model iris " * 5_000 + "not found", False),
])
def test_a_long_message_is_judged_in_linear_time(msg: str, says: bool) -> None:
    import time

    body = json.dumps({"error": msg}).encode()
    assert len(body) < 64 * 1024
    start = time.process_time()
    assert is_not_ready("v2", 404, INFER, body) is says
    assert time.process_time() - start < 0.2
