"""The promotion gate and the noise floor (README "The noise floor"): a stable that samples
its text differs from itself in nearly every pair, so its text is excused as noise for
every copy, and a shadow answering garbage with the same `finish_reason` read as 100 %
agreement and passed the gate. A comparison that agreed only by excusing the answer itself
(a chat text, tensor values, a body) is no evidence for promotion now: reported apart
(`agreed_with_noise`, `agreed_excusing_answer`) and not counted by the gate. A field beside
the answer excused as noise (a random `id`, Diffy's case) still counts: the rest was
compared exactly. Real gateway, real backends."""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web

from tests.conftest import bearer, running_gateway, write_config
from tests.shadow_backends import chat_app, chat_request
from tests.test_shadow import route, send_all, settled

Start = Callable[[web.Application], Awaitable[int]]
ROLLOUT = bearer("killgate:rollout killgate:read", "alice", 3 * 3600)
pytestmark = pytest.mark.timeout(60)
GATE = "\n  analysis: {min_shadow_agreement: 0.9, min_shadow_compared: 10}\n"


def garbage_app() -> web.Application:
    """A broken model: random letters, with the stable's `finish_reason`."""
    async def chat(req: web.Request) -> web.StreamResponse:
        await req.read()
        text = "".join(random.choice("qxzjkv ") for _ in range(40))
        return web.json_response({
            "id": f"chatcmpl-{random.random()}", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", chat)
    return app


async def _weights(session: ClientSession, admin: str) -> tuple[int, dict[str, Any]]:
    async with session.put(admin + "/v1/routes/iris/weights", headers=ROLLOUT, json={
            "weights": {"v1": 90, "v2": 10}, "reason": "canary"}) as r:
        return r.status, dict(await r.json())


async def test_garbage_text_excused_as_noise_does_not_pass_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    p1 = await backends(chat_app("m", random_text=True))
    p2 = await backends(garbage_app())
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, noise: {sample: 1.0, min_pairs: 5}}", "openai",
        "/v1/chat") + GATE)
    async with running_gateway(cfg) as g:
        out = await send_all(session, g.url + "/v1/chat/completions",
                             [chat_request(x) for x in range(20)])
        assert {s for s, _, _ in out} == {200}
        rep = await settled(session, g.admin, 20)
        assert rep["agreed_with_noise"] == rep["agreed_excusing_answer"] == rep["agreed"], rep
        gate = rep["gate"]
        assert gate["open"] is False and gate["compared"] == 0, gate
        status, body = await _weights(session, g.admin)
        assert (status, body["error"]["type"]) == (409, "shadow_agreement"), body
        assert "agreed only by excusing the answer itself as noise" in body["error"]["message"]
        assert "iris" not in g.gw.holder.doc.overrides


async def test_an_identical_shadow_with_a_noisy_id_passes_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """The same answer, but a random `id` and `created` (compared as JSON): noise beside
    the answer, which was compared exactly."""
    p1 = await backends(chat_app("m"))
    p2 = await backends(chat_app("m"))
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, compare: {json: {}}, noise: {sample: 1.0, "
        "min_pairs: 5}}", "openai", "/v1/chat") + GATE)
    async with running_gateway(cfg) as g:
        out = await send_all(session, g.url + "/v1/chat/completions",
                             [chat_request(x) for x in range(20)])
        assert {s for s, _, _ in out} == {200}
        rep = await settled(session, g.admin, 20)
        assert rep["agreed_with_noise"] == 20 and rep["agreed_excusing_answer"] == 0, rep
        assert rep["gate"]["open"] is True, rep["gate"]
        status, body = await _weights(session, g.admin)
        assert status == 200, body
        assert json.dumps(body)  # (an answer, not an error)


JSON_NOISE = "noise: {sample: 1.0, min_pairs: 5}}"


@pytest.mark.parametrize("compare", [
    "compare: json",  # the default: a long text with spaces is the answer
    "compare: {json: {answer_paths: ['choices[*].message.content']}}",
])
async def test_garbage_text_compared_as_json_does_not_pass_the_gate(
        tmp_path: Path, backends: Start, session: ClientSession, compare: str) -> None:
    """Under `compare: json` the text is a field like any other (kind `value`): its noise
    excused any text, garbage too, and the gate passed a broken model (found by review).
    A difference in the answer is now of kind `answer`, excused but not agreement."""
    p1 = await backends(chat_app("m", random_text=True))
    p2 = await backends(garbage_app())
    cfg = write_config(tmp_path, route(
        p1, p2, f"{{version: v2, sample: 1.0, {compare}, {JSON_NOISE}", "openai",
        "/v1/chat") + GATE)
    async with running_gateway(cfg) as g:
        out = await send_all(session, g.url + "/v1/chat/completions",
                             [chat_request(x) for x in range(20)])
        assert {s for s, _, _ in out} == {200}
        rep = await settled(session, g.admin, 20)
        assert rep["agreed_excusing_answer"] == rep["agreed"] > 0, rep
        assert rep["gate"]["open"] is False, rep["gate"]
        status, body = await _weights(session, g.admin)
        assert (status, body["error"]["type"]) == (409, "shadow_agreement"), body
        assert "agreed only by excusing the answer itself as noise" in body["error"]["message"]
        assert "iris" not in g.gw.holder.doc.overrides


async def test_streamed_answers_under_json_are_refused_naming_openai_chat(
        tmp_path: Path, backends: Start, session: ClientSession) -> None:
    """A streamed chat answer is not JSON: under `compare: json` it is compared byte for
    byte and never agrees; the refusal says which comparison reads it."""
    p1 = await backends(chat_app("m", random_text=True))
    p2 = await backends(chat_app("m", random_text=True))
    cfg = write_config(tmp_path, route(
        p1, p2, "{version: v2, sample: 1.0, compare: json}", "openai", "/v1/chat") + GATE)
    async with running_gateway(cfg) as g:
        out = await send_all(session, g.url + "/v1/chat/completions",
                             [chat_request(x, stream=True) for x in range(12)])
        assert {s for s, _, _ in out} == {200}
        await settled(session, g.admin, 12)
        status, body = await _weights(session, g.admin)
        assert (status, body["error"]["type"]) == (409, "shadow_agreement"), body
        assert "use `compare: openai_chat`" in body["error"]["message"], body
