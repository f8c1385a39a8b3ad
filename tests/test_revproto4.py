"""Hostile review of the data plane, fourth pass (revproto4): bytes HTTP/1.1 allows that
Python reads differently from llhttp, from a client and from a backend, against a real
in-process gateway and a raw backend. (Each failed before its fix.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest

from tests.backends import RawServer
from tests.conftest import running_gateway, two_versions, write_config
from tests.rawhttp import read_answer

pytestmark = pytest.mark.timeout(30)

INFER = "/v2/models/iris/infer"
#: a Content-Length of 5001 digits that llhttp reads as 5 (leading zeros: RFC 9110 §8.6
#: is 1*DIGIT), past Python's int() limit of 4300 digits
LONG_FIVE = b"0" * 5000 + b"5"


class Scripted(RawServer):
    """A keep-alive backend answering each request by its path's last segment
    (`answers[segment]`, raw bytes), else a short 200 'good'; it reads each request's
    Content-Length body (digits, leading zeros allowed) before answering."""

    def __init__(self, answers: dict[bytes, bytes]) -> None:
        super().__init__()
        self.answers = answers
        self.bodies: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip().lstrip(b"0") or b"0")
            self.bodies.append(await reader.readexactly(length) if length else b"")
            target = head.split(b" ", 2)[1]
            writer.write(self.answers.get(target.rsplit(b"/", 1)[-1],
                                          b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"))
            await writer.drain()


@contextlib.asynccontextmanager
async def _rig(tmp_path: Path, answers: dict[bytes, bytes]):
    backend = Scripted(answers)
    port = await backend.start()
    try:
        async with running_gateway(write_config(tmp_path, two_versions(port, port, 100, 0))) as g:
            yield g.gw.data_addr[1], backend
    finally:
        await backend.stop()


async def _ask(port: int, payload: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await read_answer(reader)
    finally:
        writer.close()


async def test_a_content_length_of_thousands_of_digits_is_its_value(tmp_path: Path) -> None:
    """`Content-Length: 000…0005` (5001 digits) is a valid length that llhttp frames as 5,
    but the gateway read it with int(), which refuses more than 4300 digits: a client's
    request got 400 'malformed request: User callback error' (nothing it can act on), and a
    backend's answer became 502 'malformed response from backend'. Both are now the
    length llhttp framed."""
    answers = {b"long": b"HTTP/1.1 200 OK\r\nContent-Length: " + LONG_FIVE + b"\r\n\r\nhello"}
    async with _rig(tmp_path, answers) as (port, backend):
        status, _, body = await _ask(port, f"GET {INFER}/long HTTP/1.1\r\nHost: x\r\n\r\n"
                                     .encode())
        assert (status, body) == (200, b"hello"), (status, body)
        status, _, body = await _ask(port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\n"
                                     .encode() + b"Content-Length: " + LONG_FIVE
                                     + b"\r\n\r\nhello")
        assert (status, body) == (200, b"good"), (status, body)
        assert backend.bodies[-1] == b"hello"


class _Broken(dict[bytes, int]):
    """A field-name table whose lookup of a new name fails: a bug of ours in a parser
    callback, standing in for the int() one above (a fault injected, as a drill does)."""

    def __missing__(self, name: bytes) -> int:
        raise RuntimeError("a bug in a parser callback")


async def test_a_parser_callback_that_fails_is_the_gateways_error_and_is_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A callback of ours that raised (the int() above was one) became 400 'malformed
    request: User callback error': the client was told its valid request was malformed,
    and nothing was logged or counted, so the operator never learned of the bug. It is now
    a 500 of ours, logged with its traceback and counted as internal_error, as a failure in
    the proxy's handler already is."""
    from gateway.dataplane import parsing
    from tests.test_protocol import Recorder, connect

    monkeypatch.setattr(parsing, "NAMES", _Broken())
    proto, tr, server = connect(Recorder())
    with caplog.at_level(logging.ERROR, logger="killgate.protocol"):
        proto.data_received(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    out = bytes(tr.out)
    assert out.startswith(b"HTTP/1.1 500 "), out
    assert b"User callback error" not in out and b"the gateway failed" in out, out
    assert "internal_error" in server.counts, server.counts
    failed = [r for r in caplog.records if r.getMessage() == "request_parse_failed"]
    assert failed and failed[0].exc_info and "a bug in a parser callback" in str(
        failed[0].exc_info[1]), caplog.records


async def test_an_answer_parser_callback_that_fails_is_logged(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The same on a backend's answer: a callback of ours that raised was only a 502
    'malformed response from backend: User callback error', counted against a healthy
    backend (failovers, its error-rate alerts), and never logged. It is logged now."""
    from gateway.dataplane import answerparsing
    from gateway.dataplane.exchange import Exchange
    from gateway.dataplane.upstream import Pool
    from tests.test_exchange_reuse import Sink, Transport

    def broken(name: bytes) -> int:
        raise RuntimeError("a bug in an answer callback")

    monkeypatch.setattr(answerparsing, "answer_field", broken)
    loop = asyncio.get_running_loop()
    pool = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    ex = Exchange(pool)
    ex.connection_made(Transport())
    pool.open = 1
    ex.begin_drive(Sink(), b"GET / HTTP/1.1\r\n\r\n", loop.time() + 5, 5, False)
    with caplog.at_level(logging.ERROR, logger="killgate.upstream"):
        ex.data_received(b"HTTP/1.1 200 OK\r\nX-Never-Seen-Revproto4: 1\r\n"
                         b"Content-Length: 2\r\n\r\n{}")
    assert ex.error is not None, "the exchange should fail"
    failed = [r for r in caplog.records if r.getMessage() == "answer_parse_failed"]
    assert failed and failed[0].exc_info and "a bug in an answer callback" in str(
        failed[0].exc_info[1]), caplog.records
    ex.detach()
    ex.release()
