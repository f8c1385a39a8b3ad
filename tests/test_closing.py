"""How a data-plane connection ends (gateway/dataplane/closing.py), without sockets: a
connection the gateway ends while the client may still be sending lingers (our side ended,
what comes read and dropped) until the client ends its side, goes quiet, or `linger_time`
passes; one whose request came whole, or whose client was too slow, closes at once. The
same through real sockets with `http.client`, which sends a whole body before it reads
(from the seventh hostile review: the reset over the unread body destroyed the answer)."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

import pytest

from gateway.dataplane.protocol import DRAIN_FRESH_GRACE
from gateway.dataplane.wire import Limits
from tests.backends import echo_app
from tests.conftest import running_gateway, two_versions, write_config
from tests.test_protocol import GET, Recorder, answer, connect, feed, until

pytestmark = pytest.mark.timeout(60)

FAST = Limits(header_timeout=5, keepalive_timeout=5, body_timeout=0.3, send_timeout=5,
              linger_timeout=0.2, linger_time=0.6)
BIG_POST = b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"


async def _answered_before_its_body() -> tuple:
    """A connection whose large request was answered before its body was read."""
    h = Recorder(answer_now=False)
    proto, tr, server = connect(h, limits=FAST)
    feed(proto, BIG_POST + b"x" * 10)
    answer(h.seen[0], b"no")
    await until(lambda: tr.eof)
    return proto, tr, server


async def test_an_answer_before_the_body_ends_our_side_and_drops_what_follows() -> None:
    proto, tr, server = await _answered_before_its_body()
    sent = bytes(tr.out)
    assert sent.startswith(b"HTTP/1.1 200 ") and b"connection: close" in sent
    assert not tr.closed and proto in server.connections  # still counted
    feed(proto, b"x" * 50000 + GET)  # the body's rest, and a request after it: dropped
    assert bytes(tr.out) == sent
    assert proto.eof_received() is False  # the client's end: the transport closes
    tr.close()
    await until(lambda: proto not in server.connections)


async def test_a_lingering_connection_closes_when_the_client_goes_quiet() -> None:
    proto, tr, _ = await _answered_before_its_body()
    start = asyncio.get_running_loop().time()
    feed(proto, b"x" * 1000)
    await until(lambda: tr.closed)
    took = asyncio.get_running_loop().time() - start
    assert 0.2 <= took < 0.6 + 0.3, took  # one quiet linger_timeout after the last bytes
    assert not tr.aborted


async def test_a_client_that_never_stops_sending_is_closed_at_linger_time() -> None:
    proto, tr, _ = await _answered_before_its_body()
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not tr.closed:
        assert loop.time() - start < 3, "still lingering"
        feed(proto, b"x" * 100)  # more often than linger_timeout
        await asyncio.sleep(0.05)
    assert 0.6 <= loop.time() - start < 0.6 + 0.3


async def test_a_client_that_takes_nothing_is_aborted_when_the_linger_ends() -> None:
    """A client that neither reads our answer nor ends its side: closing would wait for
    the answer to be taken, for ever; the linger's end aborts it."""
    _, tr, _ = await _answered_before_its_body()
    tr.unsent = 4096
    await until(lambda: tr.closed)
    assert tr.aborted


async def test_a_drain_that_ends_aborts_a_lingering_connection() -> None:
    proto, tr, _ = await _answered_before_its_body()
    proto.shutdown()  # the listener's drain: nothing more to wait for here
    assert not tr.closed
    proto.abort()  # the drain's timeout
    assert tr.aborted


async def test_a_drain_answers_a_half_read_head_then_closes_without_a_linger() -> None:
    """A request half received when the drain begins is in progress: read, answered
    (`Connection: close`) and closed, with no linger (it was read whole). It was closed at
    once, under the request its client had begun to send (the lifecycle review)."""
    h = Recorder()
    proto, tr, server = connect(h, limits=FAST)
    feed(proto, b"GET /a HTTP/1.1\r\nHost: x\r\n")  # the head is not over
    server.draining = server.winding_down = True
    proto.shutdown()
    assert not tr.closed
    feed(proto, b"x-more: 1\r\n\r\n")
    await until(lambda: tr.closed)
    assert tr.out.startswith(b"HTTP/1.1 200 ") and b"connection: close" in tr.out
    assert not tr.eof


async def test_a_drain_ends_a_half_read_head_at_its_header_deadline() -> None:
    """A head that never completes is not waited for past its deadline (nothing was
    answered on it: no linger either)."""
    h = Recorder()
    proto, tr, server = connect(h, limits=Limits(header_timeout=0.3, linger_timeout=5,
                                                 linger_time=10))
    feed(proto, b"GET /a HTTP/1.1\r\nHost: x\r\n")
    server.draining = server.winding_down = True
    proto.shutdown()
    await until(lambda: tr.closed)
    assert tr.out == b"" and not tr.eof and h.seen == []


async def test_a_drain_gives_a_connection_that_sent_nothing_a_grace_to_begin() -> None:
    """A connection with no request yet was opened to send one: its request, begun within
    DRAIN_FRESH_GRACE, is its last (answered with `Connection: close`); one that stays
    silent is closed at the end of the grace."""
    h = Recorder()
    proto, tr, server = connect(h, limits=FAST)
    server.draining = server.winding_down = True
    proto.shutdown()
    assert not tr.closed
    feed(proto, GET)
    await until(lambda: tr.closed)
    assert tr.out.startswith(b"HTTP/1.1 200 ") and b"connection: close" in tr.out

    silent, str_, _ = connect(h, limits=FAST)
    loop = asyncio.get_running_loop()
    start = loop.time()
    silent.shutdown()
    await until(lambda: str_.closed, timeout=DRAIN_FRESH_GRACE + 2)
    assert loop.time() - start >= DRAIN_FRESH_GRACE - 0.05 and str_.out == b""


async def test_a_drain_closes_a_connection_idle_between_requests_at_once() -> None:
    h = Recorder()
    proto, tr, server = connect(h, limits=FAST)
    feed(proto, GET)
    await until(lambda: b" 200 " in tr.out)
    server.draining = server.winding_down = True
    proto.shutdown()
    await until(lambda: tr.closed, timeout=0.5)
    assert not tr.eof


async def test_a_connection_already_aborted_does_not_linger() -> None:
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h, limits=FAST)
    feed(proto, BIG_POST + b"x" * 10)
    proto.abort()  # (the answer failed half-way, say)
    proto.close()  # then its end: nothing to linger for, no write_eof on a closed handle
    assert tr.aborted and not tr.eof


async def test_a_request_read_whole_closes_at_once() -> None:
    h = Recorder()
    proto, tr, _ = connect(h, limits=FAST)
    feed(proto, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await until(lambda: tr.closed)
    assert not tr.eof and b" 200 " in tr.out


async def test_a_body_too_slow_gets_408_and_no_linger() -> None:
    """A client that stalled past the body deadline is not waited for again."""
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h, limits=FAST)
    feed(proto, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    await until(lambda: tr.closed)
    assert tr.out.startswith(b"HTTP/1.1 408 ") and not tr.eof


def _send_then_read(port: int, path: str, length: int) -> object:
    """What `http.client` (and so `requests`) does: send the whole request, then read the
    answer. Its status, or the error that stopped it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", path, body=b"x" * length,
                     headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    except OSError as exc:
        return exc
    finally:
        conn.close()


@pytest.mark.parametrize(("path", "length", "status"), [
    ("/v2/models/iris/infer", 16 * 1024 * 1024, 413),  # over server.max_body_size (10 MiB)
    ("/nowhere", 8 * 1024 * 1024, 404),  # no route (a body under the limit)
])
async def test_an_answer_given_before_the_body_is_read_reaches_the_client(
        tmp_path: Path, backends, path: str, length: int, status: int) -> None:
    """The gateway answers these at their head and ends the connection with the body still
    arriving: without a linger the kernel resets the connection over the unread bytes,
    and `http.client` gets a broken pipe or a reset instead of the answer."""
    port = await backends(echo_app("v1"))
    loop = asyncio.get_running_loop()
    cfg = write_config(tmp_path, two_versions(port, port, 100, 0),
                       extra="server: {max_body_size: 10485760}\n")
    async with running_gateway(cfg) as g:
        results = [await loop.run_in_executor(None, _send_then_read, g.gw.data_addr[1], path,
                                              length) for _ in range(5)]
        await until(lambda: not g.gw._listener.connections, 10)  # (each client's end)
    lost = [r for r in results if r != status]
    assert not lost, f"{len(lost)} of 5 clients did not read the {status}: {lost}"
