"""Reference servers for benchmarks/floors.py: what a request costs before killgate's own work.

    python benchmarks/floor_servers.py --kind aiohttp|parser|httptools|naive --port P
        [--backend-port B] [--delay-ms D] [--workers N]

* `aiohttp`: aiohttp's low-level server (`web.Server`, the one killgate's data plane runs
  on) answering every request with a fixed JSON body after reading the request body. No
  proxying at all: the least a server built on aiohttp can cost.
* `parser`: aiohttp's C request parser (`aiohttp._http_parser.HttpRequestParser`, the one
  its server uses) driven by a Protocol of our own, without aiohttp's per-request
  machinery (request handler loop, `BaseRequest`, `StreamWriter`, a `Task` per request).
* `httptools`: a raw asyncio Protocol + httptools (llhttp) answering the same fixed body.
  What a data plane that left aiohttp's server behind could start from.
* `minproxy`: the least a Python HTTP/1.1 proxy on uvloop does per request: a raw Protocol
  per client connection with its own kept-alive backend connection, httptools parsing both
  directions (to find where each message ends) and the bytes passed through unchanged: no
  routing, no header rewriting, no pool, no kill check, no telemetry. Two reads and two
  writes per request, like any proxy: the floor under killgate's data plane (issue 13).
* `naive`: the issue's reference, a naive aiohttp proxy: aiohttp's server in front, one
  `aiohttp.ClientSession` with a keep-alive pool to the backend, the body and the answer
  passed through whole.

With `--delay-ms D` the fixed answers come D ms late (a timer, never blocking). With
`--workers N` the process starts N-1 copies of itself; all of them listen on the port with
SO_REUSEPORT. Stopped by SIGTERM (the benchmark signals the whole process group).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from typing import cast

import httptools
import uvloop
from aiohttp import ClientSession, TCPConnector, web
from aiohttp._http_parser import HttpRequestParser
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

HOST = "127.0.0.1"
BODY = b'{"ok":true,"model_version":"v1"}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(BODY), BODY))


class FixedAnswer(asyncio.Protocol):
    """httptools: answer every complete request with RESPONSE (after `delay_s`)."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_complete(self) -> None:
        if self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, self._answer)
        else:
            self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class ParserAnswer(BaseProtocol):
    """aiohttp's C parser: answer every request with RESPONSE once its body has arrived."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float) -> None:
        super().__init__(loop)
        self.delay_s = delay_s
        self.reading: set[asyncio.Task[None]] = set()
        self.parser = HttpRequestParser(self, loop, 2**16, max_line_size=8190,
                                        max_headers=128, max_field_size=8190,
                                        auto_decompress=False)

    def data_received(self, data: bytes) -> None:
        try:
            messages, _, _ = self.parser.feed_data(data)
        except Exception:  # noqa: BLE001 - any parse error: drop the connection
            if self.transport is not None:
                self.transport.close()
            return
        for _, payload in messages:
            if payload.is_eof():
                payload.read_nowait(-1)
                self._later()
            else:
                task = asyncio.ensure_future(self._body(payload))
                self.reading.add(task)
                task.add_done_callback(self.reading.discard)

    async def _body(self, payload: StreamReader) -> None:
        await payload.read()
        self._later()

    def _later(self) -> None:
        if self.delay_s:
            self._loop.call_later(self.delay_s, self._answer)
        else:
            self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(RESPONSE)


class PassThroughUp(asyncio.Protocol):
    """minproxy, backend side: parse each answer (to find its end) and pass its bytes on."""

    def __init__(self, down: PassThrough) -> None:
        self.down = down
        self.parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.down.close()
            return
        if self.down.transport is not None:
            self.down.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.close()


class PassThrough(asyncio.Protocol):
    """minproxy, client side: parse each request (to find its end) and pass its bytes on."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.transport: asyncio.Transport | None = None
        self.up: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            up, _ = await loop.create_connection(lambda: PassThroughUp(self), HOST,
                                                 self.backend_port)
        except OSError:
            self.close()
            return
        self.up = cast(asyncio.Transport, up)
        if self.early:
            self.up.write(b"".join(self.early))
            self.early.clear()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            return
        if self.up is not None:
            self.up.write(data)
        else:
            self.early.append(data)

    def close(self) -> None:
        for t in (self.transport, self.up):
            if t is not None and not t.is_closing():
                t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.close()


def aiohttp_fixed(delay_s: float) -> web.Server:
    async def handler(request: web.BaseRequest) -> web.Response:
        await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        return web.Response(body=BODY, content_type="application/json")

    return web.Server(handler)


def naive_proxy(backend_port: int) -> tuple[web.Server, ClientSession]:
    session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
    base = f"http://{HOST}:{backend_port}"

    async def handler(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        async with session.request(request.method, base + request.path_qs, data=body,
                                   headers={"Content-Type": request.content_type}) as r:
            data = await r.read()
            return web.Response(body=data, status=r.status,
                                content_type=r.content_type or "application/json")

    return web.Server(handler), session


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    delay_s = args.delay_ms / 1000
    session: ClientSession | None = None
    factory: web.Server | type[asyncio.Protocol]
    if args.kind == "httptools":
        server = await loop.create_server(lambda: FixedAnswer(delay_s), HOST, args.port,
                                          reuse_port=True, backlog=4096)
    elif args.kind == "minproxy":
        server = await loop.create_server(lambda: PassThrough(args.backend_port), HOST,
                                          args.port, reuse_port=True, backlog=4096)
    elif args.kind == "parser":
        server = await loop.create_server(lambda: ParserAnswer(loop, delay_s), HOST, args.port,
                                          reuse_port=True, backlog=4096)
    else:
        if args.kind == "aiohttp":
            factory = aiohttp_fixed(delay_s)
        else:
            factory, session = naive_proxy(args.backend_port)
        server = await loop.create_server(factory, HOST, args.port, reuse_port=True,
                                          backlog=4096)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    if session is not None:
        await session.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=("aiohttp", "parser", "httptools", "minproxy", "naive"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend-port", type=int, default=0)
    p.add_argument("--delay-ms", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    args = p.parse_args()
    if args.kind in ("naive", "minproxy") and not args.backend_port:
        p.error(f"--kind {args.kind} needs --backend-port")
    copies = [subprocess.Popen([sys.executable, __file__, "--kind", args.kind,
                                "--port", str(args.port), "--backend-port", str(args.backend_port),
                                "--delay-ms", str(args.delay_ms)])
              for _ in range(args.workers - 1)]
    try:
        uvloop.run(serve(args))
    finally:
        for c in copies:
            c.terminate()
            c.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
