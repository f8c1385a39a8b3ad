"""The per-client connection cap (RELIABILITY row 37): dataplane/peercap.py alone, and the
listener and our protocol with fake transports (every way a connection ends gives its slot
back).

The hostile review's finding (tests/test_review_conncap.py on the `review` branch): one
address holding all of `server.max_connections` locked every other client out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.peercap import PeerCap
from gateway.dataplane.protocol import HttpProtocol
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
    # the global cap still comes first, with its own reason
    small = Listener(h, LIMITS, 1, counts.append, max_per_client=1)
    accept(small, "10.0.0.1")
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
    lst = Listener(Recorder(), LIMITS, 10)
    assert lst.per_client is None and lst.forget == lst._forget
    conns = [accept(lst, "10.0.0.1") for _ in range(10)]
    assert not any(tr.aborted for _, tr in conns) and len(lst.connections) == 10
    conns[0][0].abort()
    await until(lambda: len(lst.connections) == 9)
