"""GET /v1/audit: a page of the audit trail and the head it ends at.

Owns reading a page for the caller (already authorized by admin/api.py): the `before`
cursor's form checked (a malformed one: 400 bad_cursor, as the store's check of a
well-formed one), and the newest page agreeing with the head it is answered with.
Reads through the narrow AuditReader port (admin/ports.py) only.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.admin import inputs
from gateway.admin.ports import AuditReader
from gateway.errors import ApiError, BadCursor

__all__ = ["AUDIT_CURSOR", "audit_page"]

HEAD_READS = 3  # at most this many more reads of the head and the newest page, to agree
HEAD_RETRY = 0.005  # seconds before each
#: a redis stream id, or an event id (a local trail's line that is no event: line-N)
AUDIT_CURSOR = r"[0-9]{1,20}-[0-9]{1,20}|[0-9a-f]{32}|line-[0-9]{1,12}"


async def audit_page(request: web.Request, reader: AuditReader) -> web.Response:
    """The page `limit` and `before` ask for, with the trail's head."""
    limit = inputs.query_int(request, "limit", 50, 1, 1000)
    try:
        before = inputs.query_text(request, "before", AUDIT_CURSOR,
                                   "a redis stream id, an event id or line-N")
    except ApiError as exc:  # (the store checks a well-formed one: BadCursor)
        raise BadCursor(exc.message) from None
    if before is not None:
        head = await reader.audit_head()  # first: later events include it
        events, nxt = await reader.audit_page(limit, before)
        return web.json_response({"events": events, "next": nxt, "head": head})
    head, events, nxt = await reader.audit_newest(limit)
    for _ in range(HEAD_READS):
        # the newest page ends at the head unless a write landed between the two reads
        # (read both again), or events were appended past it without the signing key:
        # the page still shows them, and a check says where the anchor is
        if not events or head is None or events[0].get("hash") == head:
            break
        await asyncio.sleep(HEAD_RETRY)
        head, events, nxt = await reader.audit_newest(limit)
    return web.json_response({"events": events, "next": nxt, "head": head})
