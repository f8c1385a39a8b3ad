"""Content-Length, both ways: the number a field says (a request's, an answer's), read
once per short spelling, and the framing line of a head the gateway writes (an answer's to
the client, a request's to a backend), formatted once per small length. Pure; no I/O.

The request path reads two such fields and writes two such lines on every request: int()
of bytes costs about 1,000 CPU instructions and formatting one about 700, a subscript of
these tables a few hundred.
"""

from __future__ import annotations

__all__ = ["HEAD_ENDS", "LENGTHS", "LENGTH_LINES", "head_end", "length_line", "length_value"]

#: Content-Length values as sent -> their number, for the short ones (at most 4 digits:
#: at most 11,110 spellings, bounded by construction); digits only
LENGTHS: dict[bytes, int] = {}

#: the Content-Length lines of small bodies, formatted once (bounded by construction:
#: lengths under 4096 only)
LENGTH_LINES: dict[int, bytes] = {}

#: the same lines with the head's empty line after them (a head that ends with its
#: Content-Length: one part less to join, ~140 CPU instructions), bounded the same way
HEAD_ENDS: dict[int, bytes] = {}


def length_line(length: int) -> bytes:
    """`content-length: <length>\\r\\n`, remembered in LENGTH_LINES when small (the hot
    path reads `LENGTH_LINES[length]` first, and calls this for one it lacks)."""
    line = b"content-length: %d\r\n" % length
    if length < 4096:
        LENGTH_LINES[length] = line
    return line


def head_end(length: int) -> bytes:
    """`content-length: <length>\\r\\n\\r\\n`, remembered in HEAD_ENDS when small (as
    `length_line`)."""
    end = b"content-length: %d\r\n\r\n" % length
    if length < 4096:
        HEAD_ENDS[length] = end
    return end


def length_value(digits: bytes) -> int:
    """The number a Content-Length of digits only says (llhttp checked a request's; an
    answer's caller checks it), remembered in LENGTHS when short (the hot path reads
    `LENGTHS[value]` first, and calls this for one it lacks)."""
    try:
        n = int(digits)
    except ValueError:  # over int()'s 4300 digits: llhttp framed it, so all but its last
        n = int(digits.lstrip(b"0") or b"0")  # 20 digits are zeros (RFC 9110 §8.6)
    if len(digits) <= 4 and digits.isdigit():  # (what an answer's caller would take too)
        LENGTHS[digits] = n
    return n
