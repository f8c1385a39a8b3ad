"""dataplane/headers.py without sockets: the heads of answers to the client, as bytes (which
of a backend's fields cross, and our own answers' heads)."""

from __future__ import annotations

import pytest

from gateway.dataplane.headers import (
    declared_charset,
    own_head,
    response_head,
)


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")
    assert lines[-2:] == [b"", b""]
    return [tuple(line.split(b": ", 1)) for line in lines[1:-2]]  # type: ignore[misc]


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


def test_the_via_date_and_content_type_a_backends_connection_names_are_not_forwarded() -> None:
    """RFC 9110 §7.6.1: a field the Connection field names is that hop's, removed before
    the answer is forwarded; Via, Date and Content-Type included (found by review revproto7:
    the second pass dropped them, but the backend's Via was still joined into ours, and a
    named Date counted as sent, so the answer went without any Date)."""
    raw = [(b"Via", b"1.0 inner"), (b"Date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
           (b"Content-Type", b"text/event-stream"), (b"Connection", b"via, Date, content-type"),
           (b"X-End", b"kept")]
    fields = dict(_fields(response_head(200, raw, b"", 2, None)))
    assert fields[b"via"] == b"1.1 killgate"
    assert fields[b"date"].endswith(b" GMT") and b"Date" not in fields
    assert b"Content-Type" not in fields and fields[b"X-End"] == b"kept"


def test_own_head() -> None:
    head = own_head(503, b"application/json", 12, b"x-killgate-route: iris\r\n",
                    b"retry-after: 1\r\n", b"close")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    fields = dict(_fields(head))
    assert fields[b"content-length"] == b"12" and fields[b"retry-after"] == b"1"
    assert fields[b"x-killgate-route"] == b"iris" and fields[b"connection"] == b"close"


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


def test_a_streamed_answer_of_any_type_is_marked_not_to_be_buffered() -> None:
    """CONTRACT §3: streaming answers carry `cache-control: no-cache` and
    `x-accel-buffering: no`. Only SSE did: a chunked NDJSON token stream went out without
    them, and an nginx in front buffered it whole. A whole answer (with its length) keeps
    the backend's Cache-Control."""
    raw = [(b"Content-Type", b"application/x-ndjson"), (b"Cache-Control", b"max-age=60")]
    fields = [(n.lower(), v) for n, v in _fields(response_head(200, raw, b"", None, None,
                                                                 chunked=True))]
    assert fields.count((b"cache-control", b"no-cache")) == 1
    assert (b"x-accel-buffering", b"no") in fields
    assert (b"cache-control", b"max-age=60") not in fields
    whole = dict(_fields(response_head(200, raw, b"", 10, None)))
    assert whole[b"Cache-Control"] == b"max-age=60" and b"x-accel-buffering" not in whole


@pytest.mark.parametrize(("given", "sent"), [
    (b"no-store", b"no-cache, no-store"), (b"private, max-age=0", b"no-cache, private"),
    (b"Private, No-Store", b"no-cache, no-store, private")])
def test_a_marked_answer_keeps_what_the_backend_says_against_storing_it(
        given: bytes, sent: bytes) -> None:
    """A streamed (or SSE) answer's Cache-Control gives way to `no-cache`, which lets a
    cache store the answer (it must only revalidate it): a backend's `no-store` or
    `private` (one user's answer, kept from shared caches) was replaced by it too."""
    for chunked, ctype in ((True, b"application/x-ndjson"), (False, b"text/event-stream")):
        raw = [(b"Content-Type", ctype), (b"Cache-Control", given)]
        fields = [(n.lower(), v) for n, v in _fields(response_head(
            200, raw, b"", None if chunked else 10, None, chunked=chunked))]
        assert [v for n, v in fields if n == b"cache-control"] == [sent], fields
        assert (b"x-accel-buffering", b"no") in fields
