"""Content-Length lines, both ways: the framing line of a head the gateway writes (an
answer's to the client, a request's to a backend), formatted once per small length. Pure;
no I/O.

The request path writes one such line per direction on every request; formatting an int
into bytes costs about 700 CPU instructions, a subscript of this table far less.
"""

from __future__ import annotations

__all__ = ["LENGTH_LINES", "length_line"]

#: the Content-Length lines of small bodies, formatted once (bounded by construction:
#: lengths under 4096 only)
LENGTH_LINES: dict[int, bytes] = {}


def length_line(length: int) -> bytes:
    """`content-length: <length>\\r\\n`, remembered in LENGTH_LINES when small (the hot
    path reads `LENGTH_LINES[length]` first, and calls this for one it lacks)."""
    line = b"content-length: %d\r\n" % length
    if length < 4096:
        LENGTH_LINES[length] = line
    return line
