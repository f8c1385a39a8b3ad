"""The proxy starts the last finished request's flight again for the next routed request
(`Proxy._route`, `Finish.done`: an object fewer a request), but only one nothing refers to
any more. Driven as the fast path runs it, without sockets: a connection and a pooled
backend connection on fake transports, a request and its answer fed as bytes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.configfile import load_config
from gateway.control.table import TableHolder
from gateway.dataplane.clock import Clock
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.flight import Flight
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.protocol import HttpProtocol
from gateway.dataplane.proxy import Proxy
from gateway.dataplane.request import Request
from gateway.dataplane.upstream import Upstreams
from gateway.telemetry.metrics import Metrics

pytestmark = pytest.mark.timeout(30)

REQUEST = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Sink(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()

    def write(self, data: Any) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_closing(self) -> bool:
        return False

    def close(self) -> None: ...

    def abort(self) -> None: ...


@dataclass
class _Rig:
    proxy: Proxy
    upstreams: Upstreams
    backend: Exchange  # the pool's one kept-alive connection (its writes in `sent`)
    sent: Sink
    conn: HttpProtocol  # a client's connection (its answers in `client`)
    client: Sink


def _rig(tmp_path: Path, version: str = "") -> _Rig:
    """A proxy of one route (`version`: more of its v1's fields) with one kept-alive backend
    connection in its pool and one client connection, all on fake transports."""
    cfg = tmp_path / "killgate.yaml"
    cfg.write_text(f"""listen: 127.0.0.1:0
admin: {{listen: 127.0.0.1:0}}
state: {{backend: local, path: {tmp_path}/store.json, snapshot_path: {tmp_path}/snap.json}}
routes:
  - name: r
    match: {{path_prefix: /}}
    stable: v1
    versions:
      - {{name: v1, url: "http://127.0.0.1:9", {version}weight: 100}}
""")
    loop = asyncio.get_running_loop()
    clock = Clock()
    upstreams = Upstreams(256, 1024, clock)
    proxy = Proxy(TableHolder(load_config(cfg)), upstreams, Inflight(), Metrics(), 1 << 20,
                  1 << 16)
    backend = Exchange(upstreams.pool(("http", "127.0.0.1", 9)))
    sent = Sink()
    backend.connection_made(sent)
    backend.keep_alive = True  # (as after a kept-alive answer: the pool hands it out)
    backend.pooled_at = loop.time()
    pool = upstreams.pool(("http", "127.0.0.1", 9))
    pool.open = 1
    pool.idle.append(backend)
    client = Sink()
    conn = HttpProtocol(Listener(proxy, Limits(), 100, clock=clock), loop)
    conn.connection_made(client)
    return _Rig(proxy, upstreams, backend, sent, conn, client)


async def test_a_flight_is_started_again_only_when_nothing_refers_to_it(tmp_path: Path) -> None:
    rig = _rig(tmp_path)
    proxy, upstreams, backend, conn, client = (rig.proxy, rig.upstreams, rig.backend,
                                               rig.conn, rig.client)

    def one() -> int:
        """A request and its answer: the id of the flight that carried it (the proxy's
        spare now; an id, not a reference, which would keep it from being started again)."""
        conn.data_received(REQUEST)
        backend.data_received(ANSWER)
        assert client.out.endswith(b"\r\n\r\nok")
        assert proxy.inflight.count == 0
        return id(proxy._spare)

    try:
        assert proxy._spare.req is None  # (a connection reads it before any request)
        first = one()
        assert one() == first  # nothing refers to it: started again
        kept: Flight | None = proxy._spare  # (one more reference, as a task, a kill or the
        second = one()  # in-flight set holds: a new flight carries the next request)
        assert second != first and kept is not None and id(kept) == first
        kept = None
        assert one() == second  # (the spare is the second's now)
        assert one() == second
        assert client.out.count(b"HTTP/1.1 200 OK\r\n") == 5
    finally:
        await upstreams.close()


async def test_a_request_is_begun_again_only_when_nothing_refers_to_it(tmp_path: Path) -> None:
    """The connection begins its next request in the last routed one (parsing.py) only when
    nothing refers to it but the spare flight, and nothing to that flight: a holder of
    either (a task, a span's view, a kill) reads it as it was."""
    rig = _rig(tmp_path)
    proxy, upstreams, backend, conn, client = (rig.proxy, rig.upstreams, rig.backend,
                                               rig.conn, rig.client)
    assert conn.spares is proxy

    def one(target: bytes = b"/v2/models/m/infer") -> int:
        """A request and its answer: the id of the request object that carried it."""
        conn.data_received(REQUEST.replace(b"/v2/models/m/infer", target))
        backend.data_received(ANSWER)
        assert client.out.endswith(b"\r\n\r\nok")
        assert proxy.inflight.count == 0
        req = proxy._spare.req
        assert isinstance(req, Request)
        return id(req)

    try:
        first = one()
        assert one() == first  # nothing refers to it: begun again
        held: Request | None = proxy._spare.req  # (a reference, as a span's view holds)
        second = one(b"/b")
        assert second != first and held is not None and id(held) == first
        assert held.target == b"/v2/models/m/infer"  # (read as it was)
        held = None
        assert one() == second
        flight: Flight | None = proxy._spare  # the flight held (a task, a kill), not the
        third = one(b"/c")  # request: its `req` is read through it as it was
        assert third != second and flight is not None and id(flight.req) == second
        assert flight.req.target == b"/v2/models/m/infer"
        flight = None
        assert one() == third
        assert client.out.count(b"HTTP/1.1 200 OK\r\n") == 6
    finally:
        await upstreams.close()


async def test_the_model_peek_path_starts_a_free_flight_again(tmp_path: Path) -> None:
    """`Proxy._chosen` (a version chosen before the body's `model` is read, to rewrite it)
    starts the spare flight again as `_route` does, and a new one when it is referred to."""
    body = b'{"model":"m","x":1}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: h\r\nContent-Type: "
               b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    rig = _rig(tmp_path, "model: served-m, ")
    proxy, upstreams, backend, conn, client, sent = (rig.proxy, rig.upstreams, rig.backend,
                                                     rig.conn, rig.client, rig.sent)

    def one() -> int:
        conn.data_received(request)
        backend.data_received(ANSWER)
        assert client.out.endswith(b"\r\n\r\nok"), bytes(client.out[-300:])
        assert proxy.inflight.count == 0
        return id(proxy._spare)

    try:
        first = one()
        assert b'"model":"served-m"' in sent.out  # (the model peek's path: rewritten)
        assert one() == first
        kept: Flight | None = proxy._spare
        second = one()
        assert second != first and kept is not None and id(kept) == first
        kept = None
        assert one() == second
        assert client.out.count(b"HTTP/1.1 200 OK\r\n") == 4
    finally:
        await upstreams.close()
