"""`Connection: keep-alive` (or `close`) alone takes no second pass over a request's fields
(`headrules.head_field`): the backend's head is the one the parser sorted as the fields came
(`Request.kept`), and llhttp is not asked whether the connection stays open. It must be byte
for byte the head of the pass over all the fields (`requesthead.request_head`), and
`keep_alive` llhttp's own answer, for every shape of Connection field a client may send:
a real `HttpProtocol` fed random and hostile heads (test_protocol.py's fakes), then one
real `killgate serve` in front of a real backend that answers with the head it got.
Any other value (a list, a field's name, `Upgrade`, `TE`) takes the pass, and so does a
field named `Close` (which `Connection: close` names)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import httptools
import pytest

from gateway.dataplane.request import Request
from tests.backends import RawServer
from tests.conftest import GatewayProcess, serving_process
from tests.rawhttp import exchange, read_answer
from tests.test_protocol import Recorder, connect, feed, until
from tests.test_requesthead_kept import _heads

pytestmark = pytest.mark.timeout(30)

# the field names a Connection field may name, in several spellings, and plain ones
_FIELDS = [b"X-Foo", b"x-foo", b"Accept", b"Keep-Alive", b"keep-alive", b"Close", b"close",
           b"TE", b"Trailer", b"Cookie", b"X-Forwarded-Port", b"traceparent", b"Via"]
#: values that name Keep-Alive alone (after llhttp's and `on_header`'s OWS strip): no pass
_FAST = [b"keep-alive", b"Keep-Alive", b"KEEP-ALIVE", b"kEeP-aLiVe", b"Keep-alive",
         b" keep-alive", b"keep-alive ", b"\tkeep-alive\t", b"  Keep-Alive  \t"]
#: values that must take the pass (a list, a name, an odd token, an empty value), or that
#: turn keep-alive off (`close` alone)
_FULL = [b"close", b"Close", b" CLOSE\t", b"keep-alive, close", b"close, keep-alive", b"keep-alive, Upgrade",
         b"Upgrade", b"keep-alive, x-foo", b"X-Foo, keep-alive", b"keep-alive,x-foo",
         b"keep-alive, keep-alive", b"keep-alive,", b",keep-alive", b"keep-alive, TE", b"TE",
         b"keep-alive;q=1", b"keep-alivex", b"xkeep-alive", b"keep-alive x-foo", b"keep alive",
         b"keep-alive\x80", b"", b"accept", b"Via", b"keep-alive, close, x-foo", b"cookie",
         b"keep-\xc3\xa4live"]
_CONN_NAMES = [b"Connection", b"connection", b"CONNECTION", b"Proxy-Connection",
               b"proxy-connection"]


def _llhttp_keeps_alive(data: bytes) -> bool:
    """llhttp's own answer for the head in `data` (a fresh parser, every callback its
    default)."""
    class _Cb:
        keep: bool | None = None

        def on_headers_complete(self) -> None:
            self.keep = parser.should_keep_alive()

    cb = _Cb()
    parser = httptools.HttpRequestParser(cb)
    parser.feed_data(data)
    assert cb.keep is not None
    return cb.keep


def _is_fast(fields: list[tuple[bytes, bytes]]) -> bool:
    """Whether the parser leaves `reread` off: every Connection field `keep-alive` or
    `close` alone, no Via, no Close."""
    for name, value in fields:
        low = name.lower()
        if low in (b"via", b"close") or (
                low in (b"connection", b"proxy-connection")
                and value.strip(b" \t").lower() not in (b"keep-alive", b"close")):
            return False
    return True


def _closes(fields: list[tuple[bytes, bytes]]) -> bool:
    """Whether a Connection (or Proxy-Connection) field lists `close`."""
    return any(name.lower() in (b"connection", b"proxy-connection") and any(
        t.strip(b" \t").lower() == b"close" for t in value.split(b","))
        for name, value in fields)


def _random_head(rng: random.Random, version: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    fields: list[tuple[bytes, bytes]] = []
    if version == b"1.1" or rng.random() < 0.5:
        fields.append((b"Host", b"client.example"))
    for _ in range(rng.choice([0, 1, 2, 4, 8])):
        fields.append((rng.choice(_FIELDS), rng.choice([b"1", b"secret", b"timeout=5"])))
    pool = _FAST if rng.random() < 0.6 else _FAST + _FULL
    for _ in range(rng.choice([1, 1, 2, 3])):
        fields.append((rng.choice(_CONN_NAMES), rng.choice(pool)))
    body = b"" if rng.random() < 0.4 else b"abc"
    if body:
        fields.append((b"Content-Length", b"3"))
    rng.shuffle(fields)
    head = b"POST /v2/x HTTP/" + version + b"\r\n"
    return head + b"".join(n + b":" + v + b"\r\n" for n, v in fields) + b"\r\n" + body, fields


async def _parsed(data: bytes, step: int = 0) -> Request:
    h = Recorder()
    proto, _, _ = connect(h)
    feed(proto, data, step)
    await until(lambda: bool(h.seen))
    return h.seen[0]


@pytest.mark.parametrize("seed", range(6))
async def test_random_connection_shapes_forward_the_head_of_the_whole_pass(seed: int) -> None:
    rng = random.Random(seed)
    fast = 0
    for case in range(60):
        version = rng.choice([b"1.1", b"1.1", b"1.1", b"1.0"])
        data, fields = _random_head(rng, version)
        req = await _parsed(data, rng.choice([0, 0, 1, 5]))
        assert req.refused is None, (seed, case, data)
        assert req.reread == (not _is_fast(fields)), (seed, case, data)
        fast += not req.reread
        # (llhttp's answer, but a `close` token closes: on HTTP/1.0 llhttp keeps
        # `keep-alive, close` alive; RFC 9112 9.6)
        assert req.keep_alive == (_llhttp_keeps_alive(data) and not _closes(fields)), (
            seed, case, data)
        for got, want in _heads(req):
            assert got == want, (seed, case, data)
    assert fast >= 10  # (the shapes took the cut, not only the pass)


@pytest.mark.parametrize("conn", _FAST)
async def test_keep_alive_alone_takes_no_pass_and_forwards_the_same_head(conn: bytes) -> None:
    data = (b"GET /a HTTP/1.1\r\nHost: h\r\nKeep-Alive: timeout=5\r\nAccept: */*\r\n"
            b"Connection:" + conn + b"\r\nX-Foo: 1\r\nConnection: keep-alive\r\n\r\n")
    req = await _parsed(data)
    assert not req.reread and req.keep_alive
    for got, want in _heads(req):
        assert got == want
        assert b"Keep-Alive" not in got and b"onnection" not in got and b"X-Foo: 1" in got


@pytest.mark.parametrize("conn, named", [
    (b"keep-alive, X-Foo", b"X-Foo"), (b"X-Foo, keep-alive", b"X-Foo"),
    (b"keep-alive,x-foo", b"X-Foo"), (b"keep-alive, keep-alive, accept", b"Accept"),
    (b"keep-alive, close", b"Close"), (b"close, X-Foo", b"X-Foo"), (b"X-Foo, close", b"X-Foo"),
    (b"close, keep-alive", b""), (b"close,", b""),
    (b"keep-alive, TE", b"TE"), (b"keep-alive, Upgrade", b""), (b"keep-alive, cookie", b""),
])
@pytest.mark.parametrize("second", [False, True])
async def test_any_other_connection_value_takes_the_pass(conn: bytes, named: bytes,
                                                         second: bool) -> None:
    """A list, `close` or a name, alone or in a second Connection field beside a first
    `keep-alive`: the fields it names (before or after it) do not reach the backend, and
    llhttp says whether the connection stays open."""
    fields = (b"Connection: keep-alive\r\nConnection: " if second else b"Connection: ") + conn
    close = b"Close: 1\r\n" if second else b""  # (a field `Close` takes the pass itself)
    data = (b"GET /a HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\n" + close + fields +
            b"\r\nAccept: */*\r\nTE: trailers\r\n\r\n")
    req = await _parsed(data)
    assert req.reread
    assert req.keep_alive == _llhttp_keeps_alive(data) == (b"close" not in conn.lower())
    for got, want in _heads(req):
        assert got == want
        if named:
            assert b"\r\n" + named + b": " not in got


@pytest.mark.parametrize("close", [b"close", b"Close", b"CLOSE", b" close\t"])
@pytest.mark.parametrize("field", [b"", b"Close: 1\r\n", b"close: 1\r\n"])
@pytest.mark.parametrize("after", [False, True])
async def test_close_alone_takes_no_pass_unless_a_close_field_came(
        close: bytes, field: bytes, after: bool) -> None:
    """`close` names a field `Close` only (reserved, but a client may send one): without
    one, the sorted head; with one, before or after, the pass, which drops it."""
    conn = b"Connection:" + close + b"\r\n"
    data = (b"GET /a HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\n" + (field + conn if after else
            conn + field) + b"Keep-Alive: 5\r\nConnection: close\r\n\r\n")
    req = await _parsed(data)
    assert req.reread == bool(field)
    assert not req.keep_alive and not _llhttp_keeps_alive(data)
    for got, want in _heads(req):
        assert got == want
        assert b"lose: " not in got and b"Keep-Alive" not in got and b"X-Foo: 1" in got


async def test_a_close_field_without_connection_close_is_forwarded() -> None:
    req = await _parsed(b"GET /a HTTP/1.1\r\nHost: h\r\nClose: 1\r\n\r\n")
    assert req.keep_alive
    for got, want in _heads(req):
        assert got == want and b"\r\nClose: 1\r\n" in got


@pytest.mark.parametrize("conn, keep, llhttp", [
    (b"", False, False), (b"Connection: keep-alive\r\n", True, True),
    (b"Connection: Keep-Alive\r\n", True, True), (b"Connection: close\r\n", False, False),
    (b"Connection: keep-alive, closex\r\n", True, True),
    # (llhttp keeps these alive on HTTP/1.0: its keep-alive flag alone counts there)
    (b"Connection: keep-alive, close\r\n", False, True),
    (b"Connection: close, keep-alive\r\n", False, True),
    (b"Connection: keep-alive\r\nConnection: close\r\n", False, True),
    (b"Proxy-Connection: close\r\nConnection: keep-alive\r\n", False, True)])
async def test_http10_keep_alive_is_llhttps_answer_but_close_wins(
        conn: bytes, keep: bool, llhttp: bool) -> None:
    """HTTP/1.0 keeps a connection only when asked to (llhttp is always asked there), and
    never when a `close` token came (RFC 9112 9.6: `close` wins), whatever llhttp says:
    pinned against its answer deliberately (impleft9)."""
    data = b"GET /a HTTP/1.0\r\nX-Foo: 1\r\n" + conn + b"\r\n"
    req = await _parsed(data)
    assert req.http10 and req.keep_alive == keep
    assert _llhttp_keeps_alive(data) == llhttp
    for got, want in _heads(req):
        assert got == want


# ----------------------------------------------------------------- a real serve, a real backend


class _HeadEcho(RawServer):
    """Answers each request on a kept-alive connection with the head it got, as its body."""

    keep_open = True

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(head), head))
            await writer.drain()


_ROUTE = """\
- name: echo
  match: {{path_prefix: /}}
  stable: v1
  versions:
    - {{name: v1, url: "http://127.0.0.1:{port}", weight: 100}}
"""


async def test_a_real_serve_forwards_the_same_head_with_and_without_the_pass(
        gateway_procs: Callable[..., GatewayProcess], tmp_path: Path) -> None:
    backend = _HeadEcho()
    port = await backend.start()
    try:
        _, data = await serving_process(gateway_procs, tmp_path, _ROUTE.format(port=port))
        reader, writer = await asyncio.open_connection("127.0.0.1", data)
        try:
            async def sent(conn: bytes, version: bytes = b"1.1") -> tuple[dict[str, str], bytes]:
                writer.write(b"POST /v2/m HTTP/" + version + b"\r\nHost: h\r\nX-Foo: 1\r\n"
                             b"Keep-Alive: timeout=5\r\n" + conn + b"Accept: */*\r\n"
                             b"Content-Length: 2\r\n\r\nhi")
                status, headers, body = await read_answer(reader)
                assert status == 200, body
                return headers, body

            _, plain = await sent(b"")  # (no Connection field: the parser's sorting)
            assert b"\r\nX-Foo: 1\r\n" in plain and b"Keep-Alive" not in plain
            for conn in (b"Connection: keep-alive\r\n", b"connection: Keep-Alive\r\n",
                         b"Connection: keep-alive\r\nConnection:  KEEP-ALIVE \r\n",
                         b"Proxy-Connection: keep-alive\r\n",
                         b"Connection: keep-alive, keep-alive\r\n"):  # (the last: the pass)
                headers, got = await sent(conn)
                assert got == plain, conn
                assert "connection" not in headers  # (kept open: the next one is read)
            for conn in (b"Connection: keep-alive, X-Foo\r\n", b"Connection: X-Foo\r\n",
                         b"Connection: x-foo, Keep-Alive\r\n",
                         b"Connection: keep-alive\r\nConnection: x-foo\r\n"):
                _, got = await sent(conn)
                assert got == plain.replace(b"X-Foo: 1\r\n", b""), conn
            headers, got = await sent(b"Connection: keep-alive\r\n", b"1.0")
            assert got == plain and headers["connection"] == "keep-alive"
            headers, got = await sent(b"Connection: close\r\n")
            assert got == plain and headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 10) == b""  # (closed after it)
            for fields, want in ((b"Close: 1\r\nConnection: close\r\n", plain),
                                 (b"Connection: close\r\nclose: 1\r\n", plain),
                                 (b"Close: 1\r\n", plain.replace(b"Accept", b"Close: 1\r\nAccept"))):
                _, _, got = await exchange(data, b"POST /v2/m HTTP/1.1\r\nHost: h\r\nX-Foo: 1\r\n"
                                           b"Keep-Alive: timeout=5\r\n" + fields +
                                           b"Accept: */*\r\nContent-Length: 2\r\n\r\nhi")
                assert got == want, fields
        finally:
            writer.close()
    finally:
        await backend.stop()
