"""The redis store's audit trail as read: every event, the events after a cursor, and pages
newest first (stream entry ids as cursors, opaque to callers); an entry that does not parse
is shown as unparseable, never dropped; the head a verified state document anchors, and
with the newest page read at once. Appending is the commit's (rediscommit.py). A base of
`redis.RedisStore`.

Pages are read by a script (PAGE) that sends at most PAGE_BYTES of entries (always one,
then as many as fit), and no entry over ENTRY_BYTES (its size only: shown unparseable):
whoever can write to redis can fill the stream with large entries (no events: passed over,
but read and parsed), and a page of 200 of 64 KiB held the loop the data plane runs on
50-100 ms, at each config reload (a sibling's claim checked: occurrence.py's walk), each
console refresh and each drill history read. A page cut short by its bytes is followed by
its cursor, as any page (a forged trail then costs round trips, not the loop).
"""

from __future__ import annotations

import re
from typing import Any

from gateway.domain.audit import parse_event
from gateway.errors import BadCursor
from gateway.state.redisaux import RedisRecords
from gateway.state.redislink import DOC, SMALL, Script
from gateway.state.store import MAX_DOC_BYTES, Loaded

__all__ = ["ENTRY_BYTES", "PAGE", "PAGE_BYTES", "RedisAudit", "page_args"]

#: the most bytes of entries a page sends (a real event is a few hundred bytes to a few KiB:
#: 200 of them fit); and the largest entry sent at all (a config.reload's changes between
#: two 1 MiB files fit; parsing 4 MiB on the loop takes ~20 ms)
PAGE_BYTES = 1024 * 1024
ENTRY_BYTES = 4 * 1024 * 1024
#: entries a page of `audit_events` (every event) asks for
ALL_PAGE = 1000

#: Lua: `page(key, from, count, rev, budget, cap)`: up to `count` entries of the stream
#: `key` from the bound `from` ('+'/'-' or an exclusive '(id'), newest first with `rev`,
#: within `budget` bytes (always one); an entry over `cap` bytes is sent as {id, {'over',
#: its size}}. Returns {entries, 1 when cut short by bytes else 0}. The range is read in
#: steps sized to the budget left (the entries' mean size so far, at most twice the step
#: before; two entries first: a page asks for its limit + 1), never more than `count`
#: entries in all: one read of `count` copied them all into the script before the budget
#: cut it, ~40 ms of redis's CPU (every instance's commands waiting) for a page of 200
#: forged entries of 64 KiB that sent 16, ~450 ms for audit_events' pages of 1000; ~3 ms
#: now. (One script: what redis holds is read at once.)
PAGE = """
local function page(key, from, count, rev, budget, cap)
  local out, total = {}, 0
  if redis.call('TYPE', key)['ok'] ~= 'stream' then return {out, 0} end
  local want = math.min(count, 2)
  while want > 0 do
    local got
    if rev then got = redis.call('XREVRANGE', key, from, '-', 'COUNT', want)
    else got = redis.call('XRANGE', key, from, '+', 'COUNT', want) end
    for _, e in ipairs(got) do
      local n = 0
      for j = 2, #e[2], 2 do n = n + #e[2][j] end
      if n > cap then e = {e[1], {'over', tostring(n)}}; n = 0 end
      if #out > 0 and total + n > budget then return {out, 1} end
      total = total + n
      out[#out + 1] = e
    end
    if #got < want then return {out, 0} end
    from = '(' .. got[#got][1]
    local fits = math.floor((budget - total) * #out / math.max(total, 1)) + 1
    want = math.min(count - #out, 2 * want, math.max(fits, 1))
  end
  return {out, 0}
end
"""

_PAGE = Script(PAGE + """
return page(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3] == 'rev', tonumber(ARGV[4]),
            tonumber(ARGV[5]))
""")


def page_args() -> list[str]:
    """PAGE's byte bounds, as a script's last two arguments."""
    return [str(PAGE_BYTES), str(ENTRY_BYTES)]

# The state document (as _LOAD reads it) and the newest audit entries, in one read: a
# commit writes both in one script, so the head the document anchors and the newest
# entry agree unless someone appended entries without the signing key.
_NEWEST = Script(SMALL + DOC + PAGE + """
local got = page(KEYS[3], '+', tonumber(ARGV[2]), true, tonumber(ARGV[3]), tonumber(ARGV[4]))
return {doc, got[1], got[2]}
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
            over = fields.get(b"over", b"")
            # (PAGE did not send it: its marker is a size, digits; anyone can XADD an entry
            # of that one field, and a value not UTF-8 made every page holding it raise,
            # GET /v1/audit a 500: review revtrail. Such an entry is no event, as any)
            if len(fields) == 1 and over.isdigit() and len(over) <= 20:
                out.append((sid.decode(), {"id": sid.decode(), "unparseable": (
                    f"<an entry of {over.decode()} bytes, over the {ENTRY_BYTES}"
                    "-byte limit of an event: not read>")}))
                continue
            raw = fields.get(b"e", b"")
            ev = parse_event(raw)
            out.append((sid.decode(), ev if ev is not None else {
                "id": sid.decode(), "unparseable": raw.decode("utf-8", "replace")}))
        return out

    async def audit_events(self) -> list[dict[str, Any]]:
        """Every event, oldest first, read in pages (PAGE: ALL_PAGE entries and PAGE_BYTES
        at most each): the whole stream in one reply (`XRANGE - +`) held the loop the data
        plane runs on for all of it, seconds for a stream an attacker grew to 200,000
        entries. (Tests and tools call it: the gateway reads its trail by pages, and
        `killgate audit verify` reads /v1/audit's.)"""
        out: list[dict[str, Any]] = []
        lo = "-"
        while True:
            entries, _ = await self._script(_PAGE, [self.k_audit],
                                            [lo, str(ALL_PAGE), "fwd", *page_args()])
            pairs = self._decode(entries)
            if not pairs:
                return out
            out += [ev for _, ev in pairs]
            lo = f"({pairs[-1][0]}"

    async def audit_since(self, cursor: str | None,
                          limit: int) -> tuple[list[dict[str, Any]], str | None]:
        lo = f"({cursor}" if cursor else "-"
        entries, _ = await self._script(_PAGE, [self.k_audit],
                                        [lo, str(limit), "fwd", *page_args()])
        pairs = self._decode(entries)
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
        entries, cut = await self._script(_PAGE, [self.k_audit],
                                          [hi, str(limit + 1), "rev", *page_args()])
        return self._paged(self._decode(entries), limit, cut)

    @staticmethod
    def _paged(pairs: list[tuple[str, dict[str, Any]]], limit: int,
               cut: int) -> tuple[list[dict[str, Any]], str | None]:
        """A page of `limit + 1` entries read newest first (PAGE), and the next cursor:
        the last one's when PAGE `cut` it short (more follow), else the limit-th's when
        there is one more, else None."""
        if cut and pairs:
            return [ev for _, ev in pairs], pairs[-1][0]
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
        doc, entries, cut = await self._script(
            _NEWEST, [self.k_state, self.k_gen, self.k_audit],
            [str(MAX_DOC_BYTES), str(limit + 1), *page_args()])
        loaded = self._loaded(doc)
        head = (loaded.doc.audit_head or None) if loaded.doc is not None else None
        return (head, *self._paged(self._decode(entries), limit, cut))
