"""A stored value refused is counted once, not again at every read that finds it.

Owns `RefusedOnce`: the values one read of a hash refused (field -> value as stored),
handed to the next read. A value still as stored is neither judged nor counted again (one
forged entry, or a crashed instance's heartbeat signed with a key retired since, read at
every fleet read, grew the refused count without bound); written again, it is another
value, judged and counted again. Each read starts a new one from the last, kept only once
the read completes (a read that fails leaves the last read's). Used by the redis store's
heartbeats (redisaux.py) and their addresses (redisbeats.py).
"""

from __future__ import annotations

__all__ = ["RefusedOnce"]


class RefusedOnce:
    __slots__ = ("_before", "_now")

    def __init__(self, last: RefusedOnce | None = None) -> None:
        self._before: dict[bytes, bytes] = last._now if last is not None else {}
        self._now: dict[bytes, bytes] = {}

    def still(self, field: bytes, raw: bytes) -> bool:
        """Refused at the last read and still as stored: refused again, not judged again."""
        if self._before.get(field) != raw:
            return False
        self._now[field] = raw
        return True

    def add(self, field: bytes, raw: bytes) -> None:
        """Refused at this read (judged, and counted, by the caller)."""
        self._now[field] = raw
