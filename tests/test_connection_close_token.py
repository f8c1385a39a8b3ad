"""A `close` among a Connection field's tokens ends the connection after the answer, both
ways (impleft9; RFC 9112 9.6: `close` wins over a `keep-alive` beside it). llhttp keeps an
HTTP/1.0 `Connection: keep-alive, close` (or `close, keep-alive`, or a `keep-alive` field
and a `close` one) alive: on HTTP/1.0 only its keep-alive flag counts. The data plane took
its answer: the client's connection stayed open for a request pipelined behind it, and a
backend's HTTP/1.0 answer so marked had its connection pooled and the next request sent
there. (HTTP/1.1's `keep-alive, close` llhttp closes already: held here too.)

A real `killgate serve` between raw sockets: a backend that counts its connections and the
requests each carried, and never closes one itself."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.backends import RawServer
from tests.conftest import GatewayProcess, serving_process
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(60)

_ROUTE = """\
- name: echo
  match: {{path_prefix: /}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
"""

#: the Connection fields whose `close` llhttp does not read on HTTP/1.0
_CLOSING = [b"Connection: keep-alive, close\r\n", b"Connection: close, keep-alive\r\n",
            b"Connection: Keep-Alive ,CLOSE\r\n",
            b"Connection: keep-alive\r\nConnection: close\r\n",
            b"Connection: close\r\nConnection: keep-alive\r\n",
            b"Proxy-Connection: close\r\nConnection: keep-alive\r\n",
            b"Connection: keep-alive, x-foo, close\r\n"]


class _Counting(RawServer):
    """Answers every request on a connection it keeps open with `answer`; `requests[i]` is
    how many requests connection i carried."""

    keep_open = True

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer
        self.requests: list[int] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = len(self.requests)
        self.requests.append(0)
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            self.requests[i] += 1
            writer.write(self.answer)
            await writer.drain()


_PLAIN = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
async def test_a_close_token_ends_the_clients_connection(
        gateway_procs: Callable[..., GatewayProcess], tmp_path: Path, version: bytes) -> None:
    backend = _Counting(_PLAIN)
    port = await backend.start()
    try:
        _, data = await serving_process(gateway_procs, tmp_path, _ROUTE.format(port=port))
        for fields in _CLOSING:
            before = sum(backend.requests)
            reader, writer = await asyncio.open_connection("127.0.0.1", data)
            try:
                writer.write(b"GET /a HTTP/" + version + b"\r\nHost: h\r\n" + fields + b"\r\n"
                             b"GET /behind HTTP/1.1\r\nHost: h\r\n\r\n")  # (pipelined)
                status, headers, body = await read_answer(reader)
                assert (status, body) == (200, b"ok"), fields
                assert headers.get("connection") == "close", (version, fields, headers)
                assert await asyncio.wait_for(reader.read(), 10) == b"", (version, fields)
            finally:
                writer.close()
            assert sum(backend.requests) == before + 1, (version, fields)  # (not /behind)
    finally:
        await backend.stop()


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
@pytest.mark.parametrize("fields", _CLOSING[:6])
async def test_a_backends_answer_with_a_close_token_is_not_reused(
        gateway_procs: Callable[..., GatewayProcess], tmp_path: Path, version: bytes,
        fields: bytes) -> None:
    backend = _Counting(b"HTTP/" + version + b" 200 OK\r\n" + fields +
                        b"content-length: 2\r\n\r\nok")
    port = await backend.start()
    try:
        _, data = await serving_process(gateway_procs, tmp_path, _ROUTE.format(port=port))
        reader, writer = await asyncio.open_connection("127.0.0.1", data)
        try:
            for _ in range(3):
                writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
                status, _, body = await read_answer(reader)
                assert (status, body) == (200, b"ok")
        finally:
            writer.close()
        assert backend.requests == [1, 1, 1], backend.requests  # (a connection each)
    finally:
        await backend.stop()


@pytest.mark.parametrize("fields", [b"Proxy-Connection: keep-alive, close\r\n",
                                    b"Proxy-Connection: keep-alive\r\nProxy-Connection: close\r\n"])
async def test_a_proxy_connection_close_alone_is_not_reused(
        gateway_procs: Callable[..., GatewayProcess], tmp_path: Path, fields: bytes) -> None:
    """(revleft9) `Proxy-Connection` is one of llhttp's Connection fields, but an answer's is
    dropped (not one `response_head` handles): with no `Connection` beside it, its `close`
    was never looked at, an HTTP/1.0 `keep-alive, close` kept the connection, and the head
    was remembered (answerheads.py), so it was never looked at again either."""
    backend = _Counting(b"HTTP/1.0 200 OK\r\n" + fields + b"content-length: 2\r\n\r\nok")
    port = await backend.start()
    try:
        _, data = await serving_process(gateway_procs, tmp_path, _ROUTE.format(port=port))
        reader, writer = await asyncio.open_connection("127.0.0.1", data)
        try:
            for _ in range(3):
                writer.write(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
                status, headers, body = await read_answer(reader)
                assert (status, body) == (200, b"ok")
                assert "proxy-connection" not in headers
        finally:
            writer.close()
        assert backend.requests == [1, 1, 1], backend.requests  # (a connection each)
    finally:
        await backend.stop()
