"""Answer heads seen before, byte for byte: what the exchange's field callbacks made of each
(`SEEN`), so that the same head again is parsed by llhttp without a Python call per field.

A backend answers most requests with the same head (the same fields, the same length and,
within a second, the same Date). llhttp parses every answer either way and stays the only
judge of its framing and keep-alive: a head found here is fed to a parser that calls no
`on_header` (`Fields`: httptools makes no bytes and no call per field), and the exchange
takes the fields' classification (`AnswerParsing.on_header`'s) from the entry the same bytes
made the first time. Only heads framed by Content-Length and free of what depends on more
than their bytes are kept: no Location (rewritten per backend), no field that only
`response_head` handles, no transfer coding (a trailer's fields reach only `on_header`), not
to HEAD, no 1xx before it, whole in the answer's first read.

A connection whose heads keep missing (a backend that varies a field per answer: a request
id, a timing) stops looking for a while (`MISSES`, `PAUSE`): a miss costs its lookup and the
entry made. Bounded; pure bytes, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["HEAD_MAX", "MISSES", "PAUSE", "SEEN", "SEEN_MAX", "Fields", "Seen", "look",
           "remember"]

#: a head longer than this (from the status line to its last field's CRLF) is never kept
HEAD_MAX = 1024
#: heads kept at most (then the table starts over)
SEEN_MAX = 256
#: misses in a row after which a connection stops looking, for its next PAUSE answers
MISSES = 16
PAUSE = 1024


class Seen:
    """What the field callbacks made of one head: the forwarded fields as one head part,
    the fields as they came (never changed once made: exchanges share the list), whether a
    Date was among them, and the Content-Length."""

    __slots__ = ("dated", "headers", "length", "lines")

    def __init__(self, lines: list[bytes], headers: list[tuple[bytes, bytes]], dated: bool,
                 length: int) -> None:
        self.lines = [b"".join(lines)]
        self.headers = headers
        self.dated = dated
        self.length = length


#: a head's bytes (the status line to its last field's CRLF) -> what the field callbacks
#: made of it
SEEN: dict[bytes, Seen] = {}


def look(ex: Any, data: bytes, end: int) -> None:
    """The first read of an answer (`Exchange.data_received`), `data`, holds one final head
    that ends at `end` (its empty line): when that head was seen, `ex` (the exchange) takes
    what its fields were and the parser without field callbacks; when not, `ex.head_key` is
    what `remember` keeps once it is parsed; `MISSES` in a row and the connection stops
    looking for its next PAUSE answers (`ex.head_pause`, which the exchange counts down)."""
    key = data[:end]
    seen = SEEN.get(key)
    if seen is None:
        ex.head_key = key
        ex.head_misses = misses = ex.head_misses + 1
        if misses >= MISSES:
            ex.head_misses = 0
            ex.head_pause = PAUSE
        return
    ex.length = seen.length
    ex._framed = True
    ex.lines = seen.lines
    ex.dated = seen.dated
    ex.headers = seen.headers
    ex.parser = ex.fast
    ex.head_misses = 0


def remember(key: bytes, lines: list[bytes], headers: list[tuple[bytes, bytes]],
             dated: bool, length: int) -> None:
    """Keep what the field callbacks made of the head `key` (bounded)."""
    if len(SEEN) >= SEEN_MAX:
        SEEN.clear()
    SEEN[key] = Seen(lines, headers, dated, length)


class Fields:
    """The callbacks of an exchange's second parser, for heads in `SEEN`: the exchange's own,
    but no `on_header` (httptools asks for each by name once, when the parser is made)."""

    __slots__ = ("on_body", "on_chunk_complete", "on_chunk_header", "on_headers_complete",
                 "on_message_begin", "on_message_complete")

    def __init__(self, ex: Any) -> None:
        self.on_message_begin: Callable[[], object] = ex.on_message_begin
        self.on_headers_complete: Callable[[], None] = ex.head_parsed  # (no Connection)
        self.on_body: Callable[[bytes], None] = ex.on_body
        self.on_message_complete: Callable[[], None] = ex.on_message_complete
        self.on_chunk_header: Callable[[], None] = ex.on_chunk_header
        self.on_chunk_complete: Callable[[], None] = ex.on_chunk_complete
