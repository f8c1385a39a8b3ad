"""dataplane/sse.py: event boundaries for every line ending, fed in fragments, capped."""

from __future__ import annotations

import pytest

from gateway.dataplane.sse import EventCutter, last_boundary

EVENTS = [b"data: a\n\n", b"data: b\r\n\r\n", b"data: c\r\r", b"id: 1\ndata: d\r\n\n",
          b"data: e\n\r", b"data: f\r\n\r"]


@pytest.mark.parametrize("event", EVENTS)
def test_each_line_ending_ends_an_event(event: bytes) -> None:
    assert last_boundary(event) == len(event)
    assert last_boundary(event + b"data: partial") == len(event)


@pytest.mark.parametrize("data", [b"data: x\r\n", b"data: x\r\ndata: y\r\n", b"data: x\n",
                                  b"data: x\r", b"data: x"])
def test_a_single_line_end_is_not_an_event_end(data: bytes) -> None:
    assert last_boundary(data) == -1


def test_fed_one_byte_at_a_time_events_come_out_whole() -> None:
    stream = b"".join(EVENTS) + b"data: last\n\n"
    cut = EventCutter()
    out: list[bytes] = []
    for i in range(len(stream)):
        piece = cut.feed(stream[i:i + 1])
        if piece:
            out.append(piece)
    assert b"".join(out) + cut.flush() == stream
    for piece in out:  # every forwarded piece ends on a boundary
        assert last_boundary(piece) == len(piece), piece


def test_held_back_bytes_are_capped() -> None:
    cut = EventCutter(cap=100)
    assert cut.feed(b"data: " + b"x" * 50) == b""
    big = cut.feed(b"y" * 100)
    assert len(big) == 156 and cut.mid_event and cut.tail == b""
    assert cut.feed(b"zz\n\ndata: n") == b"zz\n\n"
    assert not cut.mid_event and cut.tail == b"data: n"
    # an event whose end is followed by a long unterminated one
    assert cut.feed(b"\n\n" + b"q" * 200) == b"data: n\n\n" + b"q" * 200
    assert cut.mid_event
