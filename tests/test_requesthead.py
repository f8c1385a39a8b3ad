"""dataplane/requesthead.py without sockets: which of a request's fields reach the backend,
as bytes."""

from __future__ import annotations

import pytest

from gateway.dataplane.requesthead import request_head
from tests.test_headers import _fields

RAW = [(b"Host", b"client.example"), (b"Connection", b"keep-alive, X-Secret"),
       (b"X-Secret", b"1"), (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"),
       (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5"), (b"Expect", b"100-continue"),
       (b"Proxy-Authorization", b"Basic x"), (b"X-Forwarded-For", b"6.6.6.6"),
       (b"Forwarded", b"for=6.6.6.6"), (b"X-Real-IP", b"6.6.6.6"), (b"x-killgate-pin", b"v2"),
       (b"X-KillGate-Internal", b"1"), (b"Via", b"1.0 edge"), (b"Traceparent", b"00-a-b-01"),
       (b"Accept", b"*/*"), (b"accept", b"text/plain")]


def test_request_head_keeps_end_to_end_fields_only() -> None:
    head = request_head(b"POST /x HTTP/1.1\r\nhost: backend:9\r\n", RAW,
                        b"x-forwarded-for: 127.0.0.1\r\n", 12)
    assert head.startswith(b"POST /x HTTP/1.1\r\n")
    fields = _fields(head)
    names = [n.lower() for n, _ in fields]
    assert names == [b"host", b"traceparent", b"accept", b"accept", b"via",
                     b"x-forwarded-for", b"content-length"]
    assert dict(fields)[b"via"] == b"1.0 edge, 1.1 killgate"
    assert dict(fields)[b"content-length"] == b"12"
    chunked = request_head(b"GET / HTTP/1.1\r\n", [], b"", None)
    assert chunked.endswith(b"transfer-encoding: chunked\r\n\r\n")


@pytest.mark.parametrize("raw", [
    RAW,  # Connection names a field: the second pass (`fieldrules.kept`) rebuilds from the first line
    [(b"Host", b"h"), (b"Content-Length", b"3"), (b"Content-Type", b"application/json")],
    [],
])
@pytest.mark.parametrize("traced", [False, True])
def test_request_head_from_the_first_line_as_parts_is_the_same_bytes(
        raw: list[tuple[bytes, bytes]], traced: bool) -> None:
    """The proxy hands the request line and Host over as a list of parts (no formatting per
    request): the head is byte for byte the one built from the joined line."""
    parts = [b"POST", b" ", b"/base", b"/v2/x?q=1", b" HTTP/1.1\r\nhost: ", b"backend:9",
             b"\r\n"]
    line = b"".join(parts)
    fwd = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n"
    for length, body in ((3, b"abc"), (None, b"")):
        expected = request_head(line, raw, fwd, length, traced, body)
        assert expected.startswith(line)
        assert request_head(list(parts), raw, fwd, length, traced, body) == expected


@pytest.mark.parametrize("name", [b"X-Forwarded-Port", b"X-Forwarded-Prefix", b"x-forwarded-scheme",
                                  b"X-Forwarded-Ssl", b"X-Forwarded-Server", b"X-FORWARDED-URI"])
@pytest.mark.parametrize("traced", [False, True])
def test_no_x_forwarded_field_of_the_client_reaches_the_backend(name: bytes, traced: bool) -> None:
    """Frameworks build URLs and decide the scheme from the whole family (Werkzeug's ProxyFix
    reads -Port and -Prefix, Rack -Scheme and -Ssl before -Proto, Spring -Port, -Prefix and
    -Ssl): next to the -For, -Proto and -Host the gateway writes, a client's would be believed
    as the gateway's own. Only ours go out."""
    head = request_head(b"GET /x HTTP/1.1\r\nhost: backend:9\r\n",
                        [(name, b"443"), (b"Accept", b"*/*")],
                        b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n", 0, traced)
    names = [n.lower() for n, _ in _fields(head)]
    assert names == [b"host", b"accept", b"via", b"x-forwarded-for", b"x-forwarded-proto",
                     b"content-length"]


def test_the_request_line_parts_of_a_target_and_its_pool_are_the_line() -> None:
    """`Outgoing.request_head` hands `request_head` [method, Target.line_path, target,
    Pool.host_line] (constant parts joined once): the request line and our Host field."""
    import asyncio

    from gateway.dataplane.upstream import Pool
    from gateway.domain.target import make_target

    loop = asyncio.new_event_loop()
    try:
        for url, host_line in (("http://backend:9/base/", b"backend:9"),
                               ("http://backend", b"backend"), ("https://[::1]:8443", b"[::1]:8443")):
            t = make_target("r", "v1", url, None, None)
            pool = Pool(t.scheme, t.host, t.port, 4, loop, set(), 8)
            line = b"".join([b"POST", t.line_path, b"/v2/x?q=1", pool.host_line])
            assert line == b"POST %s/v2/x?q=1 HTTP/1.1\r\nhost: %s\r\n" % (t.path_bytes, host_line)
            assert pool.host_header == host_line
    finally:
        loop.close()
