"""A hostile review of the data-plane protocol (pipelining, framing both ways, 100-continue,
half-close, flow control), over raw sockets against a real gateway and real backends."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import struct
import textwrap
import zlib
from pathlib import Path

import pytest

from tests.backends import RawServer, Recorder, echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import error_type, exchange
from tests.test_model_body_encodings import model_and_catch_all

pytestmark = pytest.mark.timeout(60)


async def _send_read(port: int, payload: bytes, quiet: float = 1.0) -> bytes:
    """Send `payload`, read until the gateway closes or stays quiet for `quiet` s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), quiet):
                out += chunk
        return out
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@pytest.fixture
async def echo_gateway(tmp_path: Path, backends):
    rec = Recorder()
    p = await backends(echo_app("v1", rec))
    cfg = write_config(tmp_path, two_versions(p, p, 100, 0))
    async with running_gateway(cfg) as g:
        yield g, rec


class EarlyAnswer(RawServer):
    """Answers a request as soon as its head is in, without reading its body: a chunked
    answer whose end waits for `release`; any later request gets a short answer."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.lines: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.lines.append(head.split(b"\r\n", 1)[0])
        if b"/early" not in head.split(b"\r\n", 1)[0]:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await self.release.wait()
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def test_an_answer_that_says_close_closes_the_connection(tmp_path: Path) -> None:
    """An answer streamed while its request's body was still arriving says `Connection:
    close` (the connection cannot be kept: the body is unread). When the body then came in
    whole before the answer ended, the connection was kept alive all the same, and a request
    pipelined behind was processed: RFC 9112 §9.6, a server that sends `close` processes no
    further request (the client, told `close`, may send it again elsewhere)."""
    backend = EarlyAnswer()
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            size = 100_000  # (over the 64 KiB read whole first: it streams)
            writer.write(b"POST /v2/models/iris/early HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: %d\r\n\r\n" % size)
            # the body a little at a time until the early answer's head comes through
            # (the gateway forwards it once it next looks: at a body byte)
            sent = 0
            head = b""
            while not head:
                assert sent < size // 2, "no answer head"
                writer.write(b"a" * 500)
                sent += 500
                with contextlib.suppress(TimeoutError):
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.1)
            assert b"connection: close" in head.lower(), head
            writer.write(b"a" * (size - sent)
                         + b"GET /v2/models/iris/AFTER-CLOSE HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            backend.release.set()
            rest = b""
            with contextlib.suppress(ConnectionError, TimeoutError):
                while chunk := await asyncio.wait_for(reader.read(65536), 3):
                    rest += chunk  # (till the gateway closes; 3 s of quiet: it did not)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            # the stream ended, then the connection closed: nothing after it
            assert rest.endswith(b"0\r\n\r\n"), rest
            assert b"HTTP/1.1" not in rest, rest
            assert not any(b"AFTER-CLOSE" in line for line in backend.lines), backend.lines
    finally:
        await backend.stop()


class ResetMidBody(RawServer):
    """Answers with a body that ends with the connection (no length, not chunked), sends
    part of it, then resets the connection (an abort with SO_LINGER 0: a RST, not a FIN)."""

    def __init__(self, head: bytes, part: bytes) -> None:
        super().__init__()
        self.head, self.part = head, part

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(self.head + self.part)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


@pytest.mark.parametrize("sse", [False, True])
async def test_a_reset_is_not_the_end_of_a_body_that_ends_with_the_connection(
        tmp_path: Path, sse: bool) -> None:
    """A body framed by the connection's end is complete at a clean close (a FIN) only: a
    reset cuts it. It was forwarded as whole (a clean chunked end, an event stream ended
    without `killgate.error`): a stream that fails half-way must never look like a success."""
    kind = b"text/event-stream" if sse else b"application/json"
    backend = ResetMidBody(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\n\r\n" % kind,
                           b"data: 1\n\n" if sse else b'{"partial": ')
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            writer.write(b"GET /v2/models/iris/x HTTP/1.1\r\nHost: x\r\n\r\n")
            out = b""
            with contextlib.suppress(ConnectionError, TimeoutError):
                while chunk := await asyncio.wait_for(reader.read(65536), 3):
                    out += chunk  # (till the gateway closes; 3 s of quiet: it did not)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            assert out.startswith(b"HTTP/1.1 200"), out
            if sse:  # the events so far, then ours, then the connection closes
                assert b"event: killgate.error" in out, out
            else:  # an aborted connection: never the chunked body's last chunk
                assert not out.endswith(b"0\r\n\r\n"), out
    finally:
        await backend.stop()


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
async def test_a_large_body_on_a_model_route_is_peeked_and_served(
        tmp_path: Path, backends, chunked: bool) -> None:
    """A route that matches by the body's `model` reads up to `model_peek_bytes` (1 MiB by
    default) of the body before routing; reading paused at 256 KiB buffered (flow control)
    and the peek, waiting for more, never resumed it: a body over 512 KiB hung until the
    client gave up (no body deadline runs while the gateway does not read)."""
    rec = Recorder()
    p = await backends(echo_app("a", rec))
    routes = textwrap.dedent(f"""\
        - name: chat-a
          match: {{path_prefix: /v1, model: gpt-a}}
          stable: v1
          versions:
            - {{name: v1, url: "http://127.0.0.1:{p}", weight: 100}}
        """)
    body = json.dumps({"model": "gpt-a", "pad": "x" * 700_000}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" \
           b"Content-Type: application/json\r\n"
    if chunked:
        payload = head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
            len(body), body)
    else:
        payload = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    async with running_gateway(write_config(tmp_path, routes)) as g:
        status, headers, _ = await exchange(g.gw.data_addr[1], payload, timeout=10)
    assert status == 200 and headers.get("x-killgate-route") == "chat-a", (status, headers)
    assert rec.requests[0]["body"] == body


async def test_a_huge_integer_does_not_hide_the_model_from_routing(
        tmp_path: Path, backends) -> None:
    """RELIABILITY row 57: a body whose `model` follows an integer of more than 4300 digits
    (valid JSON; Python's int() refuses it) was routed as one with no `model`, to the route
    that matches none, whose backend (a reader outside Python) reads the `model` all the
    same: with the model's own route killed, the kill was bypassed."""
    ra, rb = Recorder(), Recorder()
    pa, pb = await backends(echo_app("a", ra)), await backends(echo_app("b", rb))
    routes = model_and_catch_all(pa, pb)
    body = b'{"seed": 1' + b"0" * 5000 + b', "model": "gpt-a"}'
    payload = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
               + body)
    async with running_gateway(write_config(tmp_path, routes)) as g:
        status, headers, _ = await exchange(g.gw.data_addr[1], payload, timeout=10)
    assert rb.requests == [], "routed as if it named no model"
    assert status == 200 and headers.get("x-killgate-route") == "chat-a", (status, headers)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
async def test_a_compressed_body_on_a_model_route_is_refused(tmp_path: Path, backends,
                                                             coding: str) -> None:
    """RELIABILITY row 57: the gateway reads a body's `model` as it came, so a body with a
    Content-Encoding held none it could see, and was routed by the routes that match no
    model; a backend that decodes request bodies (aiohttp's server does) read the `model`
    all the same: a killed model route was reachable through a catch-all. Refused (400),
    as a declared non-UTF-8 charset is."""
    ra, rb = Recorder(), Recorder()
    pa, pb = await backends(echo_app("a", ra)), await backends(echo_app("b", rb))
    routes = model_and_catch_all(pa, pb)
    plain = json.dumps({"model": "gpt-a", "messages": []}).encode()
    body = zlib.compress(plain) if coding == "deflate" else gzip.compress(plain)
    payload = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Content-Type: application/json\r\nContent-Encoding: %s\r\n"
               b"Content-Length: %d\r\n\r\n" % (coding.encode(), len(body)) + body)
    async with running_gateway(write_config(tmp_path, routes)) as g:
        status, _, answer = await exchange(g.gw.data_addr[1], payload, timeout=10)
    assert rb.requests == [], "routed as if it named no model"
    assert status == 400 and error_type(answer) == "bad_request", (status, answer)
