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


def last_boundary(data: bytes) -> int:
    """The offset just past the last complete event in `data`, or -1 if there is none."""
    if b"\r" not in data:
        i = data.rfind(b"\n\n")
        return i + 2 if i >= 0 else -1
    end = -1
    for m in _BOUNDARY.finditer(data):
        end = m.end()
    return end


class EventCutter:
    """Feeds a stream's bytes; hands back what may be forwarded now (whole events)."""

    __slots__ = ("cap", "mid_event", "tail")

    def __init__(self, cap: int = EVENT_CAP) -> None:
        self.cap = cap
        self.tail = b""
        self.mid_event = False  # part of an event has been forwarded, its end has not

    def feed(self, data: bytes) -> bytes:
        if self.tail:
            data = self.tail + data
        cut = last_boundary(data)
        if cut < 0:
            if len(data) > self.cap:
                self.tail = b""
                self.mid_event = True
                return data
            self.tail = data
            return b""
        self.tail = data[cut:]
        self.mid_event = False
        if len(self.tail) > self.cap:
            self.tail, self.mid_event = b"", True
            return data
        return data[:cut]

    def flush(self) -> bytes:
        """What is held at the end of the stream (a last event without its blank line)."""
        tail, self.tail = self.tail, b""
        return tail
