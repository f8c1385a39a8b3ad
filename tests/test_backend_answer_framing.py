"""A hostile or buggy backend on the answer side, against a real gateway (seventh hostile
review): what an answer's framing leaves on a pooled connection, and what it costs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.backends import RawServer, StreamingBackend
from tests.conftest import rss_growth, serving_process, two_versions
from tests.rawhttp import exchange, read_answer, request

pytestmark = pytest.mark.timeout(90)

INFER = "/v2/models/iris/infer"


def endless_trailer(total: int) -> StreamingBackend:
    """A backend whose chunked answer ends in a trailer section that never ends: one field
    whose value goes on, up to `total` bytes."""
    return StreamingBackend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                            b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\nX-Pad: ",
                            b"a" * 65536, total)


async def test_an_answer_trailer_that_never_ends_is_bounded(tmp_path: Path,
                                                             gateway_procs) -> None:
    """The answer head is bounded (64 KiB), its trailer section is not: httptools holds an
    open field's value and grows it by concatenation (`_current_header_value += val`, a
    copy of all of it per read), so one endless trailer value from a backend grows the
    gateway's memory without bound and its CPU quadratically, on the event loop every
    client shares, until the route's total timeout. Expected: the answer is cut (an
    aborted connection: its body was already on its way) once the trailer passes a bound,
    as the request side does (`Parsing._open_field`)."""
    backend = endless_trailer(300 * 1024 * 1024)
    port = await backend.start()
    gw, data = await serving_process(gateway_procs, tmp_path, two_versions(port, port, 100, 0))
    try:
        _, grown_mib = await rss_growth(gw.proc.pid,
                                        exchange(data, request("GET", INFER), timeout=80))
        assert backend.sent < 16 * 1024 * 1024 and grown_mib < 64, (
            f"the gateway read {backend.sent >> 20} MiB of one trailer field; its RSS grew "
            f"{grown_mib:.0f} MiB")
    finally:
        gw.stop()
        await backend.stop()


def two_routes(evil: int, good: int) -> str:
    return f"""\
- name: evil
  match: {{path_prefix: /evil}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{evil}", weight: 100}}]
- name: good
  match: {{path_prefix: /good}}
  stable: v1
  versions: [{{name: v1, url: "http://127.0.0.1:{good}", weight: 100}}]
"""


INJECTED = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Injected: 1\r\n\r\nevil!"


@pytest.mark.parametrize("size", [1000, 300_000])
async def test_an_interim_answer_with_a_body_never_joins_the_final_one(
        tmp_path: Path, size: int) -> None:
    """llhttp reads a body for a 1xx answer other than 100, 102 and 103 when it has a
    Content-Length (a 150, say); `AnswerParsing.on_body` appends it to the exchange's body
    and `on_message_complete` of the 1xx forgets the head but not those bytes, so they are
    sent ahead of the final answer's body. A large final answer is streamed with the
    backend's Content-Length while more bytes than that follow: the rest is read by the
    client as the next answer on its connection, whatever route that request went to
    (response splitting by a backend, across routes). Expected: a 1xx's body is dropped
    (or the answer refused, 502); the client's next answer is the other route's."""
    from tests.backends import RawBackend
    from tests.conftest import running_gateway, write_config

    final = b"a" * (size - len(INJECTED)) + INJECTED
    evil = RawBackend(b"HTTP/1.1 150 Whatever\r\nContent-Length: %d\r\n\r\n" % len(INJECTED)
                      + b"b" * len(INJECTED)
                      + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(final) + final)
    good = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
    ports = await evil.start(), await good.start()
    try:
        async with running_gateway(write_config(tmp_path, two_routes(*ports))) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                writer.write(b"GET /evil HTTP/1.1\r\nHost: x\r\n\r\n")
                first = await read_answer(reader)
                writer.write(b"GET /good HTTP/1.1\r\nHost: x\r\n\r\n")
                with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                    second = await read_answer(reader)
                    assert second[2] == b"good" and second[1].get("x-killgate-route") == "good", (
                        f"the answer to /good read {second}: the first answer "
                        f"({first[0]}, {len(first[2])} bytes) left bytes on the connection")
                assert first[0] == 502 or first[2] == final, "the 1xx's body joined the answer"
            finally:
                writer.close()
    finally:
        await evil.stop()
        await good.stop()


class Counting(RawServer):
    """A keep-alive backend answering GET and HEAD (no body for HEAD, unless `head_body`:
    a buggy one) that counts the connections it was opened; `chunked`: its answers are;
    `empty_head`: its answers to HEAD say `Content-Length: 0`."""

    def __init__(self, head_body: bool = False, chunked: bool = False,
                 empty_head: bool = False) -> None:
        super().__init__()
        self.head_body = head_body
        self.chunked = chunked
        self.empty_head = empty_head
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            is_head = head.startswith(b"HEAD ")
            body = b'{"outputs": [%d]}' % self.connections
            framing = (b"Transfer-Encoding: chunked\r\n" if self.chunked
                       else b"Content-Length: %d\r\n" % len(body))
            if is_head and self.empty_head:
                framing = b"Content-Length: 0\r\n"
            if self.chunked:
                body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + framing + b"\r\n" + (b"" if is_head and not self.head_body else body))
            await writer.drain()


async def _one_client(tmp_path: Path, backend: RawServer,
                      steps: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                      Awaitable[None]]) -> None:
    """`steps` on one client connection to a gateway in front of `backend`."""
    from tests.conftest import running_gateway, write_config

    port = await backend.start()
    try:
        async with running_gateway(write_config(tmp_path, two_versions(port, port, 100, 0))) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                await steps(reader, writer)
            finally:
                writer.close()
    finally:
        await backend.stop()


@pytest.mark.parametrize(("method", "chunked", "empty_head", "reused"), [
    ("GET", False, False, True),
    ("GET", True, False, True),
    ("HEAD", False, True, True),    # `Content-Length: 0`: no body announced
    ("HEAD", False, False, False),  # a length above 0 announced
    ("HEAD", True, False, False),   # chunked
])
async def test_head_reuses_a_backend_connection_only_when_its_answer_announces_no_body(
        tmp_path: Path, method: str, chunked: bool, empty_head: bool, reused: bool) -> None:
    """llhttp cannot be told that an answer is to HEAD. Reusing every HEAD's connection
    (review 7: each HEAD a TIME_WAIT on the gateway's side, a few hundred a second use up
    the ephemeral ports toward a backend) let a backend that sends a body for HEAD *later*
    than its head have that body read as the next client's answer (review 8:
    test_head_late_body.py). So a HEAD whose answer announces a body closes its connection,
    and one announcing none (`Content-Length: 0`) is reused as a GET's is."""
    async def twenty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(20):
            writer.write(f"{method} {INFER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            if method == "GET":
                assert b"content-length: 16\r\n" in head, head
                await asyncio.wait_for(reader.readexactly(16), 5)

    backend = Counting(chunked=chunked, empty_head=empty_head)
    await _one_client(tmp_path, backend, twenty)
    if reused:
        assert backend.connections <= 2, (
            f"20 {method} requests on one client connection opened {backend.connections} "
            f"backend connections")
    else:
        assert backend.connections == 20, backend.connections


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_after_an_answer_to_head_never_reaches_the_next_request(
        tmp_path: Path, chunked: bool) -> None:
    """A buggy backend sends a body with its answer to HEAD: those bytes are never read as
    the next answer (the GET after each HEAD gets its own backend's body, and a fresh
    connection)."""
    async def head_then_get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(10):
            writer.write(f"HEAD {INFER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            writer.write(f"GET {INFER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, _, body = await read_answer(reader)
            assert status == 200 and body.startswith(b'{"outputs": ['), (status, body)

    backend = Counting(head_body=True, chunked=chunked)
    await _one_client(tmp_path, backend, head_then_get)
    assert backend.connections >= 10
