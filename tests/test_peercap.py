"""The per-client connection cap (`server.max_connections_per_client`, RELIABILITY row 37):
dataplane/peercap.py alone, the listener and our protocol with fake transports (every way a
connection ends gives its slot back), and real `killgate serve` processes with clients from
127.0.0.1 and 127.0.0.2 (Linux routes all of 127/8 to lo).

A hostile review's finding: one address holding all of `server.max_connections`
locked every other client out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ServerConfig
from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.peercap import PeerCap
from gateway.dataplane.protocol import HttpProtocol
from tests import cli_fork
from tests.backends import echo_app
from tests.conftest import GatewayProcess, free_port, two_versions, wait_until, write_config
from tests.rawhttp import exchange
from tests.test_protocol import FakeTransport, Recorder, answer, feed, until

pytestmark = pytest.mark.timeout(60)

# --------------------------------------------------------------------------- the count alone


def test_an_address_is_admitted_up_to_its_cap_and_forgotten_at_zero() -> None:
    cap = PeerCap(2)
    assert [cap.admit("a"), cap.admit("a"), cap.admit("a"), cap.admit("b")] == [
        True, True, False, True]
    assert cap.open == {"a": 2, "b": 1}  # a refusal counts nothing
    cap.release("a")
    assert cap.admit("a") and not cap.admit("a")
    for _ in range(2):
        cap.release("a")
    cap.release("b")
    assert cap.open == {}  # nothing kept for an address with no connection
    cap.release("b")  # (a release too many takes nothing below zero)
    assert cap.open == {} and cap.admit("b")
    with pytest.raises(ValueError):
        PeerCap(0)


# --------------------------------------------------------------------------- listener, in process


class PeerTransport(FakeTransport):
    """A fake transport whose peer is `host`."""

    def __init__(self, proto: HttpProtocol, host: str) -> None:
        super().__init__(proto)
        self.host = host

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.host, 40000) if name == "peername" else default


LIMITS = Limits(header_timeout=0.3, keepalive_timeout=5.0, body_timeout=0.3, send_timeout=0.3)


def accept(listener: Listener, host: str) -> tuple[HttpProtocol, PeerTransport]:
    proto = HttpProtocol(listener, asyncio.get_running_loop())
    tr = PeerTransport(proto, host)
    proto.connection_made(tr)
    return proto, tr


async def test_an_address_at_its_cap_is_refused_while_another_is_served() -> None:
    counts: list[str] = []
    h = Recorder()
    lst = Listener(h, LIMITS, 10, counts.append, max_per_client=2)
    held = [accept(lst, "10.0.0.1") for _ in range(2)]
    _, refused = accept(lst, "10.0.0.1")
    assert refused.aborted and counts == ["refused_per_client"]
    other, tr = accept(lst, "10.0.0.2")
    feed(other, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert tr.out.startswith(b"HTTP/1.1 200") and not tr.closed
    await asyncio.sleep(0)  # (the refused one's connection_lost: it gives back nothing)
    assert lst.per_client is not None
    assert lst.per_client.open == {"10.0.0.1": 2, "10.0.0.2": 1}
    assert len(lst.connections) == 3 and all(p in lst.connections for p, _ in held)
    # the global cap still comes first, with its own reason (a request in progress on
    # the one connection it allows: an idle one would make room, tests/test_listener_room)
    small = Listener(Recorder(answer_now=False), LIMITS, 1, counts.append, max_per_client=1)
    busy, _ = accept(small, "10.0.0.1")
    feed(busy, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    _, over = accept(small, "10.0.0.2")
    assert over.aborted and counts[-1] == "refused"


async def test_every_way_a_connection_ends_gives_its_slot_back() -> None:
    h = Recorder(answer_now=False)
    lst = Listener(h, LIMITS, 10, max_per_client=4)
    cap = lst.per_client
    assert cap is not None
    answered, _ = accept(lst, "10.0.0.1")
    aborted, _ = accept(lst, "10.0.0.1")
    idle, _ = accept(lst, "10.0.0.1")      # sends nothing: the header deadline closes it
    busy, busy_tr = accept(lst, "10.0.0.1")  # drained once its answer is written
    assert accept(lst, "10.0.0.1")[1].aborted  # the fifth: refused
    # a normal close: the answer to a `Connection: close` request
    feed(answered, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer(h.seen[-1])
    await until(lambda: cap.open["10.0.0.1"] == 3)
    aborted.abort()
    await until(lambda: cap.open["10.0.0.1"] == 2)
    feed(busy, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: cap.open["10.0.0.1"] == 1)  # the idle one timed out
    assert idle.closed and not busy.closed
    assert accept(lst, "10.0.0.1")[0] in lst.connections  # a slot given back is usable
    drained = asyncio.ensure_future(lst.shutdown(3.0))
    await asyncio.sleep(0)  # (the drain began: idle ones closed, `busy` closes after its answer)
    answer(h.seen[-1])
    assert await drained  # every connection closed on its own
    assert cap.open == {} and not lst.connections and busy_tr.closed


async def test_off_by_default_and_then_nothing_is_counted() -> None:
    assert ServerConfig().max_connections_per_client == 0
    lst = Listener(Recorder(), LIMITS, 10)
    assert lst.per_client is None and lst.forget == lst._forget
    conns = [accept(lst, "10.0.0.1") for _ in range(10)]
    assert not any(tr.aborted for _, tr in conns) and len(lst.connections) == 10
    conns[0][0].abort()
    await until(lambda: len(lst.connections) == 9)


# --------------------------------------------------------------------------- killgate serve


def _second_loopback() -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.2", 0))
        except OSError:
            return False
    return True


needs_lo = pytest.mark.skipif(not _second_loopback(),
                              reason="127.0.0.2 is not a local address here (Linux has 127/8)")

GET = b"GET /v2/models/iris/x HTTP/1.1\r\nHost: x\r\n\r\n"


async def _open(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bytes:
    """Send a GET on the connection, read its answer's status line (b"" when the gateway
    closed the connection instead: refused at accept)."""
    try:
        w.write(GET)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    except (asyncio.IncompleteReadError, ConnectionError):
        return b""
    n = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    await asyncio.wait_for(r.readexactly(n), 5)
    return head.split(b"\r\n", 1)[0]


async def _close(*writers: asyncio.StreamWriter) -> None:
    for w in writers:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()


async def _refused(gw: GatewayProcess, reason: str) -> float:
    _, _, body = await exchange(gw.admin_port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
                                               b"Connection: close\r\n\r\n")
    m = re.search(rb'^killgate_connections_refused_total\{reason="%s"\} (\S+)$'
                  % reason.encode(), body, re.M)
    return float(m.group(1)) if m else 0.0


def _serve(tmp_path: Path, gateway_procs: Any, port: int, server: str) -> GatewayProcess:
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       listen=f"127.0.0.1:{free_port()}", admin=f"127.0.0.1:{free_port()}",
                       extra=server)
    gw: GatewayProcess = gateway_procs(cfg)
    gw.wait_ready()
    return gw


@needs_lo
async def test_one_address_at_its_cap_does_not_lock_out_the_others(
        tmp_path: Path, backends, gateway_procs) -> None:
    """The review's attack with the cap on: one address opens every connection the gateway
    allows and holds them. Beyond its 4 it is refused at accept, so the address 127.0.0.2
    is still served; a slot its address gives back (a connection closed) is usable again."""
    port = await backends(echo_app("v1"))
    gw = _serve(tmp_path, gateway_procs, port,
                "server: {max_connections: 8, max_connections_per_client: 4}\n")
    held = [await _open(gw.data_port, "127.0.0.1") for _ in range(4)]
    over: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for r, w in held:  # each answered, then held open (keep-alive)
            assert await _answer(r, w) == b"HTTP/1.1 200 OK"
        over = [await _open(gw.data_port, "127.0.0.1") for _ in range(4)]
        assert [await _answer(r, w) for r, w in over] == [b""] * 4  # closed at accept
        r2, w2 = await _open(gw.data_port, "127.0.0.2")
        assert await _answer(r2, w2) == b"HTTP/1.1 200 OK"
        await _close(w2)
        assert await _refused(gw, "per_client") == 4
        assert await _refused(gw, "connections") == 0
        # give two back: 127.0.0.1 is served again (once the gateway has seen them close)
        await _close(held[0][1], held[1][1])

        async def served_again() -> bool:
            r, w = await _open(gw.data_port, "127.0.0.1")
            try:
                return await _answer(r, w) == b"HTTP/1.1 200 OK"
            finally:
                await _close(w)

        await wait_until(served_again, timeout=10, interval=0.05, what="a slot given back")
    finally:
        await _close(*(w for _, w in held + over))
    assert gw.stop() == 0


@needs_lo
async def test_without_the_option_one_address_may_open_every_connection(
        tmp_path: Path, backends, gateway_procs) -> None:
    """Off by default (a gateway behind a load balancer or NAT sees every client as one
    address): one address is served up to `max_connections`; beyond, connections it holds
    idle make room for others' (tests/test_overload.py), for every address alike."""
    port = await backends(echo_app("v1"))
    gw = _serve(tmp_path, gateway_procs, port, "server: {max_connections: 6}\n")
    held = [await _open(gw.data_port, "127.0.0.1") for _ in range(6)]
    try:
        assert [await _answer(r, w) for r, w in held] == [b"HTTP/1.1 200 OK"] * 6
        r2, w2 = await _open(gw.data_port, "127.0.0.2")
        assert await _answer(r2, w2) == b"HTTP/1.1 200 OK"  # an idle one of .1 made room
        await _close(w2)
        assert await _refused(gw, "connections") == 0
        assert await _refused(gw, "per_client") == 0
    finally:
        await _close(*(w for _, w in held))
    assert gw.stop() == 0


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(("server", "line"), [
    ("{max_connections_per_client: -1}", "server.max_connections_per_client: must be >= 0"),
    ("{max_connections: 8, max_connections_per_client: 9}",
     "server.max_connections_per_client: must be <= server.max_connections (8), "
     "or 0 for no per-client cap"),
])
def test_killgate_check_refuses_a_bad_per_client_cap(tmp_path: Path, server: str,
                                                      line: str) -> None:
    cfg = write_config(tmp_path, two_versions(9101, 9102), extra=f"server: {server}\n")
    # (forked from a process that imported the CLI: tests/cli_fork.py)
    res = cli_fork.run(["check", str(cfg)], dict(os.environ), os.getcwd(), 30)
    assert res.returncode == 1
    assert line in res.stderr.splitlines(), res.stderr


async def test_a_client_at_its_cap_makes_no_room_at_the_global_cap() -> None:
    """(hostile review of 11865f9) At `max_connections`, a new connection makes room by
    closing an idle one; from an address already at its own cap it is refused anyway, so
    it must close nothing: before, each such connect closed another client's idle
    connection, and one address at its cap could empty every idle keep-alive of the
    others for nothing."""
    counts: list[str] = []
    h = Recorder(answer_now=False)
    lst = Listener(h, LIMITS, 4, counts.append, max_per_client=2)
    others = [accept(lst, "10.0.0.2")[0], accept(lst, "10.0.0.3")[0]]  # idle
    for _ in range(2):  # the client at its cap: requests in progress
        busy, _ = accept(lst, "10.0.0.1")
        feed(busy, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    _, refused = accept(lst, "10.0.0.1")
    assert refused.aborted and counts == ["refused_per_client"]
    await asyncio.sleep(0)
    assert all(p in lst.connections and not p.closed for p in others)
    assert lst.per_client is not None and lst.per_client.open["10.0.0.1"] == 2
