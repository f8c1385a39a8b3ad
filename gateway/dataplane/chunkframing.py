"""A chunked request body's framing on a data-plane connection: chunk headers (sizes and
extensions, which llhttp hands to no callback) and the trailer section counted like a head
and bounded, and the framing a request spends besides its body bounded in all (Node's
CVE-2024-22019). A base of `protocol.HttpProtocol`, which owns the connection and the
state these read; the head and body callbacks are parsing.py's.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.dataplane.request import Request
from gateway.dataplane.wire import MAX_HEAD

__all__ = ["FRAMING_PER_CHUNK", "ChunkFraming"]

#: bytes of framing a chunk may bring besides as many as its body (`ChunkFraming._framed`):
#: a size of 16 hex digits, its CRLF and the data's are 20
FRAMING_PER_CHUNK = 32


class ChunkFraming:
    """on_chunk_header, on_chunk_complete, _framed (see the module docstring)."""

    # the connection's state they read and write (HttpProtocol's)
    in_trailer: bool
    fresh: bool
    head_bytes: int
    wire_bytes: int
    framing: int
    nchunks: int
    _malformed: Callable[..., None]


    def on_chunk_header(self) -> None:
        # the data of a chunk follows, or (after the last, empty one) the trailer section
        self.in_trailer = self.fresh = True
        self.head_bytes = self.wire_bytes = 0
        self.nchunks += 1

    def _framed(self, req: Request, n: int) -> None:
        """`n` bytes of a read spent in `req`'s chunked body were not body: chunk sizes,
        extensions, CRLFs, trailers (a read that ends the request is not counted: one read
        or slice at most). Each chunk header is bounded (`_chunk_line`), but without a bound
        per request one byte of body per 64 KiB header made `max_body_size` and the body
        deadline mean nothing: allowed are a head's and a trailer section's worth, as many
        bytes as the body, and FRAMING_PER_CHUNK a chunk (Node bounds extensions per
        message for CVE-2024-22019)."""
        self.framing = framing = self.framing + n
        if framing > 2 * MAX_HEAD + req.body_size + FRAMING_PER_CHUNK * self.nchunks:
            self._malformed(400, "the chunked body's framing (chunk extensions) is too large")

    def on_chunk_complete(self) -> None:
        self._chunk_line()

    def _chunk_line(self) -> None:
        """A chunk header follows: its size and extensions (`5;name=value`), which llhttp
        skips and hands to no callback (neither body nor field: not under max_body_size,
        and no body deadline moves). Counted like a trailer section, so that one request
        cannot send them without end (Node's CVE-2024-22019)."""
        self.in_trailer = self.fresh = True
        self.head_bytes = self.wire_bytes = 0
