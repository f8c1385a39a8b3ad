"""A tiny, very fast HTTP/1.1 backend: the "model server" of the data-plane benchmark.

    python benchmarks/backend.py --port P [--host 127.0.0.1] [--delay-ms D] [--sse]

Raw asyncio Protocol + httptools request parser on uvloop, so that the backend costs as
little CPU per request as we can get from Python and the proxy under test dominates.

* Any method on any path gets `{"ok":true,"model_version":"v1"}` with Content-Length,
  keep-alive (unless the client asks for `Connection: close` or speaks HTTP/1.0).
  With `--delay-ms D > 0` the answer is sent D ms later (loop.call_later, never blocking).
* With `--sse`, `GET /sse` answers a chunked `text/event-stream`: the headers and the
  first `data: {...}` event at once, then one event every 100 ms, 5 events in all
  (`--delay-ms` does not apply). Each event carries `sent_ns`, the backend's
  `time.monotonic_ns()` when it was written, so a client can time each event's delivery.
  Reading is paused while a stream runs, so a pipelined request cannot interleave with it.
* Prints one line `ready` on stdout once it listens; SIGTERM/SIGINT stop it.

Delayed answers keep their order on a connection because timers with the same delay fire
in the order they were set; the benchmark clients never pipeline anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import cast

import httptools
import uvloop

BODY = b'{"ok":true,"model_version":"v1"}'
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(BODY)
RESPONSE = _HEAD + b"\r\n" + BODY
RESPONSE_CLOSE = _HEAD + b"Connection: close\r\n\r\n" + BODY
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
SSE_EVENTS = 5
SSE_INTERVAL_S = 0.1


def sse_chunk(index: int) -> bytes:
    """One SSE event framed as one HTTP chunk.

    `sent_ns` is CLOCK_MONOTONIC (system-wide on Linux) when the event is framed, just before
    it is written: a client on the same machine subtracts it from its own reading to get each
    event's delivery time.
    """
    payload = json.dumps({"index": index, "model_version": "v1", "token": f"t{index}",
                          "sent_ns": time.monotonic_ns()}, separators=(",", ":"))
    event = f"data: {payload}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(event), event)


class BackendProtocol(asyncio.Protocol):
    """One client connection: parse requests with httptools, answer from the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float, sse: bool) -> None:
        self.loop = loop
        self.delay_s = delay_s
        self.sse = sse
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.timers: set[asyncio.TimerHandle] = set()

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(BAD_REQUEST, close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.transport = None

    # ------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        path = self.url.split(b"?", 1)[0]
        if self.sse and path == b"/sse":
            self._start_sse(keep_alive)
        elif self.delay_s > 0:
            self._later(self.delay_s, self._answer, keep_alive)
        else:
            self._answer(keep_alive)

    # ------------------------------------------------------------ answers

    def _later(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        timer: asyncio.TimerHandle

        def fire() -> None:
            self.timers.discard(timer)
            fn(*args)

        timer = self.loop.call_later(delay, fire)
        self.timers.add(timer)

    def _answer(self, keep_alive: bool) -> None:
        self._write(RESPONSE if keep_alive else RESPONSE_CLOSE, close=not keep_alive)

    def _start_sse(self, keep_alive: bool) -> None:
        if self.transport is None:
            return
        self.transport.pause_reading()
        self._write(SSE_HEAD + sse_chunk(0))
        self._later(SSE_INTERVAL_S, self._sse_event, 1, keep_alive)

    def _sse_event(self, index: int, keep_alive: bool) -> None:
        if index < SSE_EVENTS - 1:
            self._write(sse_chunk(index))
            self._later(SSE_INTERVAL_S, self._sse_event, index + 1, keep_alive)
            return
        self._write(sse_chunk(index) + b"0\r\n\r\n", close=not keep_alive)
        if self.transport is not None and keep_alive:
            self.transport.resume_reading()

    def _write(self, data: bytes, close: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if close:
            transport.close()


async def serve(host: str, port: int, delay_ms: float, sse: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: BackendProtocol(loop, delay_ms / 1000.0, sse), host, port,
        backlog=4096, reuse_address=True)
    print("ready", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Tiny HTTP/1.1 backend for the killgate benchmarks.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=0.0,
                   help="answer this many ms after the request (default 0)")
    p.add_argument("--sse", action="store_true",
                   help="serve an SSE stream at GET /sse (5 events, 100 ms apart)")
    args = p.parse_args(argv)
    uvloop.run(serve(args.host, args.port, args.delay_ms, args.sse))
    return 0


if __name__ == "__main__":
    sys.exit(main())
