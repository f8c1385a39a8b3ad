"""Protocol-aware outcomes (CONTRACT §5.6) for the Open Inference Protocol's per-model
metadata and readiness paths: `GET /v2/models/<m>[/versions/<v>]` and the same with `/ready`.

Found in review: only inference paths (`.../infer`) were recognised as "model not ready".
Through a version that had unloaded `iris`, tritonclient's and KServe's `is_model_ready` and
`get_model_metadata` got that version's 404 (or 400) while another version held the model;
and since any answer below 500 resets a version's consecutive-failure count, a client that
checks readiness before each inference (as those client libraries do) kept the unloaded
canary in service for good: its inferences moved and counted, its readiness answers reset
the count. Now such an answer moves at once (no body: it always can) and counts, with the
blame rules of servedmodels.py. Real gateway, real aiohttp model servers answering as
MLServer, Triton and KServe do (their readiness answer is a status: Triton's 400 with no
body for a model it does not hold; MLServer's and KServe's 404 with their error body)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.dataplane.notready import is_not_ready
from gateway.dataplane.servedmodels import model_key
from tests.conftest import running_gateway, write_config
from tests.notreadyrig import v2_routes

pytestmark = pytest.mark.timeout(30)

_BODY = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}

#: flavour -> (status, error message of model m, or None for a bare status) for a model the
#: server does not hold: (metadata, readiness, inference)
_NOT_HELD: dict[str, tuple[tuple[int, Any], tuple[int, Any], tuple[int, Any]]] = {
    "mlserver": ((404, "Model {m} not found"), (404, "Model {m} not found"),
                 (404, "Model {m} not found")),
    "triton": ((400, "Request for unknown model: '{m}' is not found"), (400, None),
               (400, "Request for unknown model: '{m}' is not found")),
    "kserve": ((404, "Model with name {m} does not exist."),
               (404, "Model with name {m} does not exist."),
               (404, "Model with name {m} does not exist.")),
}


def _server(name: str, models: set[str], flavour: str) -> web.Application:
    """A v2 model server holding `models` (a set the test may change): metadata, readiness
    and inference of a model, each answered for one it does not hold as `flavour` does.
    (aiohttp answers HEAD as GET, without the body.)"""
    meta, ready, infer = _NOT_HELD[flavour]

    def holds(req: web.Request) -> bool:  # (each model's version 1 only)
        return req.match_info["model"] in models and req.match_info.get("v", "1") == "1"

    def refuse(how: tuple[int, Any], model: str) -> web.Response:
        status, msg = how
        if msg is None:
            return web.Response(status=status)
        return web.json_response({"error": msg.format(m=model)}, status=status)

    async def metadata(req: web.Request) -> web.Response:
        m = req.match_info["model"]
        if not holds(req):
            return refuse(meta, m)
        return web.json_response({"name": m, "versions": ["1"], "platform": name,
                                  "inputs": [], "outputs": []})

    async def readiness(req: web.Request) -> web.Response:
        m = req.match_info["model"]
        return web.Response(status=200) if holds(req) else refuse(ready, m)

    async def inference(req: web.Request) -> web.Response:
        await req.read()
        m = req.match_info["model"]
        if not holds(req):
            return refuse(infer, m)
        return web.json_response({"model_name": m, "model_version": name, "outputs": []})

    app = web.Application()
    for base in ("/v2/models/{model}", "/v2/models/{model}/versions/{v}"):
        app.router.add_get(base, metadata)
        app.router.add_get(base + "/ready", readiness)
        app.router.add_post(base + "/infer", inference)
    return app



async def _ask(s: aiohttp.ClientSession, method: str, url: str,
               **kw: object) -> tuple[int, str]:
    async with s.request(method, url, **kw) as r:  # type: ignore[arg-type]
        await r.read()
        return r.status, r.headers.get("x-killgate-version", "")


def _count(g: Any, name: str, version: str) -> float:
    return g.gw.metrics.get(name, ("models", version, "not_ready"))


@pytest.mark.parametrize("flavour", ["mlserver", "triton", "kserve"])
@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/models/iris"), ("GET", "/v2/models/iris/ready"),
    ("GET", "/v2/models/iris/versions/1/ready"), ("HEAD", "/v2/models/iris/ready")])
async def test_readiness_and_metadata_move_off_a_version_that_unloaded_the_model(
        tmp_path: Path, backends, flavour: str, method: str, path: str) -> None:
    """Fault (a): the canary (all the split's weight) unloaded `iris`; the stable holds it.
    Before, the client got the canary's 404/400: its readiness check said the model was
    not ready while the gateway could serve it. (A HEAD's answer has no body: its
    readiness status alone says it, as the protocol's bare 4xx does.)"""
    held = {"iris"}
    p1 = await backends(_server("v1", {"iris"}, flavour))
    p2 = await backends(_server("v2", held, flavour))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 0))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _ask(s, method, g.url + path) == (200, "v2")
        held.discard("iris")
        got = await _ask(s, method, g.url + path)
        errors = _count(g, "killgate_upstream_errors_total", "v2")
        moved = g.gw.metrics.get("killgate_failovers_total", ("models",))
    assert got == (200, "v1"), got
    assert (errors, moved) == (1, 1), (errors, moved)


@pytest.mark.parametrize("flavour", ["mlserver", "triton", "kserve"])
async def test_a_client_checking_readiness_before_each_inference_ejects_the_unloaded_canary(
        tmp_path: Path, backends, flavour: str) -> None:
    """Fault (b): 10 rounds of readiness check then inference, as tritonclient/KServe users
    write them. Before, every readiness answer (below 500) reset the canary's count between
    two moved inferences: 10 inferences answered 404 by the canary, never ejected."""
    held = {"iris"}
    p1 = await backends(_server("v1", {"iris"}, flavour))
    p2 = await backends(_server("v2", held, flavour))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 0))
    base = "/v2/models/iris"
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _ask(s, "POST", g.url + base + "/infer", json=_BODY) == (200, "v2")
        held.discard("iris")
        got = []
        for _ in range(10):
            got.append((await _ask(s, "GET", g.url + base + "/ready"))[0])
            got.append((await _ask(s, "POST", g.url + base + "/infer", json=_BODY))[0])
        ejections = _count(g, "killgate_upstream_ejections_total", "v2")
        errors = _count(g, "killgate_upstream_errors_total", "v2")
    assert got == [200] * 20, got  # (every one served by the stable)
    # ejected after 3 in a row (readiness, inference, readiness); none sent its way since
    assert (ejections, errors) == (1, 3), (ejections, errors)


@pytest.mark.parametrize("path", [
    "/v2/models/nosuchmodel/ready", "/v2/models/nosuchmodel",
    "/v2/models/iris/versions/999/ready", "/v2/models/iris/versions/x%2Fy/ready"])
async def test_readiness_probes_for_invented_models_eject_no_version(
        tmp_path: Path, backends, path: str) -> None:
    """An attacker's probes for a model (or model version) no version holds: every version
    answers not-ready, so none of them is blamed (the client's to name), whatever the count;
    the client gets the last version's answer."""
    p1 = await backends(_server("v1", {"iris"}, "triton"))
    p2 = await backends(_server("v2", {"iris"}, "triton"))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 0))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        got = {(await _ask(s, "GET", g.url + path))[0] for _ in range(8)}
        after = await _ask(s, "GET", g.url + "/v2/models/iris/ready")
        ejected = [_count(g, "killgate_upstream_ejections_total", v) for v in ("v1", "v2")]
    assert got <= {400, 404} and len(got) == 1, got
    assert ejected == [0, 0] and after == (200, "v2"), (ejected, after)


async def test_the_stable_is_blamed_on_readiness_only_for_a_model_it_has_answered(
        tmp_path: Path, backends) -> None:
    """servedmodels.py's rule on these paths: probes of a model only the canary holds move
    to it and never count against the stable; probes of one the stable answered (an
    inference or a readiness check alike) and then unloaded do, and eject it."""
    held = {"iris"}
    p1 = await backends(_server("v1", held, "mlserver"))
    p2 = await backends(_server("v2", {"iris", "iris-next"}, "mlserver"))
    cfg = write_config(tmp_path, v2_routes(p1, p2, 100))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        assert await _ask(s, "POST", g.url + "/v2/models/iris/infer", json=_BODY) == (200, "v1")
        new = [await _ask(s, "GET", g.url + "/v2/models/iris-next/ready") for _ in range(5)]
        kept = _count(g, "killgate_upstream_ejections_total", "v1")
        held.discard("iris")  # the stable unloads what it served
        old = [await _ask(s, "GET", g.url + "/v2/models/iris/ready") for _ in range(3)]
        ejected = _count(g, "killgate_upstream_ejections_total", "v1")
    assert new == [(200, "v2")] * 5 and kept == 0, (new, kept)
    assert old == [(200, "v2")] * 3 and ejected == 1, (old, ejected)


def test_what_is_a_readiness_or_metadata_not_ready_answer() -> None:
    """The pure judge: bare 4xx only on a readiness path; a metadata path's must name the
    model; a POST to a metadata path, a 200, another model's message: never."""
    err = b'{"error": "Model iris not found"}'
    assert is_not_ready("v2", 404, "/v2/models/iris", err, b"GET")
    assert is_not_ready("v2", 404, "/v2/models/iris/versions/2/ready", err, b"GET")
    assert is_not_ready("v2", 400, "/v2/models/iris/ready", b"", b"HEAD")
    assert is_not_ready("v2", 400, "/v2/models/iris/ready", b"", b"GET")
    assert not is_not_ready("v2", 400, "/v2/models/iris", b"", b"GET")  # (names no model)
    assert not is_not_ready("v2", 503, "/v2/models/iris/ready", b"", b"GET")
    assert not is_not_ready("v2", 404, "/v2/models/iris", err, b"POST")
    assert not is_not_ready("v2", 404, "/v2/models/other/ready", err, b"GET")
    assert not is_not_ready("v2", 404, "/v2/models/iris/stats", err, b"GET")
    assert not is_not_ready("http", 404, "/v2/models/iris/ready", b"", b"GET")
    assert not is_not_ready("openai", 404, "/v2/models/iris/ready", b"", b"GET")
    # one key for a model's inference, metadata and readiness (and each version apart)
    keys = {model_key("v2", m, p, None, None, True) for m, p in [
        (b"POST", "/v2/models/iris/infer"), (b"GET", "/v2/models/iris"),
        (b"GET", "/v2/models/iris/ready"), (b"HEAD", "/v2/models/iris/ready")]}
    assert keys == {("/v2/models/iris", "iris")}, keys
    assert model_key("v2", b"GET", "/v2/models/iris/versions/2/ready", None, None, True) \
        == ("/v2/models/iris/versions/2", "iris/versions/2")
    assert model_key("v2", b"DELETE", "/v2/models/iris", None, None, True) is None
