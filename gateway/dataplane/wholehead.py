"""A request head whole in one read, parsed by llhttp with no Python call per field.

Each connection has two llhttp parsers: `full` calls `Parsing.on_header` for each field (a
call from C, two bytes objects and the callback's ~45 bytecodes a field); `fast` has the
same callbacks but no `on_header` (httptools asks for them by name once, when the parser is
made: without it, llhttp still parses and judges every field, framing included, and makes
no Python objects for them). When a read begins between requests and holds an empty line
(`WholeHead._whole`), it goes to `fast`; once llhttp has judged the head whole
(`on_headers_complete`), its fields are read from the judged bytes in one pass
(`_whole_fields`: one regular expression, then `Parsing.on_header`'s classification,
counting and refusals, field by field in order) before the head's checks run.

llhttp stays the only judge of syntax and framing: it refuses the bytes before anything
reads them (strict mode refuses obs-fold, bare CR or LF, whitespace before a colon, CTLs and
non-token names), and a head the one pass could read otherwise, or that it does not take,
is parsed again by `full` from the read's first byte, as if it had come there (`Again`:
nothing was decided yet): a request line that did not begin the read or is not HTTP/1.1, a
field value with trailing whitespace, more than MAX_HEADERS fields, a transfer coding (its
trailer fields reach only `on_header`), bytes after the message in the same read (pipelined:
`fast` must not begin a head), and a head that did not end in the read. A message `fast`
began and whose body runs on ends in `fast`, and the bytes after it go to `full`
(`_split`). Once a request turns its connection's keep-alive off (`fast` is then None), the
parser that read it reads the rest, as llhttp refuses what follows such a request.
"""

from __future__ import annotations

import re
from typing import Any

import httptools

from gateway.dataplane.headrules import head_field
from gateway.dataplane.lengths import LENGTHS, length_value
from gateway.dataplane.request import Request
from gateway.dataplane.wire import CHUNKED, DROPPED, HOST, LENGTH, MAX_HEADERS, NAMES, name_kind

__all__ = ["Again", "WholeHead", "fast_parser"]

#: a field name (RFC 9110 5.1: a token), as llhttp accepts one
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _kind(name: bytes) -> int:
    """The kind of a field name not yet in `NAMES`, if it is a token (else `Again`: the one
    pass split a line otherwise than llhttp)."""
    if _TOKEN.fullmatch(name) is None:
        raise Again
    return name_kind(name)


class Again(Exception):
    """The head `fast` parsed is not one the one pass takes: parsed again by `full`."""


class _Callbacks:
    """`fast`'s callbacks: the connection's, with `_whole_fields` before its
    `on_headers_complete`, and no `on_header`."""

    __slots__ = ("on_body", "on_headers_complete", "on_message_begin", "on_message_complete",
                 "on_url")

    def __init__(self, conn: Any) -> None:
        self.on_message_begin = conn.on_message_begin
        self.on_url = conn.on_url
        self.on_headers_complete = conn._whole_fields
        self.on_body = conn.on_body
        self.on_message_complete = conn.on_message_complete


def fast_parser(conn: Any) -> Any:
    """A parser of `conn` (an `HttpProtocol`) that calls no `on_header`."""
    return httptools.HttpRequestParser(_Callbacks(conn))


class WholeHead:
    """The one-pass path of `HttpProtocol` (see the module docstring)."""

    # the connection's state (HttpProtocol's)
    parser: Any
    full: Any
    fast: Any
    parsing: Request | None
    reading: bytes | memoryview | None
    first_read: bytes | None
    in_head: bool
    fresh: bool
    stopped: bool
    head_end: int
    on_headers_complete: Any
    _parse_error: Any

    def _whole(self, data: bytes, end: int) -> bool:
        """`data`, a read that began between requests, holds an empty line at `end`: parsed
        by `fast`, unless its head is not one the one pass takes (False: nothing was
        decided, and `full` parses it from its first byte)."""
        self.parser = fast = self.fast
        self.head_end = end
        self.reading = data
        try:
            fast.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.stopped = True
            return True
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if not (self.in_head and (cause is None or isinstance(cause, Again))):
                self._parse_error(exc)
                return True
        else:
            if not self.in_head:  # (else its head did not end in this read)
                return True
        finally:
            self.reading = None
        self.fast = fast_parser(self)  # (that one is in error, or inside a head)
        self.parser = self.full
        self.parsing = None
        self.fresh = False
        self.first_read = data
        return False

    def _whole_fields(self) -> None:
        """`fast`'s head is complete and llhttp judged it: its fields, read from the bytes
        in one pass as `Parsing.on_header` reads each, then `on_headers_complete`."""
        req: Request = self.parsing  # type: ignore[assignment]  # (in a head)
        data: bytes = self.reading  # type: ignore[assignment]
        # The field lines, after the first CRLF: the request line's (when the read began
        # with empty lines, that line's "name" is no token, and the head is parsed again)
        head = data[data.find(b"\r\n") + 2:self.head_end + 2]
        # `name: value` as llhttp reads it when one space follows the colon and none ends
        # the line (llhttp skips more before a value, and `on_header` strips them after it;
        # `find`, as `in` first tries the bytes as an integer: a TypeError made and dropped)
        if head.find(b" \r\n") >= 0 or head.find(b":  ") >= 0 or head.find(b"\t") >= 0:
            raise Again
        lines = head.split(b"\r\n")
        del lines[-1]  # (after the last CRLF)
        if len(lines) > MAX_HEADERS:
            raise Again  # (refused field by field, once the fields before were read)
        raw = req.raw_headers
        kept = req.kept
        for line in lines:
            name, _, value = line.partition(b": ")
            raw.append((name, value))
            try:  # (a name here was a token llhttp read: a line without ": " is no token)
                kind = NAMES[name]
            except KeyError:
                kind = _kind(name)
            if not kind:
                kept += (line, b"\r\n")
            elif kind == HOST and req.host is None:
                req.host = value
            elif kind == LENGTH:
                try:
                    req.content_length = LENGTHS[value]
                except KeyError:
                    req.content_length = length_value(value)
            elif kind == CHUNKED:
                raise Again
            elif kind != DROPPED:
                head_field(req, kind, name, value)
        length = req.content_length
        if len(data) > (self.head_end + 4 if length is None else self.head_end + 4 + length):
            raise Again  # (bytes after the message: `fast` would begin the next head)
        self.on_headers_complete()

    def _split(self, data: bytes | memoryview, rest: int) -> None:
        """`fast`'s message ends `rest` bytes into `data`: the rest goes to `full`."""
        self.fast.feed_data(data[:rest])
        self.parser = full = self.full
        full.feed_data(data[rest:])
