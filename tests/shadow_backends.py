"""Real model backends for the shadow tests: a V2 classifier and an OpenAI-style chat model
whose answers are a pure function of the input (plus a chosen change or noise), so the
true agreement of two of them is known in advance."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.backends import Recorder

__all__ = ["chat_app", "chat_request", "classify", "v2_app", "v2_request"]

# what a backend does to its answer for one input: None (the reference answer), "noise"
# (1e-7 added to every score), "change" (a real change: the top class moves)
Variant = Callable[[int], str | None]


def classify(x: int) -> list[float]:
    """The reference model: three class scores, a pure function of the input."""
    r = random.Random(x)
    raw = [r.random() for _ in range(3)]
    total = sum(raw)
    return [v / total for v in raw]


def v2_request(x: int) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64",
                                   "data": [x]}]}).encode()


def v2_app(name: str, variant: Variant | None = None, recorder: Recorder | None = None,
           status: int = 200, headers: dict[str, str] | None = None) -> web.Application:
    async def infer(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        if recorder is not None:
            recorder.add(req, body)
        x = int(json.loads(body)["inputs"][0]["data"][0])
        scores = classify(x)
        how = variant(x) if variant is not None else None
        if how == "noise":
            scores = [s + 1e-7 for s in scores]
        elif how == "change":
            scores = scores[1:] + scores[:1]  # rotated: another class is on top
        out = {"model_name": "iris", "model_version": name, "id": f"{name}-{x}",
               "outputs": [{"name": "probs", "shape": [1, 3], "datatype": "FP32",
                            "data": scores}]}
        return web.json_response(out, status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", infer)
    return app


def chat_request(x: int, stream: bool = False, json_mode: bool = False) -> bytes:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": f"q{x}"}],
                            "stream": stream}
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    return json.dumps(body).encode()


def _reference(x: int) -> str:
    return f"Answer number {x}: the capital is Paris."


def chat_app(name: str, variant: Variant | None = None, recorder: Recorder | None = None,
             random_text: bool = False, delay: float = 0.0) -> web.Application:
    """`variant(x)`: None, "case" (same text, other case and spacing), "text" (other
    words), "finish" (finish_reason "length"), "random" (a random word at the end).
    `random_text`: a nondeterministic model, whose every answer ends with a random word."""

    async def chat(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        if recorder is not None:
            recorder.add(req, body)
        doc = json.loads(body)
        x = int(doc["messages"][0]["content"][1:])
        text = _reference(x)
        finish = "stop"
        how = variant(x) if variant is not None else None
        if how == "case":
            text = "  " + text.upper().replace(" ", "   ") + "\n"
        elif how == "text":
            text = f"Answer number {x}: the capital is Lyon."
        elif how == "finish":
            finish = "length"
        if random_text or how == "random":
            text += f" ({random.random():.12f})"
        if delay:
            await asyncio.sleep(delay)
        if not doc.get("stream"):
            return web.json_response({
                "id": f"chatcmpl-{random.random()}", "object": "chat.completion",
                "created": int(random.random() * 1e9), "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(req)
        words = text.split(" ")
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            chunk = {"id": "c", "choices": [{"index": 0, "delta": {"content": piece},
                                             "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        end = {"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        await resp.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", chat)
    return app
