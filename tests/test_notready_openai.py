"""Protocol-aware outcomes (CONTRACT §5.6): on an `openai` route only an OpenAI-compatible
server's own "model not found" answer to an inference (a POST to an inference path) is a
not-ready answer (gateway/dataplane/notready.py).

Before, any 404 on any path whose message had "model" and later "not found" / "does not
exist" on one line was one: `GET /v1/files/<id>` answered `No such File object: <id>` with a
crafted id ("model not found") was sent to every version (one extra backend request each)
and counted as `not_ready`. End to end with servers shaped like OpenAI, vLLM and Ollama, and
the judgement without sockets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.dataplane.notready import is_not_ready
from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(30)

CHAT = "/v1/chat/completions"
Shape = Callable[[str], tuple[str, dict[str, Any]]]  # model -> (path, 404 body)


def _openai(model: str) -> tuple[str, dict[str, Any]]:
    return CHAT, {"error": {
        "message": f"The model `{model}` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found"}}


def _vllm_old(model: str) -> tuple[str, dict[str, Any]]:
    return CHAT, {"object": "error", "message": f"The model `{model}` does not exist.",
                  "type": "NotFoundError", "param": None, "code": 404}


def _vllm(model: str) -> tuple[str, dict[str, Any]]:
    return "/v1/embeddings", {"error": {"message": f"The model `{model}` does not exist.",
                                        "type": "NotFoundError", "param": "model", "code": 404}}


def _ollama_openai(model: str) -> tuple[str, dict[str, Any]]:
    return CHAT, {"error": {"message": f'model "{model}" not found, try pulling it first',
                            "type": "api_error", "param": None, "code": None}}


def _ollama_native(model: str) -> tuple[str, dict[str, Any]]:
    return "/api/chat", {"error": f"model '{model}' not found"}


def _litellm(model: str) -> tuple[str, dict[str, Any]]:
    # a LiteLLM proxy (or any OpenAI client whose base URL has no /v1: the OpenAI SDK's
    # `base_url="http://litellm:4000"`) is asked at /chat/completions; an upstream's 404
    # passed on keeps its code
    return "/chat/completions", _openai(model)[1]


SHAPES: dict[str, Shape] = {"openai": _openai, "vllm-old": _vllm_old, "vllm": _vllm,
                            "ollama-openai": _ollama_openai, "ollama-native": _ollama_native,
                            "litellm": _litellm}


def model_server(shape: Shape, models: set[str], hits: list[str]) -> web.Application:
    """Answers an inference for a model it holds, a 404 in `shape`'s words for one it does
    not; `GET /v1/files/<id>` is a 404 echoing the id, as OpenAI's API does."""
    async def infer(req: web.Request) -> web.Response:
        model = (await req.json())["model"]
        hits.append(f"{req.path} {model}")
        if model not in models:
            return web.json_response(shape(model)[1], status=404)
        return web.json_response({"object": "chat.completion", "model": model, "choices": []})

    async def file(req: web.Request) -> web.Response:
        fid = req.match_info["fid"]
        hits.append(f"file {fid}")
        return web.json_response({"error": {
            "message": f"No such File object: {fid}", "type": "invalid_request_error",
            "param": "id", "code": None}}, status=404)

    app = web.Application()
    for path in (CHAT, "/v1/embeddings", "/api/chat", "/chat/completions"):
        app.router.add_post(path, infer)
    app.router.add_get("/v1/files/{fid}", file)
    return app


def _routes(p1: int, p2: int) -> str:
    return f"""\
- name: llm
  match: {{path_prefix: /}}
  protocol: openai
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 100}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 0}}
"""


def _not_ready(g: Any, version: str) -> float:
    return g.gw.metrics.get("killgate_upstream_errors_total", ("llm", version, "not_ready"))


async def test_a_404_that_echoes_a_crafted_id_off_an_inference_path_is_passed_on(
        tmp_path: Path, backends) -> None:
    v1: list[str] = []
    v2: list[str] = []
    p1 = await backends(model_server(_openai, {"m"}, v1))
    p2 = await backends(model_server(_openai, {"m"}, v2))
    cfg = write_config(tmp_path, _routes(p1, p2))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        for fid in ("model-not-found", "model not found", "model x does not exist"):
            async with s.get(f"{g.url}/v1/files/{fid}") as r:
                body = await r.json()
                assert r.status == 404 and r.headers["x-killgate-version"] == "v1", body
                assert body["error"]["message"] == f"No such File object: {fid}"
        # an inference answered 404 in other words than the server's own "no such model"
        async with s.post(g.url + CHAT, json={"model": "m", "messages": []}) as r:
            assert r.status == 200
        errors = (_not_ready(g, "v1"), _not_ready(g, "v2"))
    assert v2 == [] and len(v1) == 4, (v1, v2)
    assert not any(errors), errors


@pytest.mark.parametrize("name", list(SHAPES))
async def test_the_servers_own_model_not_found_moves_an_inference_on(
        name: str, tmp_path: Path, backends) -> None:
    shape = SHAPES[name]
    path = shape("new")[0]
    v1: list[str] = []
    v2: list[str] = []
    p1 = await backends(model_server(shape, {"old"}, v1))
    p2 = await backends(model_server(shape, {"old", "new"}, v2))
    cfg = write_config(tmp_path, _routes(p1, p2))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        async with s.post(g.url + path, json={"model": "new", "messages": []}) as r:
            assert r.status == 200 and r.headers["x-killgate-version"] == "v2"
            assert (await r.json())["model"] == "new"
        # the stable's own model stays with it
        async with s.post(g.url + path, json={"model": "old", "messages": []}) as r:
            assert r.status == 200 and r.headers["x-killgate-version"] == "v1"
    assert v1 == [f"{path} new", f"{path} old"] and v2 == [f"{path} new"], (v1, v2)


# ----------------------------------------------------------------- the judgement

def _j(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_servers_shape_for_the_requested_model(name: str) -> None:
    path, body = SHAPES[name]("llama3:8b")
    assert is_not_ready("openai", 404, path, _j(body), b"POST", "llama3:8b")
    assert is_not_ready("openai", 404, path, _j(body), b"POST", None)  # (model unread)
    assert not is_not_ready("openai", 404, path, _j(body), b"GET", "llama3:8b")
    assert not is_not_ready("openai", 400, path, _j(body), b"POST", "llama3:8b")
    assert not is_not_ready("openai", 404, "/v1/files/x", _j(body), b"POST", None)
    if name not in ("openai", "litellm"):  # (OpenAI's own code says it, whatever its message)
        assert not is_not_ready("openai", 404, path, _j(body), b"POST", "other")


@pytest.mark.parametrize("path", [
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
    "/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech",
    "/v1/images/generations", "/v1/images/edits", "/v1/moderations", "/openai/v1/completions",
    "/api/generate", "/api/embed",
    # without /v1 (LiteLLM, the OpenAI SDK given a base URL without it), Azure-style
    # deployments (LiteLLM serves them too), vLLM's pooling endpoints
    "/chat/completions", "/completions", "/embeddings", "/responses",
    "/openai/deployments/m/chat/completions", "/openai/deployments/m/embeddings",
    "/rerank", "/v2/rerank", "/score", "/pooling", "/classify", "/v1/classify"])
def test_inference_paths(path: str) -> None:
    assert is_not_ready("openai", 404, path, _j(_vllm("m")[1]), b"POST", "m")


@pytest.mark.parametrize("path", [
    "/v1/files/model-not-found", "/v1/models/m", "/v1/chat/completions/abc", "/v1/batches",
    "/v1/responses/resp_1", "/v1/fine_tuning/jobs", "/v1/chat/completions/", "/v1/nope"])
def test_other_paths_never(path: str) -> None:
    for body in (_openai("m")[1], _vllm("m")[1], _ollama_openai("m")[1]):
        assert not is_not_ready("openai", 404, path, _j(body), b"POST", "m")


@pytest.mark.parametrize("msg", [
    "No such File object: model not found",
    "tool 'model x' not found",
    "The model `m` does not exist. The model `n` does not exist.",
    "The model `m` does not exist, but see model `n`",
    "[request abc] The model `m` does not exist.",
    'model "m" not found, try pulling it first; model "n" not found',
    "model m not found",
    "The model `m\nx` does not exist.",
])
def test_messages_that_only_mention_a_missing_model_are_not_its_answer(msg: str) -> None:
    for body in ({"error": {"message": msg}}, {"object": "error", "message": msg}):
        assert not is_not_ready("openai", 404, CHAT, _j(body), b"POST", None), msg


@pytest.mark.parametrize("msg", [
    "The model `" + "m" * 60_000 + "` does not exist.",
    "The model `" + "model not found " * 3_500,
    "model " * 10_000 + "not found",
])
def test_a_long_message_is_judged_in_linear_time(msg: str) -> None:
    body = _j({"error": {"message": msg}})
    assert len(body) < 64 * 1024
    start = time.process_time()
    says = is_not_ready("openai", 404, CHAT, body, b"POST", None)
    assert says is msg.endswith("does not exist.")
    assert time.process_time() - start < 0.2
