"""dataplane/parsing.py's field callback and the version read from a request line, without
sockets: the fields a head yields (compared with a reference split of the same bytes over
random heads, whole and fragmented), the limits at their exact boundaries, and the version
kept for a head completed in a later read. (test_protocol.py's fakes.)"""

from __future__ import annotations

import random

import pytest

from gateway.dataplane import wire
from gateway.dataplane.protocol import MAX_HEAD, MAX_HEADERS, MAX_LINE
from gateway.dataplane.wire import ALIASED, CHUNKED, HOST, LENGTH, NAMES, PLAIN, name_kind
from tests.test_protocol import Recorder, connect, ended, feed, until

_PLAIN = [b"Accept", b"User-Agent", b"X-Request-Id", b"Content-Type", b"a", b"X_Plain",
          b"Cookie", b"Authorization", b"x-custom-field"]
_OWS = [b"", b" ", b"  ", b"\t", b" \t "]


def _random_request(rng: random.Random) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """A valid request (head and a sized body), its fields as sent and its body."""
    fields: list[tuple[bytes, bytes]] = [(rng.choice([b"Host", b"host", b"HOST"]), b"h.example")]
    for _ in range(rng.choice([0, 1, 3, 10, 40, MAX_HEADERS - 3])):  # (3 more at most)
        value = bytes(rng.choice(b"abcXYZ09-_;=,/ \t\x80\xff") for _ in range(rng.randrange(12)))
        fields.append((rng.choice(_PLAIN), value))
    if rng.random() < 0.3:
        fields.append((b"traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"))
    body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 5, 300])))
    if body or rng.random() < 0.5:
        fields.append((rng.choice([b"Content-Length", b"content-length"]), b"%d" % len(body)))
    rng.shuffle(fields)
    head = b"POST /p?q=%d HTTP/1.1\r\n" % rng.randrange(99)
    for name, value in fields:
        head += name + b":" + rng.choice(_OWS) + value + rng.choice(_OWS) + b"\r\n"
    return head + b"\r\n" + body, fields, body


@pytest.mark.parametrize("seed", range(4))
async def test_the_fields_of_random_heads_are_their_bytes_split(seed: int) -> None:
    """What the handler gets is what a plain split of the head gives: names as sent, values
    without the spaces and tabs around them, in order; Host, Content-Length and the first
    traceparent noted. Whole, and in reads of every size."""
    rng = random.Random(seed)
    for case in range(60):
        data, fields, body = _random_request(rng)
        h = Recorder()
        proto, tr, _ = connect(h)
        feed(proto, data, rng.choice([0, 0, 1, 2, 7, 64, 500]))
        await until(lambda h=h: bool(h.seen))  # type: ignore[misc]
        req = h.seen[0]
        want = [(n, v.strip(b" \t")) for n, v in fields]
        assert req.raw_headers == want, (seed, case)
        assert req.host == b"h.example"
        lengths = [int(v) for n, v in want if n.lower() == b"content-length"]
        assert req.content_length == (lengths[0] if lengths else None)
        traces = [v for n, v in want if n == b"traceparent"]
        assert req.traceparent == (traces[0] if traces else None)
        assert req.body() == body and not tr.closed


@pytest.mark.parametrize("fields, refused", [(MAX_HEADERS, False), (MAX_HEADERS + 1, True)])
async def test_the_field_count_limit_holds_for_the_smallest_fields(fields: int,
                                                                   refused: bool) -> None:
    """`a:` is the smallest field there is (5 counted bytes): the count is checked only past
    5 * MAX_HEADERS counted bytes, which the one field too many always reaches."""
    h = Recorder()
    proto, tr, server = connect(h)
    feed(proto, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * (fields - 1) + b"\r\n")
    if refused:
        await until(lambda: ended(tr))
        assert b"more than %d header fields" % MAX_HEADERS in tr.out and h.seen == []
        assert server.counts == ["malformed"]
    else:
        assert len(h.seen) == 1 and len(h.seen[0].raw_headers) == MAX_HEADERS
        assert tr.out.startswith(b"HTTP/1.1 200") and not tr.closed


async def test_a_head_of_long_fields_past_its_limit_is_refused_as_too_large() -> None:
    h = Recorder()
    proto, tr, _ = connect(h)
    field = b"X-Big: " + b"v" * (MAX_LINE - 10) + b"\r\n"
    feed(proto, b"GET / HTTP/1.1\r\nHost: x\r\n" + field * (MAX_HEAD // MAX_LINE + 1) + b"\r\n")
    await until(lambda: ended(tr))
    assert b"the request head is too large" in tr.out and h.seen == []


async def test_a_trailer_section_of_many_small_fields_is_not_counted_as_a_head() -> None:
    """MAX_HEADERS is a limit on the head's fields; a trailer section (dropped) is bounded by
    its size only."""
    h = Recorder()
    proto, tr, _ = connect(h)
    feed(proto, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n" + b"a:\r\n" * (2 * MAX_HEADERS) + b"\r\n" + GET_B)
    await until(lambda: len(tr.out.split(b"HTTP/1.1 200")) == 3)
    assert [r.target for r in h.seen] == [b"/t", b"/b"]
    assert h.seen[0].raw_headers == [(b"Host", b"x"), (b"Transfer-Encoding", b"chunked")]
    assert not tr.closed


GET_B = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"


def test_field_names_are_classified_once_per_spelling_and_the_table_stays_bounded() -> None:
    assert name_kind(b"HoSt") == HOST and name_kind(b"content-LENGTH") == LENGTH
    assert NAMES[b"HoSt"] == HOST  # (remembered: the parser callback's subscript finds it)
    assert name_kind(b"Transfer-Encoding") == CHUNKED
    assert name_kind(b"Content_Length") == ALIASED and name_kind(b"x_killgate_route") == ALIASED
    # the x-forwarded-* family is the gateway's to write (requesthead.py): as `X_Forwarded_Port`
    # a WSGI backend would still read it as the gateway's
    assert name_kind(b"X_Forwarded_Port") == ALIASED
    assert name_kind(b"x_forwarded_prefix") == ALIASED
    assert name_kind(b"X_Plain") == PLAIN and name_kind(b"X-Plain") == PLAIN
    for i in range(5000):
        assert name_kind(b"x-invented-%d" % i) == PLAIN
        assert len(NAMES) <= 4096
    assert NAMES.get(b"x-invented-4999") == PLAIN  # (remembered after the table started over)
    assert name_kind(b"HoSt") == HOST and wire.NAMES is NAMES
    assert type(NAMES) is dict  # (a subclass's subscript is a method call: see wire.NAMES)


@pytest.mark.parametrize("reads, http10", [
    # the request line whole in the first read, the head completed in a later one: the
    # version read from that line holds
    ([b"GET /v HTTP/1.0\r\nHo", b"st: x\r\n\r\n"], True),
    ([b"GET /v HTTP/1.1\r\nHo", b"st: x\r\n\r\n"], False),
    # the line cut: the parser is asked
    ([b"GET /v HTT", b"P/1.0\r\nHost: x\r\n\r\n"], True),
    # a version read for the first head of a read is not the second head's
    ([GET_B + b"GET /v HTTP/1.0\r\nHo", b"st: x\r\nConnection: keep-alive\r\n\r\n"], True),
    ([b"GET /b HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /v HTTP/1.1\r\nHo",
      b"st: x\r\n\r\n"], False),
    # a read of empty lines before the request line
    ([GET_B, b"\r\n", b"\r\nGET /v HTTP/1.0\r\n", b"Host: x\r\n\r\n"], True),
])
async def test_a_head_completed_in_a_later_read_has_its_own_version(reads: list[bytes],
                                                                   http10: bool) -> None:
    h = Recorder()
    proto, _, _ = connect(h)
    for data in reads:
        proto.data_received(data)
    await until(lambda: bool(h.seen) and h.seen[-1].target == b"/v")
    req = h.seen[-1]
    assert req.http10 is http10
    assert req.keep_alive is (not http10 or b"keep-alive" in reads[-1])
