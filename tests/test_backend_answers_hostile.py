"""A misbehaving backend on the answer side, against a real `killgate serve`: an endless
answer head, trailer fields, a transfer coding other than chunked; and what a 502 tells the
client of the backend. (From a hostile review; each failed before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from pathlib import Path

import pytest

from tests.backends import StreamingBackend
from tests.conftest import (
    free_port,
    rss_growth,
    running_gateway,
    serving_process,
    two_versions,
    write_config,
)
from tests.rawhttp import exchange, request

pytestmark = pytest.mark.timeout(60)

INFER = "/v2/models/iris/infer"


def endless_head(total: int, one_field: bool = False) -> StreamingBackend:
    """A backend whose answer head never ends: a status line, then field after field
    (`one_field`: a single field whose value never ends), up to `total` bytes."""
    block = (b"a" * 65536) if one_field else b"".join(
        b"X-Pad-%05d: %s\r\n" % (i, b"a" * 900) for i in range(64))
    return StreamingBackend(b"HTTP/1.1 200 OK\r\n" + (b"X-Pad: " if one_field else b""),
                            block, total)


@pytest.mark.parametrize("one_field", [False, True])
async def test_a_backend_answer_head_that_never_ends_is_bounded(
        tmp_path: Path, gateway_procs, one_field: bool) -> None:
    """A backend that sends an answer head without end (many fields, or one endless value)
    must get a 502 once the head passes a bound (nginx: "upstream sent too big header"),
    not be buffered whole: here 400 MB of head arrive within the route's total timeout and
    the gateway's memory grows with it (llhttp has no limit of its own and
    `Exchange.on_header` appends every field)."""
    backend = endless_head(400 * 1024 * 1024, one_field)
    port = await backend.start()
    gw, data = await serving_process(gateway_procs, tmp_path, two_versions(port, port, 100, 0))
    try:
        got, grown_mib = await rss_growth(gw.proc.pid,
                                          exchange(data, request("GET", INFER), timeout=50))
        assert not isinstance(got, Exception), got
        status = got[0]
        # expected: refused early (a few hundred KiB of head at most), 502
        assert status == 502 and backend.sent < 16 * 1024 * 1024 and grown_mib < 64, (
            f"answered {status} after reading {backend.sent >> 20} MiB of one answer head; "
            f"the gateway's RSS grew {grown_mib:.0f} MiB")
    finally:
        gw.stop()
        await backend.stop()


async def test_a_backend_trailer_is_not_merged_into_the_forwarded_head(
        tmp_path: Path) -> None:
    """A chunked answer's trailer section (RFC 9110 §6.5.1: never merged into the header
    section) becomes fields of the head the client gets when the whole answer arrives in
    one read (the fast path's `write_complete` uses `Exchange.lines`, which `on_header`
    extends for trailer fields too). The request side drops trailers; the answer side
    should as well."""
    from tests.backends import RawBackend
    payload = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/json\r\n\r\n"
               b"2\r\n{}\r\n0\r\nSet-Cookie: session=attacker\r\nX-From-Trailer: 1\r\n\r\n")
    backend = RawBackend(payload)
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            status, headers, body = await exchange(int(g.url.rsplit(":", 1)[1]),
                                                   request("GET", INFER))
        assert status == 200 and body == b"{}"
        assert "set-cookie" not in headers and "x-from-trailer" not in headers, (
            f"trailer fields forwarded as header fields: {headers}")
    finally:
        await backend.stop()


async def test_an_answer_transfer_coded_gzip_is_not_forwarded_as_identity(tmp_path: Path) -> None:
    """The answer side of the same: a backend's `Transfer-Encoding: gzip, chunked` is
    de-chunked, the field dropped, and the gzip bytes reach the client as an identity body
    (no Transfer-Encoding, no Content-Encoding). Expected: 502, or the body decoded."""
    from tests.backends import RawBackend

    plain = b'{"outputs": [1]}'
    coded = gzip.compress(plain)
    backend = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: gzip, chunked\r\n\r\n"
                         + b"%x\r\n" % len(coded) + coded + b"\r\n0\r\n\r\n")
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            status, headers, body = await exchange(
                int(g.url.rsplit(":", 1)[1]),
                b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await backend.stop()
    if status == 502:
        return
    assert body == plain or "gzip" in headers.get("content-encoding", "") \
        or "gzip" in headers.get("transfer-encoding", ""), (
        f"answered {status} with {headers}: the client got gzip bytes as identity data")


async def test_a_502_does_not_name_the_backend_address(tmp_path: Path) -> None:
    """Every version unreachable: the client gets 502 `upstream_failed`, whose message is
    `f"the backend failed: {exc}"` (answers.py `upstream_failed`): the backend's internal
    address and the socket error ("cannot connect to 127.0.0.1:PORT: Connect call failed")
    reach any data-plane client. The admin API redacts URLs (CONTRACT §5.2); the data
    plane should not hand them out either (nginx and Envoy answer a fixed text)."""
    dead = free_port()
    cfg = write_config(tmp_path, two_versions(dead, dead, 100, 0))
    async with running_gateway(cfg) as g:
        status, _, body = await exchange(int(g.url.rsplit(":", 1)[1]),
                                         request("GET", "/v2/models/iris/infer"))
    assert status == 502
    message = json.loads(body)["error"]["message"]
    assert str(dead) not in message and "127.0.0.1" not in message, message


async def test_an_answer_length_with_trailing_whitespace_is_its_length_for_head(
        tmp_path: Path) -> None:
    """llhttp frames an answer by `Content-Length: 16 ` (whitespace after the digits, which
    RFC 9110 lets a recipient strip), but the exchange read the value as it came and took
    "16 " for no length: the answer to HEAD reached the client without the backend's
    Content-Length (README: HEAD gets the backend's Content-Length, no body)."""
    from tests.backends import RawBackend

    backend = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 16 \t\r\n\r\n")
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                writer.write(request("HEAD", INFER))
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                rest = await asyncio.wait_for(reader.read(), 10)  # (Connection: close)
            finally:
                writer.close()
    finally:
        await backend.stop()
    assert head.startswith(b"HTTP/1.1 200 ") and rest == b"", (head, rest)
    assert b"\r\ncontent-length: 16\r\n" in head, head


async def _cut_before_the_end(tmp_path: Path, backend: StreamingBackend) -> None:
    """A GET through a gateway in front of `backend` (an answer without end): the gateway
    stops reading it long before its end, and never ends the client's answer as if it had
    succeeded."""
    port = await backend.start()
    try:
        cfg = write_config(tmp_path, two_versions(port, port, 100, 0))
        async with running_gateway(cfg) as g:
            reader, writer = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            try:
                writer.write(request("GET", INFER))
                got = b""
                with contextlib.suppress(ConnectionError):
                    while chunk := await asyncio.wait_for(reader.read(65536), 20):
                        got += chunk
            finally:
                writer.close()
    finally:
        await backend.stop()
    assert backend.sent < 16 * 1024 * 1024, f"the gateway read {backend.sent >> 20} MiB"
    assert not got.endswith(b"0\r\n\r\n"), got[-100:]  # never ended as if it succeeded


async def test_an_endless_chunk_extension_from_a_backend_is_cut(tmp_path: Path) -> None:
    """A chunk header's extensions (`5;name=value`) reach no parser callback: the answer's
    trailer section was bounded (64 KiB) but not a chunk header, so a backend could send
    one without end, every byte read and parsed by the event loop until the route's total
    timeout (each read moved the idle one on). Expected: the answer is cut (its head was
    already forwarded: an aborted connection) once the chunk header passes the bound."""
    backend = StreamingBackend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n5;a=",
                               b"b" * 65536, 64 * 1024 * 1024)
    await _cut_before_the_end(tmp_path, backend)


async def test_chunk_extensions_on_tiny_chunks_from_a_backend_are_cut(tmp_path: Path) -> None:
    """Each chunk header of an answer is bounded (64 KiB), but not their number: one byte
    of body per 60 KB header went on until the route's total timeout, every byte read and
    parsed by the event loop, and unlike body bytes never held back by a client that
    reads slowly (they are dropped, not buffered). Expected: the answer is cut once its
    framing is far beyond its body."""
    backend = StreamingBackend(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n",
                               b"1;a=" + b"b" * 60_000 + b"\r\n \r\n", 64 * 1024 * 1024)
    await _cut_before_the_end(tmp_path, backend)
