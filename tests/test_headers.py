"""dataplane/headers.py without sockets: which fields cross, in each direction, as bytes."""

from __future__ import annotations

import pytest

from gateway.dataplane.headers import (
    connection_tokens,
    declared_charset,
    own_head,
    request_head,
    response_head,
)

RAW = [(b"Host", b"client.example"), (b"Connection", b"keep-alive, X-Secret"),
       (b"X-Secret", b"1"), (b"Keep-Alive", b"timeout=5"), (b"TE", b"trailers"),
       (b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"5"), (b"Expect", b"100-continue"),
       (b"Proxy-Authorization", b"Basic x"), (b"X-Forwarded-For", b"6.6.6.6"),
       (b"Forwarded", b"for=6.6.6.6"), (b"X-Real-IP", b"6.6.6.6"), (b"x-killgate-pin", b"v2"),
       (b"X-KillGate-Internal", b"1"), (b"Via", b"1.0 edge"), (b"Traceparent", b"00-a-b-01"),
       (b"Accept", b"*/*"), (b"accept", b"text/plain")]


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")
    assert lines[-2:] == [b"", b""]
    return [tuple(line.split(b": ", 1)) for line in lines[1:-2]]  # type: ignore[misc]


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
    RAW,  # Connection names a field: the second pass (`_kept`) rebuilds from the first line
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


def test_response_head_keeps_end_to_end_fields_and_frames_the_body_itself() -> None:
    raw = [(b"Content-Type", b"application/json"), (b"Connection", b"X-Backend-Secret"),
           (b"X-Backend-Secret", b"s"), (b"Proxy-Authenticate", b"Basic"),
           (b"Upgrade", b"h2c"), (b"x-killgate-version", b"spoofed"), (b"Content-Length", b"99"),
           (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"X-End", b"kept")]
    head = response_head(200, raw, b"x-killgate-version: v1\r\n", 2, b"close")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    fields = dict(_fields(head))
    assert fields == {b"Content-Type": b"application/json",
                      b"Date": b"Mon, 01 Jan 2024 00:00:00 GMT", b"X-End": b"kept",
                      b"via": b"1.1 killgate", b"x-killgate-version": b"v1",
                      b"content-length": b"2", b"connection": b"close"}
    dated = dict(_fields(response_head(404, [], b"", 0, None)))
    assert dated[b"date"].endswith(b" GMT") and b"connection" not in dated
    streamed = dict(_fields(response_head(200, raw, b"", None, None, chunked=True)))
    assert streamed[b"transfer-encoding"] == b"chunked" and b"content-length" not in streamed
    cached = [*raw, (b"Cache-Control", b"max-age=60"), (b"X-Accel-Buffering", b"yes")]
    sse = dict(_fields(response_head(200, cached, b"", None, None, chunked=True, sse=True)))
    assert sse[b"cache-control"] == b"no-cache" and sse[b"x-accel-buffering"] == b"no"
    assert b"Cache-Control" not in sse and b"X-Accel-Buffering" not in sse
    assert b"content-length" not in dict(_fields(response_head(204, [], b"", None, None)))


def test_own_head() -> None:
    head = own_head(503, b"application/json", 12, b"x-killgate-route: iris\r\n",
                    b"retry-after: 1\r\n", b"close")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    fields = dict(_fields(head))
    assert fields[b"content-length"] == b"12" and fields[b"retry-after"] == b"1"
    assert fields[b"x-killgate-route"] == b"iris" and fields[b"connection"] == b"close"


def test_connection_tokens() -> None:
    assert connection_tokens([b"Keep-Alive, X-A ,,x-b", b"close"]) == {
        b"keep-alive", b"x-a", b"x-b", b"close"}


@pytest.mark.parametrize("value, charset", [
    (None, None), ("application/json", None), ("application/json; charset=utf-8", "utf-8"),
    ('application/json;Charset="UTF-16"', "utf-16"), ("text/plain; x=1; charset=latin1", "latin1"),
])
def test_declared_charset(value: str | None, charset: str | None) -> None:
    assert declared_charset(value) == charset


def test_an_event_stream_answer_is_marked_whole_or_streamed() -> None:
    """Whatever the path (a whole answer or a stream), an SSE answer, of any case, is marked
    not to be cached or buffered, and the backend's own Cache-Control gives way."""
    for ctype in (b"text/event-stream", b"Text/Event-Stream; charset=utf-8"):
        raw = [(b"Content-Type", ctype), (b"Cache-Control", b"max-age=60")]
        fields = [(n.lower(), v) for n, v in _fields(response_head(200, raw, b"", 10, None))]
        assert fields.count((b"cache-control", b"no-cache")) == 1
        assert (b"x-accel-buffering", b"no") in fields
        assert (b"cache-control", b"max-age=60") not in fields
    plain = [(n.lower(), v) for n, v in _fields(response_head(
        200, [(b"Content-Type", b"text/plain"), (b"Cache-Control", b"max-age=60")], b"", 10, None))]
    assert (b"cache-control", b"max-age=60") in plain and b"x-accel-buffering" not in dict(plain)
