"""A "model not found" answer that depends on the client's credentials (OpenAI's own: "The
model `x` does not exist or you do not have access to it.", code `model_not_found`, for a
key whose organisation has no access to `x`) is the client's, not the version's: a request
whose body streamed (a form over `server.model_peek_bytes`: a transcription's audio) blamed
the version for it when any client had been answered that model, so one client with a key
of its own ejected a healthy version. Real gateway and OpenAI-like servers over sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import running_gateway, write_config

pytestmark = pytest.mark.timeout(30)

_PATH = "/v1/audio/transcriptions"
_AUDIO = 1 << 20  # bytes of audio sent before a backend has the request, and after
_BOUNDARY = b"b0undary"


def _openai_like(started: asyncio.Event, held: set[str] | None = None) -> web.Application:
    """Answers `whisper-1` to the organisation with access to it ("Bearer paid"), and
    OpenAI's 404 `model_not_found` to any other key, as api.openai.com does; with `held`,
    a vLLM server holding those models (any key), answering vLLM's 404 for another.
    `started` is set when a request's head is in (its body still coming)."""

    async def transcribe(req: web.Request) -> web.Response:
        started.set()
        form = await req.post()
        model = str(form["model"])
        if held is not None:
            if model in held:
                return web.json_response({"text": "hello"})
            return web.json_response({"object": "error", "type": "NotFoundError",
                                      "message": f"The model `{model}` does not exist.",
                                      "param": None, "code": 404}, status=404)
        if req.headers.get("authorization") == "Bearer paid":
            return web.json_response({"text": "hello"})
        return web.json_response({"error": {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error", "param": None, "code": "model_not_found"}},
            status=404)

    app = web.Application(client_max_size=8 << 20)
    app.router.add_post(_PATH, transcribe)
    return app


def _routes(p1: int, p2: int) -> str:
    return f"""\
- name: audio
  match: {{path_prefix: /v1, model: whisper-1}}
  protocol: openai
  stable: v1
  outlier: {{consecutive_gateway_failures: 3, base_ejection: 30s}}
  versions:
    - {{name: v1, url: "http://127.0.0.1:{p1}", weight: 0}}
    - {{name: v2, url: "http://127.0.0.1:{p2}", weight: 100}}
"""


async def _transcribe(s: aiohttp.ClientSession, url: str, key: str,
                      started: asyncio.Event) -> tuple[int, str]:
    """A transcription whose form streams: its `model` and the first MiB of its audio, the
    rest once a backend has the request (past the gateway's peek window, it cannot move)."""
    started.clear()
    head = (b"--" + _BOUNDARY + b'\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            b"whisper-1\r\n--" + _BOUNDARY + b'\r\nContent-Disposition: form-data; '
            b'name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\nRIFF')

    async def body() -> AsyncIterator[bytes]:
        yield head + bytes(_AUDIO)
        async with asyncio.timeout(10):
            await started.wait()
        yield bytes(_AUDIO) + b"\r\n--" + _BOUNDARY + b"--\r\n"

    headers = {"authorization": f"Bearer {key}",
               "content-type": "multipart/form-data; boundary=" + _BOUNDARY.decode()}
    async with s.post(url, data=body(), headers=headers) as r:
        await r.read()
        return r.status, r.headers.get("x-killgate-version", "")


async def test_a_client_whose_key_lacks_the_model_does_not_eject_the_version(
        tmp_path: Path, backends) -> None:
    started = asyncio.Event()
    p1 = await backends(_openai_like(started))
    p2 = await backends(_openai_like(started))
    cfg = write_config(tmp_path, _routes(p1, p2))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        url = g.url + _PATH
        assert await _transcribe(s, url, "paid", started) == (200, "v2")
        got = [await _transcribe(s, url, "free", started) for _ in range(3)]
        after = await _transcribe(s, url, "paid", started)
        ejections = g.gw.metrics.get("killgate_upstream_ejections_total",
                                     ("audio", "v2", "not_ready"))
    assert got == [(404, "v2")] * 3, got  # the client's answer, as the backend gave it
    assert (ejections, after) == (0, (200, "v2")), (ejections, after)


async def test_a_vllm_version_that_unloads_the_model_is_ejected_on_streamed_forms(
        tmp_path: Path, backends) -> None:
    """The other direction: vLLM's own "does not exist." is its backend's, whoever asks: a
    version that answered whisper-1 and unloaded it is ejected on transcriptions that stream
    (they cannot move), as a v2 version is (test_notready_streamed.py)."""
    started, held = asyncio.Event(), {"whisper-1"}
    p1 = await backends(_openai_like(started, {"whisper-1"}))
    p2 = await backends(_openai_like(started, held))
    cfg = write_config(tmp_path, _routes(p1, p2))
    async with running_gateway(cfg) as g, aiohttp.ClientSession() as s:
        url = g.url + _PATH
        assert await _transcribe(s, url, "any", started) == (200, "v2")
        held.discard("whisper-1")
        got = [await _transcribe(s, url, "any", started) for _ in range(3)]
        after = await _transcribe(s, url, "any", started)
        ejections = g.gw.metrics.get("killgate_upstream_ejections_total",
                                     ("audio", "v2", "not_ready"))
    assert got == [(404, "v2")] * 3, got
    assert (ejections, after) == (1, (200, "v1")), (ejections, after)
