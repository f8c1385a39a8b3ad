"""dataplane/notready.py: which answers say "model not loaded / not ready", per protocol."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path

import pytest
from aiohttp import web

from gateway.dataplane.notready import could_be_not_ready, is_not_ready
from tests.backends import echo_app
from tests.conftest import serving_process, wait_until
from tests.rawhttp import exchange, request

INFER = "/v2/models/iris/infer"


def _j(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("status, body", [
    (404, {"error": "Model iris not found"}),                                 # MLServer
    (404, {"error": "Model iris with version 2 not found"}),
    (400, {"error": "Request for unknown model: 'iris' is not found"}),       # Triton
    (400, {"error": "Request for unknown model: 'iris' has no available versions"}),
    (503, {"error": "Model with name iris is not ready."}),                   # KServe
    (404, {"error": "Model with name iris does not exist."}),
])
def test_v2_not_ready_answers(status: int, body: object) -> None:
    assert is_not_ready("v2", status, INFER, _j(body))
    assert is_not_ready("v2", status, "/v2/models/iris/versions/2/infer", _j(body))
    assert not is_not_ready("http", status, INFER, _j(body))  # no protocol: never
    assert not is_not_ready("v2", status, "/v2/models/iris/ready", _j(body))  # not inference


@pytest.mark.parametrize("status, body", [
    (400, _j({"error": "unexpected inference input 'x' for model 'iris'"})),
    (400, _j({"error": "Codec not found for input / output with name x"})),
    (404, _j({"detail": "Not Found"})),  # a wrong path on a generic server
    (404, b"<html>not found</html>"),
    (500, _j({"error": "Model iris not found"})),
    (404, b"[" * 100_000),
    (404, _j({"error": "Model iris not found", "pad": "x" * 70_000})),  # too large to be one
])
def test_v2_other_answers_pass_through(status: int, body: bytes) -> None:
    assert not is_not_ready("v2", status, INFER, body)


@pytest.mark.parametrize("body", [
    {"error": {"message": "The model `gpt-x` does not exist", "type": "invalid_request_error",
               "param": None, "code": "model_not_found"}},                    # OpenAI
    {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError",
     "param": None, "code": 404},                                              # vLLM
    {"error": {"message": 'model "x" not found, try pulling it first', "type": "api_error"}},
])
def test_openai_not_found_answers(body: object) -> None:
    assert is_not_ready("openai", 404, "/v1/chat/completions", _j(body))
    assert not is_not_ready("openai", 400, "/v1/chat/completions", _j(body))


def test_openai_other_404s_pass_through() -> None:
    for body in ({"error": {"message": "Unknown path", "code": "not_found"}}, {"detail": "x"}):
        assert not is_not_ready("openai", 404, "/v1/nope", _j(body))


def test_could_be_not_ready_needs_no_body() -> None:
    assert could_be_not_ready("v2", 404, INFER) and not could_be_not_ready("v2", 200, INFER)
    assert not could_be_not_ready("v2", 404, "/v2/models/iris")
    assert could_be_not_ready("openai", 404, "/v1/chat/completions")
    assert not could_be_not_ready("openai", 404, "/v1/x")
    assert not could_be_not_ready("openai", 404, "/v1/chat/completions", b"GET")
    assert not could_be_not_ready("http", 404, "/")


# ----------------------------------------------------- messages judged in linear time

# (An OpenAI-style message is compared whole with the servers' own shapes, as a v2 one is:
# tests/test_notready_openai.py, tests/test_notready_shapes.py.)

@pytest.mark.timeout(30)
@pytest.mark.parametrize("text, says", [
    ("model " * 10_000, False), ("model\n" * 9_000, False), ("model not" * 6_500, False),
    ("Model iris " * 5_000 + "not found", False), ("model\n" * 9_000 + "unknown model", False),
])
def test_a_long_wordy_message_is_judged_in_linear_time(text: str, says: bool) -> None:
    """`\\bmodel\\b.*\\b(?:...)\\b` backtracked over the rest of the line from every "model":
    ~10 s of CPU for 64 KiB of "model " (it is milliseconds now)."""
    v2_body = _j({"error": text})
    openai_body = _j({"error": {"message": text}})
    assert len(openai_body) < 64 * 1024
    start = time.process_time()
    v2 = is_not_ready("v2", 404, INFER, v2_body)
    openai = is_not_ready("openai", 404, "/v1/chat/completions", openai_body)
    took = time.process_time() - start
    assert (v2, openai) == (False, says)
    assert took < 0.5, f"{took:.2f} s of CPU to judge {len(text)} characters"


# ----------------------------------------------------------------- end to end

def wordy_404(hits: list[int]) -> web.Application:
    """A v2 model server whose 404 error message (64 KiB) repeats "model ": the kind of
    text a server may echo from the request (an input or model name)."""
    body = json.dumps({"error": ("model " * 20000)[:64 * 1024 - 20]})

    async def infer(_: web.Request) -> web.Response:
        hits.append(1)
        return web.Response(status=404, text=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/models/iris/infer", infer)
    return app


@pytest.mark.timeout(90)
async def test_a_wordy_error_answer_does_not_stall_every_other_request(
        tmp_path: Path, backends, gateway_procs) -> None:
    """On a `protocol: v2` route a 404 on an inference path is read whole and its message
    searched with `\\bmodel\\b.*\\b(?:not found|...)\\b` (notready.py, before), which
    backtracked over the rest of the message from every "model" in it, quadratic: ~10 s of
    CPU for one 64 KiB answer, inline on the event loop, during which no other request of
    that process moves. Expected: a request to another route answers within a second."""
    hits: list[int] = []
    bad, good = await backends(wordy_404(hits)), await backends(echo_app("other"))
    routes = textwrap.dedent(f"""\
        - name: iris
          match: {{path_prefix: /v2/models/iris}}
          protocol: v2
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{bad}", weight: 100}}
        - name: other
          match: {{path_prefix: /other}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{good}", weight: 100}}
        """)
    gw, data = await serving_process(gateway_procs, tmp_path, routes)
    try:
        status, _, _ = await exchange(data, request("GET", "/other/x"))
        assert status == 200
        t_slow = time.monotonic()
        slow = asyncio.create_task(exchange(data, request("POST", "/v2/models/iris/infer",
                                                          b'{"inputs": []}'), timeout=60))
        await wait_until(lambda: hits)  # the 404 is on its way to the gateway
        t0 = time.monotonic()
        status, _, _ = await exchange(data, request("GET", "/other/x"), timeout=60)
        took = time.monotonic() - t0
        assert status == 200
        status, _, _ = await slow
        judged = time.monotonic() - t_slow
        assert status == 404
        assert took < 1.0 and judged < 2.0, (
            f"the 404 took {judged:.1f} s to be judged and forwarded; a request to another "
            f"route meanwhile took {took:.1f} s")
    finally:
        gw.stop()
