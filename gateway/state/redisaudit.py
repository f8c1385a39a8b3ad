"""The redis store's audit trail as read: every event, the events after a cursor, and pages
newest first (stream entry ids as cursors, opaque to callers); an entry that does not parse
is shown as unparseable, never dropped; the head a verified state document anchors, and
with the newest page read at once. Appending is the commit's (rediscommit.py). A base of
`redis.RedisStore`.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.domain.audit import parse_event
from gateway.errors import BadCursor
from gateway.state.redisaux import RedisRecords
from gateway.state.redislink import DOC, SMALL, Script
from gateway.state.store import MAX_DOC_BYTES, Loaded

__all__ = ["RedisAudit"]

# The state document (as _LOAD reads it) and the newest audit entries, in one read: a
# commit writes both in one script, so the head the document anchors and the newest
# entry agree unless someone appended entries without the signing key.
_NEWEST = Script(SMALL + DOC + """
local entries = {}
if redis.call('TYPE', KEYS[3])['ok'] == 'stream' then
  entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
end
return {doc, entries}
""")


def _stream_id(cursor: str) -> bool:
    """Whether `cursor` is a stream id: `ms-seq`, each part within 64 bits (redis refuses
    others: an error, not an empty page)."""
    m = re.fullmatch(r"([0-9]{1,20})-([0-9]{1,20})", cursor)
    if m is None:
        return False
    ms, seq = int(m.group(1)), int(m.group(2))
    return ms < 2 ** 64 and seq < 2 ** 64


class RedisAudit(RedisRecords):
    """Reading the audit stream of `RedisStore` (see the module docstring)."""

    async def load(self) -> Loaded:  # (redis.py's)
        raise NotImplementedError

    def _loaded(self, reply: list[Any]) -> Loaded:  # (redis.py's)
        raise NotImplementedError

    @staticmethod
    def _decode(entries: Any) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for sid, flat in entries or []:
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
            raw = fields.get(b"e", b"")
            ev = parse_event(raw)
            out.append((sid.decode(), ev if ev is not None else {
                "id": sid.decode(), "unparseable": raw.decode("utf-8", "replace")}))
        return out

    async def audit_events(self) -> list[dict[str, Any]]:
        entries = await self._call("XRANGE", self.k_audit, "-", "+", timeout=self.timeout * 10)
        return [ev for _, ev in self._decode(entries)]

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        lo = f"({cursor}" if cursor else "-"
        pairs = self._decode(await self._call(
            "XRANGE", self.k_audit, lo, "+", "COUNT", limit))
        return [ev for _, ev in pairs], (pairs[-1][0] if pairs else cursor)

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        """`before` and the returned cursor are stream entry ids (opaque to callers); one
        of another form raises BadCursor, one before every entry (`0-0`) is an empty page."""
        if before is not None and not _stream_id(before):
            raise BadCursor(f"this trail's cursors are redis stream ids (such as "
                            f"1733400000000-0, each part within 64 bits): {before!r} is not one")
        if before == "0-0":  # (redis refuses it as an exclusive end: nothing is before it)
            return [], None
        hi = f"({before}" if before else "+"
        entries = await self._call("XREVRANGE", self.k_audit, hi, "-", "COUNT", limit + 1)
        pairs = self._decode(entries)
        nxt = pairs[limit - 1][0] if len(pairs) > limit else None
        return [ev for _, ev in pairs[:limit]], nxt

    async def audit_head(self) -> str | None:
        """The head anchored by the signed state document (the head key itself is not
        signed: whoever cut events off the end could rewrite it). None: no document, or
        one that does not verify."""
        loaded = await self.load()
        return (loaded.doc.audit_head or None) if loaded.doc is not None else None

    async def audit_newest(self, limit: int) -> tuple[str | None, list[dict[str, Any]],
                                                      str | None]:
        """The head a verified document anchors and the newest page, read at once."""
        doc, entries = await self._script(
            _NEWEST, [self.k_state, self.k_gen, self.k_audit],
            [str(MAX_DOC_BYTES), str(limit + 1)])
        loaded = self._loaded(doc)
        head = (loaded.doc.audit_head or None) if loaded.doc is not None else None
        pairs = self._decode(entries)
        nxt = pairs[limit - 1][0] if len(pairs) > limit else None
        return head, [ev for _, ev in pairs[:limit]], nxt
