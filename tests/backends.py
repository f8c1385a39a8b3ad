"""Real HTTP backends for the tests, served on loopback sockets.

Each is an aiohttp application (or a raw asyncio server where aiohttp would refuse to
misbehave): echo, SSE with timestamps, dying mid-stream, hanging, failing, and one that
sends hop-by-hop response headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Recorder:
    """What a backend saw: one entry per request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def add(self, req: web.Request, body: bytes) -> None:
        self.requests.append({"method": req.method, "path": req.path_qs,
                              "headers": [(k.lower(), v) for k, v in _raw_headers(req)],
                              "body": body})


def _raw_headers(req: web.Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.raw_headers]


def echo_app(name: str, recorder: Recorder | None = None, status: int = 200,
             extra_headers: dict[str, str] | None = None) -> web.Application:
    """Answers JSON naming itself and echoing what it received."""

    async def handler(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        if recorder is not None:
            recorder.add(req, body)
        out = {"version": name, "method": req.method, "path": req.path_qs,
               "headers": _raw_headers(req), "body": body.decode("utf-8", "replace")}
        resp = web.json_response(out, status=status)
        for k, v in (extra_headers or {}).items():
            resp.headers[k] = v
        return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def sse_app(name: str, events: int = 10, interval: float = 0.3,
            die_after: int | None = None) -> web.Application:
    """SSE stream; each event carries the backend's send time. May die after N events."""

    async def handler(req: web.Request) -> web.StreamResponse:
        n = int(req.query.get("n", events))
        every = float(req.query.get("interval", interval))
        die = req.query.get("die_after")
        die_at = int(die) if die is not None else die_after
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(req)
        for i in range(n):
            if die_at is not None and i == die_at:
                assert req.transport is not None
                req.transport.abort()
                return resp
            payload = json.dumps({"i": i, "sent": time.time(), "version": name})
            await resp.write(f"data: {payload}\n\n".encode())
            await asyncio.sleep(every)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def chunked(req: web.Request) -> web.StreamResponse:
        die = int(req.query.get("die_after", 3))
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for _ in range(die):
            await resp.write(b"x" * 1000)
            await asyncio.sleep(0.05)
        assert req.transport is not None
        req.transport.abort()
        return resp

    async def sized(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.content_length = 10_000
        await resp.prepare(req)
        await resp.write(b"y" * 3000)
        await asyncio.sleep(0.05)
        assert req.transport is not None
        req.transport.abort()
        return resp

    async def dispatch(req: web.Request) -> web.StreamResponse:
        if req.path.endswith("/chunked"):
            return await chunked(req)
        if req.path.endswith("/sized"):
            return await sized(req)
        return await handler(req)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


def fixed_app(body: bytes, content_type: str = "application/json") -> web.Application:
    """The same answer to every request on every path (the request body read first)."""

    async def answer(req: web.Request) -> web.Response:
        await req.read()
        return web.Response(body=body, content_type=content_type)

    a = web.Application()
    a.router.add_route("*", "/{tail:.*}", answer)
    return a


async def hang(req: web.Request) -> web.StreamResponse:
    """Takes the request and never answers (an hour)."""
    await asyncio.sleep(3600)
    return web.Response()


def any_path_app(handler: Handler) -> web.Application:
    """`handler` for every method on every path."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def hang_app() -> web.Application:
    return any_path_app(hang)


async def fake_admin(backends: Callable[[web.Application], Awaitable[int]],
                     api: web.Application | Handler) -> dict[str, str]:
    """Serves `api` (an application, or a handler for every path) with the `backends`
    fixture as an admin API; returns the CLI's environment for it (a token-shaped token)."""
    port = await backends(api if isinstance(api, web.Application) else any_path_app(api))
    return {"KILLGATE_ADMIN_URL": f"http://127.0.0.1:{port}", "KILLGATE_TOKEN": "tok.en.x"}


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


class RawServer:
    """A raw TCP server on a loopback port: `serve` runs for each connection (a reset or an
    early end of the other side ends it quietly), then the connection closes, unless
    `keep_open` (then `stop` closes it)."""

    keep_open = False

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._open: set[asyncio.StreamWriter] = set()  # kept open: for stop()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            await self.serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not self.keep_open:
                writer.close()
                self._open.discard(writer)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        for writer in self._open:
            writer.close()
        self._open.clear()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


class RawBackend(RawServer):
    """Answers every connection's first request with fixed bytes (malformed answers); the
    connection then closes, unless not `close`."""

    def __init__(self, payload: bytes, close: bool = True) -> None:
        super().__init__()
        self.payload = payload
        self.keep_open = not close
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.payload)
        await writer.drain()


class StreamingBackend(RawServer):
    """Answers a connection's first request with `prefix`, then `block` again and again
    until `total` bytes of blocks are sent (`sent`), as fast as the gateway takes them: an
    answer head, a trailer or a body that goes on and on."""

    def __init__(self, prefix: bytes, block: bytes, total: int) -> None:
        super().__init__()
        self.prefix, self.block, self.total = prefix, block, total
        self.sent = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.prefix)
        while self.sent < self.total:
            writer.write(self.block)
            self.sent += len(self.block)
            await writer.drain()


#: how a model server says "I do not hold this model" (CONTRACT §5.6): path, status, body
NOT_HELD: dict[str, tuple[str, int, Callable[[str], dict[str, Any]]]] = {
    "mlserver": ("/v2/models/{model}/infer", 404, lambda m: {"error": f"Model {m} not found"}),
    "triton": ("/v2/models/{model}/infer", 400,
               lambda m: {"error": f"Request for unknown model: '{m}' is not found"}),
    "kserve": ("/v2/models/{model}/infer", 503,
               lambda m: {"error": f"Model with name {m} is not ready."}),
    "openai": ("/v1/chat/completions", 404,
               lambda m: {"error": {"message": f"The model `{m}` does not exist.",
                                    "type": "invalid_request_error", "param": None,
                                    "code": "model_not_found"}}),
}


def v2_model_server(name: str, models: set[str], flavour: str = "mlserver",
                    split: bool = False, peers: set[object] | None = None) -> web.Application:
    """A model server holding `models` (a set the test may change), answering an inference
    for a model it does not hold as `flavour` does (`NOT_HELD`: MLServer's 404, Triton's
    400, KServe's 503, an OpenAI-compatible server's 404 `model_not_found`); with `split`,
    every answer's head is written first and its body a few ms later, as uvicorn writes
    `http.response.start` and `http.response.body` (the gateway reads them apart).
    `POST /v2/repository/models/<m>/unload` unloads one; the server itself stays up.
    `peers` collects the address of every connection an inference came on."""
    path, status, error = NOT_HELD[flavour]

    async def answer(req: web.Request, code: int, doc: dict[str, Any]) -> web.StreamResponse:
        if not split:
            return web.json_response(doc, status=code)
        body = json.dumps(doc).encode()
        resp = web.StreamResponse(status=code, headers={"content-type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(req)  # (a StreamResponse writes its head here)
        await asyncio.sleep(0.01)  # the backend's own pace, not a wait of the test's
        await resp.write(body)
        await resp.write_eof()
        return resp

    async def infer(req: web.Request) -> web.StreamResponse:
        body = await req.read()
        if peers is not None and req.transport is not None:
            peers.add(req.transport.get_extra_info("peername"))
        model = req.match_info.get("model") or json.loads(body).get("model", "")
        if model not in models:
            return await answer(req, status, error(model))
        return await answer(req, 200, {
            "model_name": model, "model_version": name, "id": "1",
            "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.5]}]})

    async def unload(req: web.Request) -> web.Response:
        models.discard(req.match_info["model"])
        return web.json_response({})

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({})

    async def other(req: web.Request) -> web.StreamResponse:
        # any other path: the same not-found answer (a v2 route passes it on, as not inference)
        await req.read()
        return await answer(req, status, error(req.path))

    app = web.Application()
    app.router.add_post(path, infer)
    app.router.add_post("/v2/repository/models/{model}/unload", unload)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


@contextlib.contextmanager
def black_hole() -> Iterator[int]:
    """A loopback port whose accept queue is full: connection attempts get no answer (SYNs
    are dropped), as from a host that is gone (RELIABILITY row 2, the silent kind)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue: later SYNs go unanswered
            f = socket.socket()
            f.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                f.connect(("127.0.0.1", port))
            fillers.append(f)
        yield port
    finally:
        for f in fillers:
            f.close()
        hole.close()
