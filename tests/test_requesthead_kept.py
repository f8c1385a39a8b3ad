"""The backend's head from the fields the parser sorted as they came (`Request.kept`,
`Outgoing.request_head`), without sockets: a real `HttpProtocol` fed random heads whole and
in fragments (test_protocol.py's fakes), and `Outgoing.request_head` (the proxy's) asked for
each request's head, traced and not. It must be byte for byte the head of the pass over all
the fields (`requesthead.request_head`, the rules of test_requesthead.py and
test_smuggling.py), whichever path builds it: hop-by-hop fields, those named in
`Connection` (before or after it), framing, the client's x-forwarded-*, `x-killgate-*`, and
when traced its traceparent, never reach the backend."""

from __future__ import annotations

import random

import pytest

from gateway.dataplane.outgoing import Outgoing
from gateway.dataplane.request import Request
from gateway.dataplane.requesthead import request_head
from gateway.dataplane.wire import CONNECTION, DROPPED, PLAIN, VIA, name_kind
from gateway.domain.target import make_target
from tests.test_headers import _fields
from tests.test_protocol import Recorder, connect, feed, until

# every kind of name a client's head can hold, in several spellings
_NAMES = [b"Accept", b"accept", b"User-Agent", b"X-Request-Id", b"Content-Type", b"Cookie",
          b"X_Plain", b"x-custom", b"X-Forwarded-For", b"x-forwarded-proto", b"X-Forwarded-Host",
          b"X-Forwarded-Port", b"x-forwarded-prefix", b"Forwarded", b"X-Real-IP",
          b"x-killgate-pin", b"X-KillGate-Internal", b"Keep-Alive", b"TE", b"Trailer",
          b"Proxy-Authorization", b"Proxy-Connection", b"Expect", b"traceparent",
          b"Traceparent", b"tracestate"]
_RARE = [b"Connection", b"connection", b"Via", b"VIA"]  # (the pass over all the fields)


def _random_head(rng: random.Random, rare: bool) -> bytes:
    fields: list[tuple[bytes, bytes]] = [(rng.choice([b"Host", b"host"]), b"client.example")]
    for _ in range(rng.choice([0, 1, 3, 8, 20])):
        name = rng.choice(_NAMES)
        value = (b"100-continue" if rng.random() < 0.5 else b"x") if name == b"Expect" else (
            bytes(rng.choice(b"abc09-;=/ ") for _ in range(rng.randrange(1, 10))).strip())
        fields.append((name, value))
    if rare:
        fields.append((rng.choice(_RARE), rng.choice(
            [b"keep-alive", b"X-Custom, cookie", b"accept", b"1.0 edge", b"close, x-request-id"])))
    body = b"" if rng.random() < 0.3 else b"abc"
    if body:
        fields.append((b"Content-Length", b"3"))
    rng.shuffle(fields)
    head = b"POST /v2/x?q=%d HTTP/1.1\r\n" % rng.randrange(9)
    return head + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n" + body


class _Proxy(Outgoing):
    """The proxy's part that builds a backend's head (the rest of `Proxy` is not asked)."""

    def __init__(self) -> None:
        self.client_address = None
        self.scheme_b = b"http"
        self._forwarded = {}


_TARGET = make_target("r", "v1", "http://backend:9/base/", None, None)
_HOST_LINE = b" HTTP/1.1\r\nhost: backend:9\r\n"
_OURS = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"


def _heads(req: Request) -> list[tuple[bytes, bytes]]:
    """(the proxy's head, the pass over all the fields' head), untraced then traced."""
    proxy = _Proxy()
    out = []
    for traceparent in (None, _OURS):
        fwd = proxy._forwarded_of(req) + (
            b"traceparent: %s\r\n" % traceparent if traceparent else b"")
        for length, body in ((req.content_length, req.body()), (None, b"")):
            got = proxy.request_head(req, _TARGET, _HOST_LINE, length, req.target, traceparent,
                                     body)
            first = b"".join([req.method, _TARGET.line_path, req.target, _HOST_LINE])
            want = request_head(first, req.raw_headers, fwd, length, traceparent is not None,
                                body)
            out.append((got, want))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("rare", [False, True])
async def test_the_head_from_the_sorted_fields_is_the_head_of_the_whole_pass(seed: int,
                                                                              rare: bool) -> None:
    rng = random.Random(seed)
    for case in range(40):
        data = _random_head(rng, rare)
        h = Recorder()
        proto, _, _ = connect(h)
        feed(proto, data, rng.choice([0, 0, 1, 3, 17]))
        await until(lambda h=h: bool(h.seen))  # type: ignore[misc]
        req = h.seen[0]
        assert req.refused is None, (seed, case, data)
        for got, want in _heads(req):
            assert got == want, (seed, case, data)


async def test_what_each_client_field_becomes_on_the_way_to_the_backend() -> None:
    """The sorted path, field by field: kept as sent (case, order, duplicates), ours
    instead of the client's x-forwarded-*, our Via, the framing ours."""
    h = Recorder()
    proto, _, _ = connect(h)
    feed(proto, b"POST /a HTTP/1.1\r\nAccept: */*\r\nX-Forwarded-For: 6.6.6.6\r\nHost: h\r\n"
                b"x-killgate-pin: v2\r\nTE: trailers\r\nX-Forwarded-Port: 1\r\ntraceparent: t1\r\n"
                b"Expect: 100-continue\r\nKeep-Alive: 5\r\naccept: text/plain\r\nX-Real-IP: 6\r\n"
                b"Content-Length: 2\r\n\r\nhi")
    await until(lambda: bool(h.seen))
    req = h.seen[0]
    assert not req.reread
    head = _Proxy().request_head(req, _TARGET, _HOST_LINE, 2, req.target, None, b"hi")
    assert head.startswith(b"POST /base/a HTTP/1.1\r\nhost: backend:9\r\n")
    assert head.endswith(b"\r\n\r\nhi")
    assert _fields(head[:-2]) == [
        (b"host", b"backend:9"), (b"Accept", b"*/*"), (b"traceparent", b"t1"),
        (b"accept", b"text/plain"), (b"via", b"1.1 killgate"), (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-proto", b"http"), (b"x-forwarded-host", b"h"), (b"content-length", b"2")]
    traced = _Proxy().request_head(req, _TARGET, _HOST_LINE, 2, req.target, _OURS, b"hi")
    assert [v for n, v in _fields(traced[:-2]) if n.lower() == b"traceparent"] == [_OURS]


@pytest.mark.parametrize("head, gone, via", [
    (b"X-Secret: 1\r\nConnection: x-secret\r\n", b"x-secret", b"1.1 killgate"),  # named before
    (b"Connection: X-Secret\r\nx-secret: 1\r\n", b"x-secret", b"1.1 killgate"),  # and after
    (b"Via: 1.0 edge\r\nAccept: a\r\n", b"", b"1.0 edge, 1.1 killgate"),
    # a Via the client's Connection names is its hop's (RFC 9110 §7.6.1): ours alone
    (b"Via: 1.0 edge\r\nConnection: Via\r\n", b"", b"1.1 killgate"),
])
async def test_a_connection_or_via_field_builds_the_head_from_all_the_fields(
        head: bytes, gone: bytes, via: bytes) -> None:
    h = Recorder()
    proto, _, _ = connect(h)
    feed(proto, b"GET /a HTTP/1.1\r\nHost: h\r\n" + head + b"\r\n")
    await until(lambda: bool(h.seen))
    req = h.seen[0]
    assert req.reread
    fields = _fields(_Proxy().request_head(req, _TARGET, _HOST_LINE, 0, req.target))
    names = [n.lower() for n, _ in fields]
    assert b"connection" not in names and (not gone or gone not in names)
    assert dict(fields)[b"via"] == via


def test_the_kinds_learned_for_the_backends_head() -> None:
    for name, kind in ((b"Accept", PLAIN), (b"X_Plain", PLAIN), (b"X-Forwarded-Ssl", DROPPED),
                       (b"x-killgate-pin", DROPPED), (b"Proxy-Authorization", DROPPED),
                       (b"Keep-Alive", DROPPED), (b"Forwarded", DROPPED), (b"CONNECTION", CONNECTION),
                       (b"Via", VIA)):
        assert name_kind(name) == kind, name


async def test_each_request_carries_the_forwarded_lines_of_its_own_host_and_peer() -> None:
    """The x-forwarded-* lines are remembered per connection for the Host before
    (`Outgoing._forwarded_of`): a connection whose requests change Host (or send none, in
    HTTP/1.0), and another client's connection, each get their own."""
    proxy = _Proxy()

    def fwd(req: Request) -> dict[bytes, bytes]:
        head = proxy.request_head(req, _TARGET, _HOST_LINE, 0, req.target)
        return {n: v for n, v in _fields(head) if n.startswith(b"x-forwarded-")}

    h = Recorder()
    proto, _, _ = connect(h)
    hosts = [b"a.example", b"a.example", b"b.example", None, b"b.example", b"a.example"]
    for host in hosts:
        feed(proto, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" if host is None
             else b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
    await until(lambda: len(h.seen) == len(hosts))
    for req, host in zip(h.seen, hosts, strict=True):
        want = {b"x-forwarded-for": b"127.0.0.1", b"x-forwarded-proto": b"http"}
        if host is not None:
            want[b"x-forwarded-host"] = host
        assert fwd(req) == want, host
    h2 = Recorder()
    other, _, _ = connect(h2)
    other.remote_b = b"10.0.0.7"  # (another peer: connection_made sets it from its address)
    feed(other, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    await until(lambda: bool(h2.seen))
    assert fwd(h2.seen[0])[b"x-forwarded-for"] == b"10.0.0.7"
    assert fwd(h.seen[-1])[b"x-forwarded-for"] == b"127.0.0.1"
