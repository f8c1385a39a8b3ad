"""A request line's protocol, when its head did not arrive as the first bytes of one read.

llhttp parses `GET / RTSP/1.0` (RTSP's methods that HTTP has too) and `SOURCE / ICE/1.0` as
HTTP/1.0, and says nothing of the protocol a line named. Where `Parsing.on_headers_complete`
cannot read it from the read a line began (pipelined, after empty lines, split across
reads), the line is found in the bytes read: kept while it is open (bounded; not when the
read it began at the start of shows it whole naming HTTP/1.1 or 1.0, which is where
`on_headers_complete` reads it), judged once complete (headrules.foreign_line), refused if
it names RTSP or ICE. A base of
`parsing.Parsing`; the connection (protocol.py) sets `reading` and calls `_line_read`.
"""

from __future__ import annotations

from typing import Any

from gateway.dataplane.headrules import FOREIGN, foreign_line
from gateway.dataplane.request import Request
from gateway.dataplane.wire import MAX_LINE

__all__ = ["RequestLine"]

#: bytes of a request line split across reads kept to read its protocol (`_line_read`): a
#: line and a first field, each at most MAX_LINE
_LINE_KEPT = 2 * MAX_LINE + 64


def _http_line(first: bytes, method: bytes, req: Request) -> bool:
    """Whether `first` (`first_read`: a read that began between requests) shows the request
    line of `req` whole, naming HTTP/1.1 or 1.0: `Parsing.on_headers_complete`'s test,
    which reads its version there (when this holds, the line is complete, so its method
    and target are too)."""
    at = len(method) + len(req.target) + 1
    return first[at:at + 11] in (b" HTTP/1.1\r\n", b" HTTP/1.0\r\n")


class RequestLine:
    """The protocol check of `HttpProtocol`'s request lines (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    parser: Any  # httptools.HttpRequestParser
    parsing: Request | None
    fresh: bool
    first_read: bytes | None
    #: the read being parsed (set around the parser call), and the reads of a request
    #: line still open when a read ended
    reading: bytes | memoryview | None
    line: bytearray | None

    def _version(self, req: Request, method: bytes) -> str:
        """The parser's version of `req`, when its request line did not begin a read (or
        split across reads); a line that names RTSP or ICE, which llhttp takes as HTTP of
        the same numbers, is refused (FOREIGN). The line is in this read when the head began
        in it (`fresh`), else in the reads `_line_read` kept, or was judged there."""
        line = self.line
        if self.fresh:
            data = self.reading
            if data is not None and foreign_line(bytes(data), method, req.target,
                                                 _first(req)):
                req.refused = FOREIGN
        elif line is not None:
            self.line = None
            data = self.reading
            if foreign_line(line + (data or b""), method, req.target, _first(req)):
                req.refused = FOREIGN
        return self.parser.get_http_version()

    def _line_read(self, data: bytes | memoryview) -> None:
        """A read ended inside a request head: while its request line (or first field) is
        open, the read is kept for `_version` (bounded: a line and a field, each at most
        MAX_LINE); once it is complete, it is judged here if it was kept."""
        req: Request = self.parsing  # type: ignore[assignment]  # (in a head)
        if not req.raw_headers:
            if self.fresh:  # (the request began in this read: at most its tail is its own)
                first = self.first_read
                if first is not None and _http_line(first, self.parser.get_method(), req):
                    return  # (`on_headers_complete` reads it in `first_read`, and keeps none)
                self.line = bytearray(data[-_LINE_KEPT:])
            elif self.line is not None and len(self.line) < 2 * _LINE_KEPT:
                self.line += data  # (a bytearray: a line sent a byte a read costs no copies)
            return
        line = self.line
        if self.fresh or line is not None:  # (the line is complete: not yet judged)
            self.line = None
            seen = bytes(data) if line is None else line + data
            if foreign_line(seen, self.parser.get_method(), req.target, _first(req)):
                req.refused = FOREIGN


def _first(req: Request) -> bytes | None:
    """The name of `req`'s first field as sent (what follows its request line), if any."""
    return req.raw_headers[0][0] if req.raw_headers else None
