"""dataplane/protocol.py without sockets: a fake transport, fragmented bytes, a fake handler.

The connection's own rules, apart from the proxy: framing and limits, answers in request
order, 100-continue, flow control both ways, the deadlines, refusals that close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gateway.dataplane.clock import Clock
from gateway.dataplane.protocol import (
    MAX_HEAD,
    MAX_HEADERS,
    SLICE,
    HttpProtocol,
    Limits,
    c_parser,
)
from gateway.dataplane.request import BadBody, BodyTimeout, Request


class FakeTransport(asyncio.Transport):
    def __init__(self, proto: HttpProtocol) -> None:
        super().__init__()
        self.proto = proto
        self.out = bytearray()
        self.paused = False
        self.closed = False
        self.aborted = False
        self.eof = False  # our side ended (`write_eof`): the connection lingers

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        assert not self.eof, "write after write_eof"
        self.out += data

    def write_eof(self) -> None:
        self.eof = True

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self.unsent

    unsent = 0  # what a test says the client has not taken

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.proto.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default


class FakeServer:
    def __init__(self, handler: Any, limits: Limits | None = None, max_connections: int = 10):
        self.handler = handler
        self.clock = Clock()
        self.limits = limits or Limits(header_timeout=0.3, keepalive_timeout=0.6,
                                       body_timeout=0.3, send_timeout=0.3)
        self.connections: set[HttpProtocol] = set()
        self.max_connections = max_connections
        self.per_client = None  # (the per-client cap: tests/test_peercap.py)
        self.draining = False
        self.winding_down = False
        self.counts: list[str] = []

    def counted(self, what: str) -> None:
        self.counts.append(what)

    def full(self) -> bool:  # (making room at the cap: tests/test_listener_room.py)
        return True

    def forget(self, conn: HttpProtocol) -> None:
        self.connections.discard(conn)


class Recorder:
    """A handler that answers each request with its method and target, now or on demand."""

    def __init__(self, answer_now: bool = True) -> None:
        self.answer_now = answer_now
        self.seen: list[Request] = []
        self.gone_: list[Request] = []
        self.done_: list[Request] = []

    def handle(self, req: Request) -> None:
        self.seen.append(req)
        if not self.answer_now:
            return
        if req.body_done:
            answer(req)
            return

        async def read_then_answer() -> None:  # a streamed body: read it, then answer
            body = b"".join([chunk async for chunk in req.rest(0, 1 << 20)])
            answer(req, req.method + b" " + req.target + b" " + body)

        asyncio.get_running_loop().create_task(read_then_answer())

    def gone(self, req: Request) -> None:
        self.gone_.append(req)

    def done(self, req: Request) -> None:
        self.done_.append(req)


def answer(req: Request, body: bytes | None = None) -> None:
    body = body if body is not None else req.method + b" " + req.target + b" " + req.body()
    conn = b"" if req.will_keep_alive() else b"connection: close\r\n"
    req.respond(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), conn, body))


def connect(handler: Any, **kw: Any) -> tuple[HttpProtocol, FakeTransport, FakeServer]:
    server = FakeServer(handler, **kw)
    proto = HttpProtocol(server, asyncio.get_running_loop())  # type: ignore[arg-type]
    tr = FakeTransport(proto)
    proto.connection_made(tr)
    return proto, tr, server


def feed(proto: HttpProtocol, data: bytes, step: int = 0) -> None:
    if not step:
        proto.data_received(data)
        return
    for i in range(0, len(data), step):
        proto.data_received(data[i:i + step])


def answers(out: bytes | bytearray) -> list[bytes]:
    """The bodies of the answers in `out`, in order (content-length framing only)."""
    got, data, i = [], bytes(out), 0
    while i < len(data):
        end = data.index(b"\r\n\r\n", i)
        head = data[i:end].lower()
        n = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        got.append(data[end + 4:end + 4 + n])
        i = end + 4 + n
    return got


async def until(pred: Callable[[], Any], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


def ended(tr: FakeTransport) -> bool:
    """The gateway ended the connection: closed, or (a request still arriving) its side
    ended and lingering (tests below: `closing.py`)."""
    return tr.closed or tr.eof


def test_the_c_parser_is_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import httptools

    assert c_parser()
    monkeypatch.setattr(httptools.parser.parser, "__file__", "/x/parser.py")
    assert not c_parser()


@pytest.mark.parametrize("step", [0, 1, 7])
async def test_fragmented_pipelined_requests_are_answered_in_order(step: int) -> None:
    h = Recorder()
    proto, tr, _ = connect(h)
    data = (GET + b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            + b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n" + GET.replace(b"/a", b"/d"))
    feed(proto, data, step)
    await until(lambda: len(answers(tr.out)) == 4)
    assert [r.target for r in h.seen] == [b"/a", b"/b", b"/c", b"/d"]
    assert answers(tr.out) == [b"GET /a ", b"POST /b hello", b"POST /c abcde", b"GET /d "]
    assert not tr.closed and h.done_ == h.seen


async def test_a_slow_answer_holds_back_the_ones_behind_it() -> None:
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    feed(proto, GET + GET.replace(b"/a", b"/b") + GET.replace(b"/a", b"/c"))
    assert [r.target for r in h.seen] == [b"/a"]  # the next waits for this answer
    assert tr.paused  # and reading stops while requests queue
    answer(h.seen[0])
    assert [r.target for r in h.seen] == [b"/a", b"/b"]
    answer(h.seen[1])
    answer(h.seen[2])
    assert answers(tr.out) == [b"GET /a ", b"GET /b ", b"GET /c "]
    assert not tr.paused


@pytest.mark.parametrize("payload, why", [
    (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", b"more than one Host"),
    (b"GET / HTTP/1.1\r\n\r\n", b"needs a Host"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + GET,
     b"upgrades"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nContent-Length: 3\r\n\r\nabc" + GET,
     b"upgrades"),
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", b"upgrades"),
    (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     b"HTTP/1.0"),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", b"HTTP/2.0"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent_Length: 5\r\n\r\n", b"'content-length'"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n", b"too long"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"target is too long"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X: 1\r\n" * (MAX_HEADERS + 1) + b"\r\n",
     b"header fields"),
    (b"GET / HTTP/1.1\nHost: x\n\n", b"malformed"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"malformed"),
    # codings before chunked (llhttp takes them): forwarded de-chunked, the bytes would
    # reach the backend as if not coded at all
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
     b"only the chunked transfer coding"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", b"only the chunked transfer coding"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: x-made-up ,chunked\r\n\r\n0\r\n\r\n",
     b"only the chunked transfer coding"),
])
@pytest.mark.parametrize("step", [0, 3])
async def test_refused_requests_get_400_and_the_connection_closes(payload: bytes, why: bytes,
                                                                   step: int) -> None:
    h = Recorder()
    proto, tr, server = connect(h)
    feed(proto, payload, step)
    await until(lambda: ended(tr))
    assert tr.out.startswith(b"HTTP/1.1 400 "), tr.out[:100]
    assert why in tr.out, tr.out
    assert h.seen == []  # nothing of it (nor what followed) reached the handler
    assert server.counts == ["malformed"]


async def test_a_refusal_waits_for_the_answers_before_it() -> None:
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    feed(proto, GET + b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    assert tr.out == b""
    answer(h.seen[0])
    await until(lambda: ended(tr))
    assert tr.out.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 400" in tr.out


async def test_an_oversize_head_in_small_pieces_is_refused_without_growing() -> None:
    h = Recorder()
    proto, tr, _ = connect(h)
    feed(proto, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
    for _ in range(2000):  # 200 KB of one header value, 100 bytes at a time
        if tr.closed:
            break
        proto.data_received(b"a" * 100)
    await until(lambda: ended(tr))
    assert tr.out.startswith(b"HTTP/1.1 400") and h.seen == []


async def test_expect_100_continue_is_sent_when_the_body_is_read() -> None:
    got: list[bytes] = []

    class Reader(Recorder):
        def handle(self, req: Request) -> None:
            self.seen.append(req)

            async def read() -> None:
                got.append(await req.read_prefix(100, 1000) or b"")
                answer(req, b"ok")

            asyncio.get_running_loop().create_task(read())

    h = Reader()
    proto, tr, _ = connect(h)
    feed(proto, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert len(h.seen) == 1  # handed over at its head: the client waits for our go
    await until(lambda: tr.out == b"HTTP/1.1 100 Continue\r\n\r\n")
    feed(proto, b"hello")
    await until(lambda: got == [b"hello"])
    assert tr.out.endswith(b"\r\n\r\nok")


async def test_a_request_refused_before_its_body_is_read_closes_the_connection() -> None:
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    feed(proto, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 10)
    req = h.seen[0]  # a large body: handed over at its head
    assert not req.will_keep_alive()  # its body is not read: the answer says close
    answer(req, b"no")
    await until(lambda: ended(tr))


async def test_body_flow_control_pauses_reading_until_the_body_is_taken() -> None:
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    feed(proto, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
    req = h.seen[0]
    for _ in range(5):
        feed(proto, b"x" * 65536)
    assert tr.paused and req.buffered == 5 * 65536
    chunks = req.rest(0, 10_000_000)
    assert len(await chunks.__anext__()) == 5 * 65536
    assert not tr.paused  # taken: reading goes on


async def test_writes_pause_and_a_client_that_reads_nothing_is_dropped() -> None:
    h = Recorder(answer_now=False)
    proto, tr, server = connect(h)
    feed(proto, GET)
    req = h.seen[0]
    req.start(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", chunked=True)
    proto.pause_writing()
    waiter = asyncio.ensure_future(req.drain())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    proto.resume_writing()
    await asyncio.wait_for(waiter, 1)
    proto.pause_writing()  # and now it never reads again
    await until(lambda: tr.aborted and h.gone_)
    assert server.counts == ["send_timeout"]
    assert h.gone_ == [req] and h.done_ == [req]


async def test_deadlines_first_head_next_heads_idle_and_body() -> None:
    h = Recorder()
    loop = asyncio.get_running_loop()
    # an idle socket: closed at header_timeout from the accept
    proto, tr, _ = connect(h)
    t0 = loop.time()
    await until(lambda: tr.aborted)
    assert 0.25 < loop.time() - t0 < 1.0
    # kept alive: idle between requests until keepalive_timeout, then each head has its own
    # header_timeout from its first byte (a slow head on a kept-alive connection is cut too)
    proto, tr, _ = connect(h)
    feed(proto, GET)
    await asyncio.sleep(0.4)  # past header_timeout: idle now counts, not the head deadline
    assert not tr.closed
    feed(proto, b"GET /b HTTP/1.1\r\n")  # a head begins, and stalls
    t0 = loop.time()
    await until(lambda: tr.aborted)
    assert 0.25 < loop.time() - t0 < 1.0
    assert answers(tr.out) == [b"GET /a "]
    # a small body that stops coming: 408 from the connection itself
    proto, tr, _ = connect(h)
    feed(proto, b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    await until(lambda: tr.closed)
    assert tr.out.startswith(b"HTTP/1.1 408") and len(h.seen) == 1  # never handed over


async def test_empty_lines_between_requests_begin_no_head() -> None:
    """llhttp skips empty lines before a request line: a read of nothing else, between
    requests, begins no head (the connection stays idle: keepalive_timeout, not
    header_timeout), and the next request is timed from its own first read."""
    h = Recorder()
    loop = asyncio.get_running_loop()
    proto, tr, _ = connect(h)
    feed(proto, GET)
    feed(proto, b"\r\n")
    feed(proto, b"\n")
    await asyncio.sleep(0.4)  # past header_timeout
    assert not tr.closed and proto.parsing is None
    t0 = loop.time()
    feed(proto, b"\r\n" + GET.replace(b"/a", b"/b"))
    assert answers(tr.out) == [b"GET /a ", b"GET /b "]
    assert h.seen[1].started >= t0 and not tr.closed


async def test_a_streamed_body_that_stalls_fails_its_reader() -> None:
    h = Recorder(answer_now=False)
    proto, _, _ = connect(h)
    feed(proto, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
    req = h.seen[0]
    with pytest.raises(BodyTimeout):
        async for _ in req.rest(0, 1000):
            pass


async def test_the_client_going_away_is_told_to_the_handler() -> None:
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h)
    feed(proto, GET + GET)
    proto.eof_received()
    tr.close()
    await until(lambda: h.gone_)
    assert h.gone_ == [h.seen[0]] and h.done_ == [h.seen[0]]  # the queued one never began


async def test_connection_cap_and_graceful_drain() -> None:
    h = Recorder(answer_now=False)
    proto, tr, server = connect(h, max_connections=1)
    extra = HttpProtocol(server, asyncio.get_running_loop())  # type: ignore[arg-type]
    tr2 = FakeTransport(extra)
    extra.connection_made(tr2)
    assert tr2.aborted and server.counts == ["refused"]
    feed(proto, GET)
    proto.shutdown()  # drain: the answer in progress finishes, then the connection closes
    assert not tr.closed
    answer(h.seen[0])
    assert b"connection: close" in tr.out.lower()
    await until(lambda: tr.closed)


# --------------------------------------------------------------------------- hostile clients
# (review of the data plane: each attack below failed before its fix)


@pytest.mark.parametrize("step", [0, 1])
async def test_trailer_fields_never_join_the_head(step: int) -> None:
    """A chunked body's trailer section is not merged into the header fields (RFC 9110
    §6.5.1): the head was routed and forwarded without them, and a trailer `Host` or
    `Upgrade` must not change the request after its decision."""
    h = Recorder()
    proto, tr, _ = connect(h)
    feed(proto, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Injected: 1\r\nUpgrade: h2c\r\nHost: evil\r\n\r\n"
                + GET, step)
    await until(lambda: len(answers(tr.out)) == 2)
    assert answers(tr.out) == [b"POST /c abc", b"GET /a "] and not tr.closed
    req = h.seen[0]
    assert req.raw_headers == [(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")]
    assert req.refused is None and req.host == b"x"


class BodyReader(Recorder):
    """Reads each body as it comes; a body that fails is answered as the proxy would."""

    def handle(self, req: Request) -> None:
        self.seen.append(req)

        async def read() -> None:
            try:
                body = b"".join([chunk async for chunk in req.rest(0, 1 << 30)])
            except (BadBody, BodyTimeout) as exc:
                req.keep_alive = False
                answer(req, b"refused: " + str(exc).encode())
                return
            answer(req, req.method + b" " + req.target + b" " + body)

        asyncio.get_running_loop().create_task(read())


async def test_an_endless_trailer_section_is_refused_without_growing() -> None:
    """A trailer field that never ends is held by the parser until its end: its bytes are
    counted like a head's, and refused past the head limit (400 from the body's reader)."""
    h = BodyReader()
    proto, tr, _ = connect(h)
    feed(proto, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\nX-Endless: ")
    for _ in range(200):  # 12.8 MB offered, 64 KB at a time
        if tr.closed:
            break
        proto.data_received(b"a" * 65536)
    await until(lambda: ended(tr))
    assert answers(tr.out) == [b"refused: a chunk header or the trailer section is too large"]
    assert proto.wire_bytes <= MAX_HEAD + 65536


@pytest.mark.parametrize("start", [
    b"",  # the first chunk's header
    b"3\r\nabc\r\n",  # a later one
])
@pytest.mark.parametrize("size", [4096, 65536])
async def test_an_endless_chunk_extension_is_refused_without_reading_on(start: bytes,
                                                                          size: int) -> None:
    """A chunk header's extensions (`5;name=value`) are skipped by llhttp and delivered to
    no callback: neither body bytes (no `max_body_size`, no body deadline moved) nor a
    field. Uncounted, one request could send them without end, read and parsed by the
    event loop until the body deadline (Node's CVE-2024-22019). Counted like a trailer
    section's: refused past the head limit."""
    h = BodyReader()
    proto, tr, _ = connect(h)
    feed(proto, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + start + b"5;a=")
    offered = 0
    while not proto.stopped and offered < 4 * 1024 * 1024:  # (refused: nothing more read)
        proto.data_received(b"b" * size)
        offered += size
    await until(lambda: ended(tr))
    assert offered <= MAX_HEAD + 2 * size, offered
    assert answers(tr.out) == [b"refused: a chunk header or the trailer section is too large"]


async def test_a_head_split_across_reads_with_a_large_body_after_it_is_served() -> None:
    """The head limit counts the head, not the body bytes that share its last read."""
    h = Recorder()
    proto, tr, _ = connect(h)
    body = b"x" * 200_000
    feed(proto, b"POST /big HTTP/1.1\r\nHo")
    feed(proto, b"st: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    await until(lambda: len(answers(tr.out)) == 1)
    assert answers(tr.out) == [b"POST /big " + body]


async def test_a_head_begun_behind_a_slow_answer_keeps_its_deadline() -> None:
    """Slowloris behind a slow answer: a client pipelines the start of a second head behind
    a request whose answer takes longer than `header_timeout`, then never finishes it. The
    head's deadline still holds once the answer is written (it was lost: no timer ran)."""
    h = Recorder(answer_now=False)
    proto, tr, _ = connect(h, limits=Limits(header_timeout=0.2, keepalive_timeout=30,
                                            body_timeout=0.2, send_timeout=30))
    feed(proto, GET)
    answer(h.seen[0])  # kept alive: later heads have their own deadline
    feed(proto, GET + b"GET /b HTTP/1.1\r\nX-Drip: 1\r\n")
    await asyncio.sleep(0.4)  # the answer takes longer than header_timeout
    assert not tr.closed
    answer(h.seen[1])
    await until(lambda: tr.aborted, timeout=2)
    assert answers(tr.out) == [b"GET /a ", b"GET /a "]


@pytest.mark.parametrize("answer_now", [True, False])
async def test_bytes_after_a_connection_close_request_are_not_answered(answer_now: bool) -> None:
    """`Connection: close` ends the connection after its answer: what a client pipelines
    after it is ignored (llhttp calls it an error), never answered after the close."""
    h = Recorder(answer_now=answer_now)
    proto, tr, _ = connect(h)
    feed(proto, b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + GET)
    if not answer_now:
        answer(h.seen[0])
    await until(lambda: tr.closed)
    assert answers(tr.out) == [b"GET /a "] and len(h.seen) == 1


async def test_a_client_that_reads_nothing_gets_no_more_answers_queued() -> None:
    """Pipelined requests from a client that reads none of its answers: once the transport
    says its buffer is full, no further request is handed over (each answer would wait in
    memory) and reading pauses; the rest go on when the client reads again."""
    h = Recorder()
    proto, tr, _ = connect(h)

    def write(data: Any) -> None:  # a client that stops reading after the first answer
        tr.out += data
        proto.pause_writing()

    tr.write = write  # type: ignore[method-assign]
    for _ in range(1000):
        feed(proto, GET)
    assert len(h.seen) == 1 and tr.paused
    tr.write = lambda data: tr.out.extend(data)  # type: ignore[method-assign]
    proto.resume_writing()
    await until(lambda: len(answers(tr.out)) == 1000)
    assert answers(tr.out) == [b"GET /a "] * 1000 and len(h.seen) == 1000


@pytest.mark.parametrize("answer_now", [True, False])
async def test_one_read_of_many_pipelined_requests_is_parsed_as_they_are_answered(
        answer_now: bool) -> None:
    """64 KiB of tiny pipelined requests in one read (a uvloop read is up to 256 KiB: ten
    thousand requests) are not parsed into as many queued requests at once: a slice at a
    time, the rest held as bytes while requests queue, and all answered in order."""
    h = Recorder(answer_now=answer_now)
    proto, tr, _ = connect(h)
    n = 64 * 1024 // len(GET)
    feed(proto, GET * n)
    assert len(proto.queue) <= SLICE // len(GET) + 1
    queued = len(proto.queue)
    while tr.out.count(b"HTTP/1.1 200") < n:
        if not answer_now:
            await until(lambda: h.seen and not h.seen[-1].responded)
            answer(h.seen[-1])
            queued = max(queued, len(proto.queue))
        else:
            await asyncio.sleep(0.001)
    assert answers(tr.out) == [b"GET /a "] * n and not tr.closed and not tr.paused
    assert queued <= SLICE // len(GET) + 1


async def test_a_large_body_in_one_read_is_parsed_in_one_piece() -> None:
    """Slicing a read is for heads: a large sized body goes to the parser in one piece."""
    h = Recorder(answer_now=False)
    proto, _, _ = connect(h)
    feed(proto, b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000)
    req = h.seen[0]
    assert req.body_done and len(req.chunks) <= 2


@pytest.mark.parametrize("step", [0, 1, 7])
async def test_each_pipelined_head_is_read_in_its_own_http_version(step: int) -> None:
    """The first request line of a read gives its version without asking the parser (also
    when its head is completed by a later read); every head after it in the same read, and
    one whose first line was cut, asks the parser."""
    h = Recorder()
    proto, tr, server = connect(h)
    feed(proto, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /b HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
                b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /d HTTP/2.0\r\nHost: x\r\n\r\n", step)
    await until(lambda: ended(tr))
    assert [(r.target, r.http10) for r in h.seen] == [(b"/a", False), (b"/b", True),
                                                        (b"/c", False)]
    assert b"HTTP/2.0 is not spoken here" in tr.out and server.counts == ["malformed"]


async def test_a_version_after_the_first_line_of_a_read_is_not_taken_for_its_own() -> None:
    h = Recorder()
    proto, tr, _ = connect(h)
    feed(proto, b"GET /a HTTP/2.0\r\nX: GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await until(lambda: ended(tr))
    assert h.seen == [] and b"HTTP/2.0 is not spoken here" in tr.out
    h = Recorder()
    proto, tr, _ = connect(h)
    feed(proto, b"POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    await until(lambda: ended(tr))
    assert h.seen == [] and b"not allowed in HTTP/1.0" in tr.out
