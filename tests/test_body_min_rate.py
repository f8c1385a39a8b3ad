"""`server.body_min_rate` (Apache's mod_reqtimeout `MinRate`) against a real gateway and real
sockets: a request body read as it streams (chunked, over 64 KiB, 100-continue) had no bound
but the pause between bytes (`body_timeout`) and the route's `timeouts.total` (long on LLM
routes): a client sending a byte just under each pause held its connection, its
`max_inflight` slot and a backend connection that long, and enough of them held the
connection cap. Now, once `body_timeout` has passed, the body must average the minimum
rate (the clock stopped while the gateway does not read), else 408 and the close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path

import pytest

from gateway.configfile import parse_config_text
from gateway.errors import ConfigError
from tests import cli_fork
from tests.backends import RawServer
from tests.conftest import running_gateway, two_versions, write_config

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
URL = b"/v2/models/iris/infer"
HEAD = b"POST " + URL + b" HTTP/1.1\r\nHost: x\r\n"


class BodySink(RawServer):
    """A backend that reads a request's head, waits `stall` seconds before it reads any of
    its body (a backend slow to take it), then reads the body to its end (Content-Length,
    else until its chunked end) and answers 200 with how many bytes it took; `ended` is set
    when a connection ends, `got` holds what the body brought."""

    def __init__(self, stall: float = 0.0) -> None:
        super().__init__()
        self.stall = stall
        self.got = self.connections = 0
        self.ended = asyncio.Event()

    async def start(self) -> int:
        sock = socket.socket()  # (a small receive buffer: a stall reaches the gateway soon)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._client, sock=sock)
        self.port = int(sock.getsockname()[1])
        return self.port

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(self.stall)
            length = None
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length is not None:
                while self.got < length:
                    data = await reader.read(1 << 16)
                    if not data:
                        return
                    self.got += len(data)
            else:
                tail = b""
                while not tail.endswith(b"0\r\n\r\n"):
                    data = await reader.read(1 << 16)
                    if not data:
                        return
                    self.got += len(data)
                    tail = (tail + data)[-5:]
            body = b"%d" % self.got
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()
        finally:
            self.ended.set()


def _config(tmp_path: Path, port: int, server: str) -> Path:
    routes = two_versions(port, port, 100, 0, extra="timeouts: {connect: 1s, total: 60s}\n")
    return write_config(tmp_path, routes, extra=f"server: {{{server}}}\n")


async def _trickle(w: asyncio.StreamWriter, r: asyncio.StreamReader, piece: bytes,
                   every: float, until: float) -> bytes:
    """Send `piece` every `every` seconds until an answer comes or the loop's clock passes
    `until`: what was answered (b"" if nothing)."""
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        with contextlib.suppress(ConnectionError):
            w.write(piece)
        with contextlib.suppress(TimeoutError):
            got = await asyncio.wait_for(r.read(4096), every)
            return got or b"<closed>"
    return b""


FRAMINGS = {
    "chunked": (b"Transfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n"),
    "large": (b"Content-Length: 200000\r\n\r\n", b"x"),
    "100-continue": (b"Content-Length: 200000\r\nExpect: 100-continue\r\n\r\n", b"x"),
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
async def test_a_body_trickling_below_the_minimum_rate_gets_408(
        tmp_path: Path, framing: str, caplog: pytest.LogCaptureFixture) -> None:
    """A byte every 0.2 s (5 B/s), each well within `body_timeout` (0.5 s) of the last, with
    `body_min_rate: 1000`: a 408 about 0.5 s in (the grace), the backend's exchange ended,
    the connection closed, counted by reason, logged once."""
    caplog.set_level(logging.INFO, logger="killgate.protocol")
    backend = BodySink()
    port = await backend.start()
    try:
        cfg = _config(tmp_path, port, "body_timeout: 500ms, body_min_rate: 1000")
        async with running_gateway(cfg) as g:
            loop = asyncio.get_running_loop()
            rest, piece = FRAMINGS[framing]
            r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            w.write(HEAD + rest)
            started = loop.time()
            if framing == "100-continue":
                interim = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
                assert interim.startswith(b"HTTP/1.1 100 ")
            got = await _trickle(w, r, piece, 0.2, started + 2.5)
            took = loop.time() - started
            with contextlib.suppress(TimeoutError, ConnectionError):
                got += await asyncio.wait_for(r.read(), 2)  # the rest: then its close
            w.close()
            assert got.startswith(b"HTTP/1.1 408 "), (
                f"{framing}: a body at 5 B/s (min 1000 B/s) was not cut within 2.5 s: "
                f"{got[:200]!r}")
            assert 0.45 <= took < 1.5, took
            assert b"body_min_rate" in got and b"connection: close" in got.lower(), got
            if framing != "chunked":  # (a chunked body's first 64 KiB come before any
                assert backend.connections == 1  # backend is asked: none was)
                await asyncio.wait_for(backend.ended.wait(), 5)  # its exchange ended
            assert g.gw.metrics.get("killgate_client_body_timeouts_total",
                                    ("min_rate",)) == 1
            assert g.gw.metrics.get("killgate_client_body_timeouts_total",
                                    ("stalled",)) == 0
            slow = [r for r in caplog.records if r.getMessage() == "request_body_too_slow"]
            assert len(slow) == 1 and slow[0].levelno == logging.INFO, caplog.records
    finally:
        await backend.stop()


async def test_a_minimum_rate_of_zero_leaves_a_trickle_alone(tmp_path: Path) -> None:
    """`body_min_rate: 0`: off. The same trickle runs for three times the grace and its
    request is then answered in full."""
    backend = BodySink()
    port = await backend.start()
    try:
        cfg = _config(tmp_path, port, "body_timeout: 500ms, body_min_rate: 0")
        async with running_gateway(cfg) as g:
            loop = asyncio.get_running_loop()
            r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            w.write(HEAD + FRAMINGS["chunked"][0])
            got = await _trickle(w, r, b"1\r\nx\r\n", 0.2, loop.time() + 1.5)
            assert got == b"", got
            w.write(b"0\r\n\r\n")
            answer = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            w.close()
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert g.gw.metrics.get("killgate_client_body_timeouts_total",
                                    ("min_rate",)) == 0
    finally:
        await backend.stop()


async def test_a_healthy_body_held_back_by_a_slow_backend_is_not_cut(tmp_path: Path) -> None:
    """The backend takes none of an 8 MiB body for 2 s: the gateway stops reading the
    client (flow control) and the client, sending as fast as it can, is stalled by us, not
    by its link. That pause is not the client's: the rate's clock stops while we do not
    read. (With `body_min_rate: 8 MiB/s` and a 0.3 s grace, what got through before the
    stall, ~6.5 MB of socket buffers, buys 1.1 s: counted against the client, a 408.)"""
    size = 8 << 20
    backend = BodySink(stall=2.0)
    port = await backend.start()
    try:
        cfg = _config(tmp_path, port, f"body_timeout: 300ms, body_min_rate: {8 << 20}")
        async with running_gateway(cfg) as g:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)  # (few bytes in
            sock.setblocking(False)  # flight: the stall reaches the sender soon)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", g.gw.data_addr[1]))
            r, w = await asyncio.open_connection(sock=sock)
            w.write(HEAD + b"Content-Length: %d\r\n\r\n" % size)
            block = b"y" * (1 << 16)
            for _ in range(size // len(block)):
                w.write(block)
                await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            w.close()
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert backend.got == size
            assert g.gw.metrics.get("killgate_client_body_timeouts_total",
                                    ("min_rate",)) == 0
    finally:
        await backend.stop()


@pytest.mark.parametrize(("value", "why"), [
    ("-1", "must be 0 (off) or a rate in bytes/s"),
    ("1000000000", "must be 0 (off) or a rate in bytes/s"),
    ("fast", "integer"),
    ("1.5", "integer"),
])
def test_a_bad_minimum_rate_is_refused_by_its_path(value: str, why: str) -> None:
    text = (f"server: {{body_min_rate: {value}}}\nroutes:\n  - name: r\n"
            "    match: {path_prefix: /r}\n    stable: v1\n"
            "    versions: [{name: v1, url: 'http://127.0.0.1:1'}]\n")
    with pytest.raises(ConfigError) as refused:
        parse_config_text(text)
    assert [p.path for p in refused.value.problems] == ["server.body_min_rate"]
    assert why in refused.value.problems[0].message


def test_check_accepts_a_minimum_rate_and_refuses_a_bad_one(tmp_path: Path) -> None:
    for value, code in (("2048", 0), ("-5", 1)):
        cfg = write_config(tmp_path, two_versions(1, 1, 100, 0),
                           extra=f"server: {{body_min_rate: {value}}}\n")
        # (forked from a process that imported the CLI: tests/cli_fork.py)
        res = cli_fork.run(["check", str(cfg)], dict(os.environ), str(ROOT), 30)
        assert res.returncode == code, (value, res.stdout, res.stderr)
        if code:
            assert "server.body_min_rate: must be 0 (off)" in res.stderr, res.stderr
            assert "Traceback" not in res.stderr


async def test_a_pause_before_a_pipelined_bodys_clock_started_is_not_credited(
        tmp_path: Path) -> None:
    """One read brings a small request A, then B's head and the start of its body: reading
    pauses (B queues behind A) with B's body bytes held. A's backend takes 1.5 s; then B's
    rate clock starts, and when reading resumed the whole pause, begun 1.5 s before that
    clock, was credited to B: a trickling B was cut 1.5 s late. Found by review (impleft
    item 3); failed before: the 408 came about 2.1 s after A's answer, not 0.6 s."""
    backend = BodySink(stall=1.5)
    port = await backend.start()
    try:
        cfg = _config(tmp_path, port, "body_timeout: 500ms, body_min_rate: 100000")
        async with running_gateway(cfg) as g:
            loop = asyncio.get_running_loop()
            r, w = await asyncio.open_connection("127.0.0.1", g.gw.data_addr[1])
            first = HEAD + b"Content-Length: 1\r\n\r\nx"
            w.write(first + HEAD + b"Content-Length: 200000\r\n\r\n" + b"x" * 8000)
            answer = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert await asyncio.wait_for(r.readexactly(1), 5) == b"1"  # (A's 1 byte)
            started = loop.time()
            got = await _trickle(w, r, b"x", 0.2, started + 4)
            took = loop.time() - started
            w.close()
            assert b"HTTP/1.1 408 " in got, got[:300]
            assert took < 1.3, took
    finally:
        await backend.stop()
