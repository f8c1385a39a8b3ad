"""Answer heads seen before: what the exchange's field callbacks made of each (`SEEN`), so
that a head seen again is parsed by llhttp without a Python call per field.

A backend answers most requests with the same head but for its Content-Length (the same
fields and, within a second, the same Date). llhttp parses every answer either way and stays
the only judge of its framing and keep-alive: a head found here is fed to a parser that calls
no `on_header` (`Fields`: httptools makes no bytes and no call per field), and the exchange
takes the fields' classification (`AnswerParsing.on_header`'s) from the entry made the first
time. The key is the head's bytes with the digits of its one Content-Length line left out
(`look`): two heads with one key differ in those digits alone, where llhttp read the first
one's Content-Length value, so llhttp parses both alike but for that number, which is read
from the same digits (an entry is made only when the one Content-Length field `on_header`
was given had exactly them: `remember`). Only heads framed by Content-Length and free of what
depends on more than their bytes are kept: no Location (rewritten per backend), no field that
only `response_head` handles, no transfer coding (a trailer's fields reach only
`on_header`), not to HEAD, no 1xx before it, whole in the answer's first read. Bounded; pure
bytes, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.dataplane.lengths import LENGTHS, length_value

__all__ = ["HEAD_MAX", "SEEN", "SEEN_MAX", "Fields", "Seen", "look", "remember"]

#: a head longer than this (from the status line to its last field's CRLF) is never kept
HEAD_MAX = 1024
#: heads kept at most (then the table starts over: a backend that varies its heads costs a
#: lookup and a store an answer, and the memory of at most SEEN_MAX heads)
SEEN_MAX = 256
_LINE = b"\r\ncontent-length: "  # (the usual spelling, in any case: others are never kept)


class Seen:
    """What the field callbacks made of one head: the forwarded fields as one head part,
    the fields as they came (never changed once made: exchanges share the list), where
    the Content-Length field is among them and its digits, and whether a Date was there."""

    __slots__ = ("at", "dated", "digits", "headers", "length", "lines")

    def __init__(self, lines: list[bytes], headers: list[tuple[bytes, bytes]], at: int,
                 digits: bytes, dated: bool, length: int) -> None:
        self.lines = [b"".join(lines)]
        self.headers = headers
        self.at = at
        self.digits = digits
        self.dated = dated
        self.length = length


#: a head's key (`look`) -> what the field callbacks made of it
SEEN: dict[bytes, Seen] = {}


def look(ex: Any, data: bytes, end: int) -> None:
    """The first read of an answer (`Exchange.data_received`), `data`, holds one final head
    that ends at `end` (its empty line): when that head was seen (the same bytes, or but for
    its Content-Length), `ex` (the exchange) takes what its fields were and the parser
    without field callbacks; when not, `ex.head_key` and `ex.head_digits` are what
    `remember` keeps once it is parsed."""
    exact = data[:end]
    try:  # (the same bytes: most answers of a backend within a second)
        seen = SEEN[exact]
    except KeyError:
        pass
    else:
        ex.length = seen.length
        ex._framed = True
        ex.lines = seen.lines
        ex.dated = seen.dated
        ex.headers = seen.headers
        ex.parser = ex.fast
        return
    at = data.find(b"ength: ", 0, end)  # (in "Content-Length: " or "content-length: ")
    while data[at - 11:at + 7].lower() != _LINE:  # (another field's, or none: -1)
        if at < 0:
            return
        at = data.find(b"ength: ", at + 7, end)
    at += 7
    stop = data.find(b"\r\n", at, end + 2)
    digits = data[at:stop]
    if not digits.isdigit() or len(digits) > 18:  # (whitespace around the digits, or
        return  # a number llhttp may refuse: it reaches no callback, and the head fails)
    key = data[:at] + data[stop:end]
    try:
        seen = SEEN[key]
    except KeyError:
        ex.head_key = (exact, key)
        ex.head_digits = digits
        return
    try:
        ex.length = LENGTHS[digits]
    except KeyError:
        ex.length = length_value(digits)
    ex._framed = True
    ex.lines = seen.lines
    ex.dated = seen.dated
    ex.headers = headers = seen.headers.copy()
    headers[seen.at] = (headers[seen.at][0], digits)
    ex.parser = ex.fast


def remember(keys: tuple[bytes, bytes], digits: bytes, lines: list[bytes],
             headers: list[tuple[bytes, bytes]], dated: bool, length: int) -> None:
    """Keep what the field callbacks made of the head of `keys` (`look`'s: its bytes, and
    them but for its Content-Length's digits), when its one Content-Length field said
    `digits` (then the digits the second key leaves out are that field's value; bounded)."""
    at = -1
    for i, (name, value) in enumerate(headers):
        if len(name) == 14 and name.lower() == b"content-length":
            if at >= 0 or value != digits:
                return  # (two, or another value: never kept)
            at = i
    if at < 0:
        return
    if len(SEEN) >= SEEN_MAX:
        SEEN.clear()
    SEEN[keys[0]] = SEEN[keys[1]] = Seen(lines, headers, at, digits, dated, length)


class Fields:
    """The callbacks of an exchange's second parser, for heads in `SEEN`: the exchange's own,
    but no `on_header` (httptools asks for each by name once, when the parser is made)."""

    __slots__ = ("on_body", "on_chunk_complete", "on_chunk_header", "on_headers_complete",
                 "on_message_begin", "on_message_complete")

    def __init__(self, ex: Any) -> None:
        self.on_message_begin: Callable[[], object] = ex.on_message_begin
        self.on_headers_complete: Callable[[], None] = ex.on_headers_complete
        self.on_body: Callable[[bytes], None] = ex.on_body
        self.on_message_complete: Callable[[], None] = ex.on_message_complete
        self.on_chunk_header: Callable[[], None] = ex.on_chunk_header
        self.on_chunk_complete: Callable[[], None] = ex.on_chunk_complete
