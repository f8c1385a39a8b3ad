"""Cutting a Server-Sent Events stream on event boundaries, with a bounded hold-back.

Pure. The proxy forwards SSE as whole events, so that a `killgate.error` event it may have
to add never lands inside a half-sent one. An event ends at an empty line, and a line ends
with CRLF, LF or CR (WHATWG HTML, "event stream interpretation"): all three count. The
incomplete event held back is capped: past `cap` bytes it is forwarded as it is, and the
cutter remembers it is mid-event (a failure then cannot be reported as an event, and the
proxy aborts the connection instead).
"""

from __future__ import annotations

import re

__all__ = ["EVENT_CAP", "EventCutter", "last_boundary"]

EVENT_CAP = 256 * 1024
# two line ends in a row; a CR directly followed by LF is one line end, not two
_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)")
# A try of `_BOUNDARY` at offset p reads p..p+3 at most (CRLF CRLF; a CR's look-ahead), so
# appending bytes can only change what is found at the 3 last offsets of what was searched.
_RESCAN = 3

Buffer = bytes | bytearray
# `_CR in data`, an int: `bytes.__contains__` tries its argument as an int first, and a
# bytes one (`b"\r" in data`) costs the TypeError it formats and drops, ~2,000 CPU
# instructions a test more (`data.find(b"\r")` ~900 more: its arguments parsed old-style)
_CR = ord("\r")


def _boundary(data: Buffer, start: int, cr: bool) -> int:
    """The offset just past the last event end found searching `data` from `start`, or -1.

    `cr` says whether `data` holds a CR. Without one, a run of LFs ends where its last pair
    does (rfind); with one, where finditer's last non-overlapping match does."""
    if not cr:
        i = data.rfind(b"\n\n", start)
        return i + 2 if i >= 0 else -1
    end = -1
    for m in _BOUNDARY.finditer(data, start):
        end = m.end()
    return end


def last_boundary(data: bytes) -> int:
    """The offset just past the last complete event in `data`, or -1 if there is none."""
    return _boundary(data, 0, _CR in data)


class EventCutter:
    """Feeds a stream's bytes; hands back what may be forwarded now (whole events).

    Linear in the bytes fed: what is held back holds no event end, so a read is searched
    from `_RESCAN` bytes before its start only, and appended to a bytearray (`tail + data`
    and a search from the start on every read made an event in n reads cost O(n^2))."""

    __slots__ = ("_cr", "_held", "cap", "mid_event")

    def __init__(self, cap: int = EVENT_CAP) -> None:
        self.cap = cap
        self._held = bytearray()  # the incomplete event held back; never holds an event end
        self._cr = False  # whether `_held` holds a CR
        self.mid_event = False  # part of an event has been forwarded, its end has not

    @property
    def tail(self) -> bytes:
        """The incomplete event held back."""
        return bytes(self._held)

    def feed(self, data: bytes) -> bytes:
        held = self._held
        buf: Buffer
        if held:
            start = max(0, len(held) - _RESCAN)
            held += data
            self._cr = self._cr or _CR in data
            buf = held
        else:  # the common case: `data` is searched and handed on as it is, not copied
            start, buf = 0, data
            self._cr = _CR in data
        cut = _boundary(buf, start, self._cr)
        if cut < 0:
            if len(buf) > self.cap:
                self.mid_event = True
                return self._take_all(buf)
            if buf is data:
                held += data
            return b""
        self.mid_event = False
        if len(buf) - cut > self.cap:
            self.mid_event = True
            return self._take_all(buf)
        if buf is data:
            out = data[:cut]  # `data` itself when it ends on an event end
            held += memoryview(data)[cut:]
        else:
            out = bytes(held[:cut])
            del held[:cut]
        self._cr = _CR in held
        return out

    def _take_all(self, buf: Buffer) -> bytes:
        out = bytes(buf)
        self._held.clear()
        self._cr = False
        return out

    def flush(self) -> bytes:
        """What is held at the end of the stream (a last event without its blank line)."""
        return self._take_all(self._held)
