"""A page of an audit trail read whole (the local store's): the events after a cursor,
newest first, and the cursor of the next page. Its cursors are the entries' ids (an
event's, or `line-N` for a line that is no event); any other names nothing the trail gave
out, and is refused (BadCursor), never taken for the trail's start. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import BadCursor

__all__ = ["page_before"]


def page_before(newest_first: Sequence[dict[str, Any]], limit: int, before: str | None,
                trimmed: bool = False) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` entries older than the one `before` names (None: from the newest),
    and the next page's cursor (None: this page reaches the oldest). On a `trimmed` trail
    (it starts at a retention checkpoint) an id it no longer holds may be one a trim
    removed since it was given out: the pages past the oldest kept event end (empty)."""
    events = list(newest_first)
    if before is not None:
        ids = [e.get("id") for e in events]
        if before not in ids and trimmed:
            return [], None
        if before not in ids:
            raise BadCursor(f"this trail's cursors are its events' ids: {before!r} is none")
        events = events[ids.index(before) + 1:]
    page = events[:limit]
    return page, page[-1].get("id") if len(events) > limit and page else None
