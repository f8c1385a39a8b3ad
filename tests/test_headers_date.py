"""The Date line of answers a backend sent without one (dataplane/headers.py), without
sockets: the fast path's `answer_head` reads no clock of its own (the event loop's, read once
per socket event, says when the second turns; the wall clock is read once a second), and
every head carries the second it is written in: when the wall clock turns, and when it
steps back (a Date from the future was kept until the clock caught up: an hour's step, an
hour of answers dated an hour ahead)."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime

import pytest

from gateway.dataplane import headers
from gateway.dataplane.headers import answer_head, own_head, response_head

pytestmark = pytest.mark.timeout(10)


def _second(head: bytes) -> int:
    """The Date line's time, in whole seconds since the epoch."""
    for line in head.split(b"\r\n"):
        if line.startswith(b"date: "):
            return int(parsedate_to_datetime(line[6:].decode()).timestamp())
    raise AssertionError(f"no date line in {head!r}")


def _fast(now: float) -> bytes:
    return answer_head(200, [b"x-a", b": ", b"1", b"\r\n"], False, b"", 2, None, now, b"{}")


async def test_an_answer_without_a_date_gets_the_second_it_is_written_in() -> None:
    loop = asyncio.get_running_loop()
    before = int(time.time())
    second = _second(_fast(loop.time()))
    assert before <= second <= int(time.time())
    # the backend's own Date is forwarded, and no line of ours is added
    dated = answer_head(200, [b"date", b": ", b"Mon, 01 Jan 2024 00:00:00 GMT", b"\r\n"],
                        True, b"", 2, None, loop.time(), b"{}")
    assert dated.count(b"date: ") == 1 and b"date: Mon, 01 Jan 2024" in dated


async def test_the_date_turns_with_the_wall_clocks_second() -> None:
    loop = asyncio.get_running_loop()
    first = _second(_fast(loop.time()))
    deadline = time.monotonic() + 3
    while int(time.time()) <= first:  # (polled: the next wall-clock second)
        assert time.monotonic() < deadline, "the wall clock did not turn"
        await asyncio.sleep(0.005)
    turned = int(time.time())
    # the loop's clock (as each socket event reads it) is past the second's end on it
    assert _second(_fast(loop.time())) >= turned > first


@pytest.mark.parametrize("head", ["answer_head", "response_head", "own_head"])
async def test_a_wall_clock_stepped_back_is_not_answered_with_a_date_from_the_future(
        head: str) -> None:
    loop = asyncio.get_running_loop()
    if head == "answer_head":
        _fast(loop.time())  # (its second's end on the loop's clock noted)
    # the second formatted last is an hour ahead of the wall clock now: as after an NTP
    # step back of an hour (or a clock set right after running fast)
    headers._DATE_NOW.refresh(time.time() + 3600)
    deadline = time.monotonic() + 3
    while True:
        if head == "answer_head":
            got = _fast(loop.time())
        elif head == "response_head":
            got = response_head(200, [], b"", 2, None, body=b"{}")
        else:
            got = own_head(503, b"application/json", 2, b"", b"", None)
        if _second(got) <= int(time.time()):
            break
        # (the fast path's line of the second turns within a second of the loop's clock)
        assert head == "answer_head" and time.monotonic() < deadline, \
            f"{head}: dated {_second(got) - time.time():.0f} s ahead"
        await asyncio.sleep(0.01)
    assert _second(got) >= int(time.time()) - 1
