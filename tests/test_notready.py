"""dataplane/notready.py: which answers say "model not loaded / not ready", per protocol."""

from __future__ import annotations

import json

import pytest

from gateway.dataplane.notready import could_be_not_ready, is_not_ready

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
    assert could_be_not_ready("openai", 404, "/v1/x") and not could_be_not_ready("http", 404, "/")
