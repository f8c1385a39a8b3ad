"""Hostile Connection fields through a real `killgate serve`, against a raw backend that
records the exact bytes it got (review of the impconn merge: `Connection: keep-alive` or
`close` alone takes no second pass, `headrules.head_field`). Each shape's backend bytes are
those of the same request without the Connection fields (the gateway's own Via and
X-Forwarded-* lines included); a fast-path `close`, whatever its spelling or field, ends the
connection after its answer and a request pipelined behind it never reaches the backend;
a value llhttp refuses (obs-fold, NUL, VT) reaches nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.backends import RawServer
from tests.conftest import GatewayProcess, serving_process

pytestmark = pytest.mark.timeout(60)

_ROUTE = """\
- name: rec
  match: {{path_prefix: /}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
"""
_HEAD = b"POST /v1/x HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\nAccept: */*\r\n"
_SIZED = b"Content-Length: 2\r\n\r\nhi"
_CHUNKED = b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
_NEXT = b"GET /v1/second HTTP/1.1\r\nHost: h\r\n\r\n"
_LENGTH = re.compile(rb"\r\ncontent-length: (\d+)\r\n", re.IGNORECASE)


class _Recorder(RawServer):
    """Records each request's exact bytes (head and Content-Length body); answers 200."""

    keep_open = True

    def __init__(self) -> None:
        super().__init__()
        self.got: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            m = _LENGTH.search(head)
            body = await reader.readexactly(int(m.group(1))) if m else b""
            self.got.append(head + body)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()


async def _until_closed(port: int, payload: bytes) -> bytes:
    """Everything the gateway sends for `payload` until it closes (deadline: 10 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.read(-1), 10)
    finally:
        writer.close()


async def _until(pred: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


def _host_free(raw: bytes) -> bytes:
    return re.sub(rb"\r\nhost: [^\r]*", b"", raw)  # (the backend's own port: per run)


_CLOSES = [b"Connection: close\r\n", b"CONNECTION: CLOSE\r\n", b"connection:\tClose \r\n",
           b"Proxy-Connection: close\r\n", b"Connection: keep-alive\r\nConnection: close\r\n",
           b"Connection: close\r\nConnection: keep-alive\r\n",
           b"Connection: close\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"]
_REFUSED = [b"Connection: keep-alive\r\n x-foo\r\n", b"Connection: keep-alive\r\n\tx-foo\r\n",
            b"Connection: keep-alive\x00\r\n", b"Connection: keep-alive\x0b\r\n",
            b"Connection : keep-alive\r\n"]


async def test_hostile_connection_fields_end_to_end(
        gateway_procs: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    backend = _Recorder()
    port = await backend.start()
    try:
        _, data = await serving_process(gateway_procs, tmp_path, _ROUTE.format(port=port))
        for framing in (_SIZED, _CHUNKED):
            # the head of the pass over all fields (as before the merge): every shape's
            answer = await _until_closed(data, _HEAD + b"Connection: X-None, close\r\n" + framing)
            assert answer.count(b"HTTP/1.1 200") == 1, answer
            plain = _host_free(backend.got.pop())
            assert b"via: 1.1 killgate\r\nx-forwarded-for: 127.0.0.1\r\n" in plain
            for conn in _CLOSES:  # a fast-path close, a request pipelined behind it
                answer = await _until_closed(data, _HEAD + conn + framing + _NEXT)
                assert answer.count(b"HTTP/1.1 ") == 1 and b"connection: close" in answer, (
                    conn, answer)
                assert [_host_free(g) for g in backend.got] == [plain], conn
                backend.got.clear()
            for conn in (b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n",
                         b"Connection:keep-alive\r\nTE: trailers\r\n",
                         b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n",
                         b"Close: 1\r\nConnection: close\r\n"):
                head = _HEAD + conn + framing
                answer = await _until_closed(data, head + _NEXT.replace(
                    b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
                assert answer.count(b"HTTP/1.1 200") == 1 + (b"Close: 1" not in conn), answer
                await _until(lambda: bool(backend.got))
                assert _host_free(backend.got[0]) == plain, conn
                backend.got.clear()
            for conn in _REFUSED:  # llhttp refuses the head: nothing reaches the backend
                answer = await _until_closed(data, _HEAD + conn + framing)
                assert answer.startswith(b"HTTP/1.1 400 "), (conn, answer)
                assert not backend.got, conn
    finally:
        await backend.stop()
