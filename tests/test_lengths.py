"""dataplane/lengths.py: Content-Length values read once per short spelling and lines
formatted once per small length (RESULTS §31) give the numbers and bytes int() and
formatting gave, remember only what is bounded, and never a value that is not digits."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.dataplane import lengths
from gateway.dataplane.exchange import Exchange
from gateway.dataplane.lengths import (
    HEAD_ENDS,
    LENGTH_LINES,
    LENGTHS,
    head_end,
    length_line,
    length_value,
)
from gateway.dataplane.upstream import Pool


class Transport(asyncio.Transport):
    def write(self, data: Any) -> None: ...

    def abort(self) -> None: ...


def test_a_value_is_its_number_and_only_short_digit_spellings_are_remembered() -> None:
    for digits in (b"0", b"7", b"88", b"0088", b"9999", b"10000", b"123456789012"):
        assert length_value(digits) == int(digits)
        assert (digits in LENGTHS) is (len(digits) <= 4), digits
        assert LENGTHS.get(digits, int(digits)) == int(digits)
    # over int()'s 4300 digits: leading zeros before what llhttp's uint64 bounds
    assert length_value(b"0" * 5000 + b"42") == 42
    # not digits (an empty value, if one ever came this far): never remembered, or an
    # answer's empty Content-Length, which frames nothing, would read as 0
    assert length_value(b"") == 0 and b"" not in LENGTHS
    assert b"+5" not in LENGTHS and b" 5" not in LENGTHS
    assert all(k.isdigit() and len(k) <= 4 for k in LENGTHS)
    assert lengths.LENGTHS is LENGTHS


def test_a_line_is_the_formatted_one_and_only_small_lengths_are_remembered() -> None:
    for n in (0, 17, 4095, 4096, 123_456):
        assert length_line(n) == b"content-length: %d\r\n" % n
        assert (n in LENGTH_LINES) is (n < 4096)


async def test_an_answer_reads_the_same_length_from_the_table_as_the_first_time() -> None:
    loop = asyncio.get_running_loop()
    pool = Pool("http", "127.0.0.1", 9, 4, loop, set(), 8)
    for value, length in [(b"2", 2), (b"2", 2), (b"0002", 2), (b"0002", 2), (b"2  ", 2),
                          (b"2  ", 2), (b"00000000002", 2)]:
        ex = Exchange(pool)
        ex.connection_made(Transport())
        ex.begin(loop.time() + 5, 5, False)
        ex.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: %b\r\n\r\nok" % value)
        assert ex.error is None and ex.complete and ex.length == length, value
        assert ex.take_body() == b"ok"
    assert b"2  " not in LENGTHS  # (trailing whitespace stripped first: digits only)


def test_a_head_end_is_the_line_and_the_empty_line_and_only_small_ones_are_remembered() -> None:
    """HEAD_ENDS (a head that ends with its Content-Length: one part less to join)."""
    for n in (0, 17, 4095, 4096, 123_456):
        assert head_end(n) == length_line(n) + b"\r\n"
        assert (n in HEAD_ENDS) is (n < 4096)
        assert HEAD_ENDS.get(n, head_end(n)) == b"content-length: %d\r\n\r\n" % n
