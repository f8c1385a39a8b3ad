"""The redis store's audit trim (retention): the oldest events removed and the checkpoint
appended, anchored by a new signed state document, in one Lua script.

The document and the ends of the trail are read in one script, the rest of the trail
(its newest checkpoint, its re-seeds) in short steps of their own (trailscan.py, its
base: never in one script, which holds up every other client of redis, kills included);
the decision is the caller's (pure: domain/retention.py), and the trim script runs only
if nothing moved since: the stored document is still the one read (every commit replaces
it), the stream holds as many entries, starting with the same one, and the first entry
kept is still there. So of two instances trimming at once, one removes and the other's script changes
nothing; an event appended meanwhile is never removed. Events appended after the read
(the trail only grew at its end: its first entry the same) do not void the decision: the
checkpoint and the document are sealed again on the document as it is just before the
script, a few times (RESEALS), so back-to-back appends no longer starve retention. A
checkpoint MAC'd under a retired key is pinned by the chain after it: redispin.py, the
scan's base. A base of `redis.RedisStore`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from typing import Any

from gateway.domain.audit import seal
from gateway.domain.retention import TRIM_BATCH, Decide, Due, TrimDecision, TrimWindow
from gateway.domain.statedoc import StateDoc
from gateway.errors import AuditError, StoreConflict, StoreOutcomeUnknown
from gateway.state.redislink import DOC, OWN, SMALL, Script, odd_reply
from gateway.state.replyshape import entries, integer, shaped, stream_id
from gateway.state.store import MAX_DOC_BYTES
from gateway.state.trailscan import TrailScan

__all__ = ["RedisTrim"]

# (and the store's clock, TIME, in ms: retention's ages are measured by it too, never by a
# trimming instance's clock alone)
_EXTENT = Script("""
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return {0, {}, ms} end
return {redis.call('XLEN', KEYS[1]), redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1), ms}
""")

# The document (as _LOAD reads it) and the ends of the trail, in one read: they agree. The
# oldest ARGV[2] entries and the newest one; the trail is never sent whole (a long one
# would be held in the gateway's memory), and what lies between is scanned by _SCAN. And
# whether the entry ARGV[3] (the newest one the last scan saw) is still there as it was
# (ARGV[4]: the sha1 of its field): then only the entries past it are scanned again. And
# the store's clock (TIME, ms).
_READ = Script(SMALL + DOC + """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', KEYS[3])['ok'] ~= 'stream' then return {doc, 0, {}, {}, 0, ms} end
local same = 0
if ARGV[3] ~= '' then
  local seen = redis.call('XRANGE', KEYS[3], ARGV[3], ARGV[3])
  if #seen == 1 and seen[1][2][1] == 'e' and type(seen[1][2][2]) == 'string'
      and redis.sha1hex(seen[1][2][2]) == ARGV[4] then same = 1 end
end
return {doc, redis.call('XLEN', KEYS[3]), redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', ARGV[2]),
        redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1), same, ms}
""")

# The document as it is now, how many entries the trail holds and its first entry's id:
# read again right before the trim script, so that events appended since the trail was
# read (and decided on) do not void the trim (only its checkpoint is sealed again).
_FRESH = Script(SMALL + DOC + """
if redis.call('TYPE', KEYS[3])['ok'] ~= 'stream' then return {doc, 0, ''} end
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local id = ''
if #first == 1 then id = first[1][1] end
return {doc, redis.call('XLEN', KEYS[3]), id}
""")
#: times the trim is sealed again on the document as it is now, when appends moved it
#: between that read and the trim script (continuous appends, several instances acting)
RESEALS = 8

# ARGV: sha1 of the document read, entries read, the first entry's id, the first kept
# entry's id, the checkpoint, its hash, the new signed document, the channel, the size limit
_TRIM = Script(OWN + """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string'
    or redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[9])
    or redis.sha1hex(redis.call('GET', KEYS[1])) ~= ARGV[1] then
  return 'moved'
end
if redis.call('TYPE', KEYS[2])['ok'] ~= 'stream'
    or redis.call('XLEN', KEYS[2]) ~= tonumber(ARGV[2]) then
  return 'moved'
end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first ~= 1 or first[1][1] ~= ARGV[3] then return 'moved' end
if #redis.call('XRANGE', KEYS[2], ARGV[4], ARGV[4]) ~= 1 then return 'moved' end
own(KEYS[3], 'string')
redis.call('XADD', KEYS[2], '*', 'e', ARGV[5])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[4])
redis.call('SET', KEYS[3], ARGV[6])
redis.call('SET', KEYS[1], ARGV[7])
redis.pcall('PUBLISH', ARGV[8], ARGV[7])  -- (written even if refused: rediscommit.py)
return 'ok'
""")


class RedisTrim(TrailScan):
    """`audit_trim` of `RedisStore` (see the module docstring)."""

    _last_open: tuple[bytes, StateDoc, str] | None  # (redis.py's: the last document verified)
    _head_at: tuple[int, int]  # (redishead.py's)

    def _guess_head(self, head: str, at: tuple[int, int], doc: StateDoc) -> None:
        raise NotImplementedError  # (redishead.py's)

    async def audit_trim(self, decide: Decide,
                         due: Due) -> tuple[TrimDecision, dict[str, Any] | None]:
        """If `due` says so from the trail's length and oldest event, read the trail and
        the document, let `decide` choose (in a thread: it checks every hash), and trim:
        the decision and the checkpoint appended (None: nothing removed). StoreConflict
        when the store moved between the read and the trim (nothing changed)."""
        # (reads on a connection of their own: a long trail's read must not hold up the
        # polls and heartbeats of the command connection; and the trim itself: on the
        # "write" one it queued behind a write's WAIT, missed its deadline, and closing
        # that connection failed the WAIT: a kill answered not_durable)
        conn = await self._conn("audit")
        got = await self._script(_EXTENT, [self.k_audit], [], conn=conn)
        count, first, clock = shaped("the trim's extent read", got, type(got) is list
                                     and len(got) == 3 and integer(got[0])
                                     and entries(got[1]) and integer(got[2]), "its answer")
        oldest = self._decode(first)
        if not due(int(count), oldest[0][1] if oldest else None, int(clock) / 1000):
            return TrimDecision(0, None, "not due"), None
        memo = self._scanned
        got = await self._script(
            _READ, [self.k_state, self.k_gen, self.k_audit],
            [str(MAX_DOC_BYTES), str(TRIM_BATCH + 1), memo.newest[0] if memo else "",
             memo.sha if memo else ""], conn=conn)
        doc_reply, count, first_part, newest_part, same, clock = shaped(
            "the trim's read", got, type(got) is list and len(got) == 6 and integer(got[1])
            and entries(got[2]) and entries(got[3]) and integer(got[4]) and integer(got[5]),
            "its answer")  # (the document's part: _loaded checks it)
        loaded = self._loaded(doc_reply)
        doc = loaded.doc
        head = (doc.audit_head or None) if doc is not None else None
        ck_part, reseed_part = await self._scan(
            first_part, newest_part, memo if same == 1 else None, conn)
        parts = (first_part, newest_part, ck_part, reseed_part)
        ck_pinned = await self._pin(ck_part, conn)

        def decode_and_decide() -> tuple[list[tuple[str, dict[str, Any]]], TrimDecision]:
            oldest, newest, ck, reseeds = (self._decode(p) for p in parts)
            window = TrimWindow(
                int(count), [ev for _, ev in oldest], newest[0][1] if newest else None,
                ck[0][1] if ck else None,
                [ev for _, ev in reseeds if ev.get("action") == "state.reseed"], head,
                clock=int(clock) / 1000, checkpoint_pinned=ck_pinned)
            return oldest, decide(window)

        pairs, decision = await asyncio.to_thread(decode_and_decide)
        if decision.remove <= 0 or decision.draft is None or doc is None:
            return decision, None
        if decision.remove >= len(pairs):
            raise StoreConflict("the state document changed while the trail was read")
        # (the decision stands while the trail only grew at its end: the same first entry,
        # the first kept one still there (the script checks). Events appended since the
        # read, each a new document, voided every trim under back-to-back appends: the
        # trail grew unbounded. The checkpoint and the document are sealed again on the
        # document as it is now, a few times, each a short read away from the script.)
        first_id, cut_id = pairs[0][0], pairs[decision.remove][0]
        for _ in range(RESEALS):
            got = await self._script(
                _FRESH, [self.k_state, self.k_gen, self.k_audit], [str(MAX_DOC_BYTES)],
                conn=conn)
            doc_reply, count, now_first = shaped(
                "the trim's fresh read", got, type(got) is list and len(got) == 3
                and integer(got[1]) and (got[2] == b"" or stream_id(got[2])), "its answer")
            doc = self._loaded(doc_reply).doc
            last = self._last_open
            if doc is None or last is None or last[1] is not doc \
                    or bytes(now_first or b"").decode() != first_id:
                raise StoreConflict("the state document or the trail's start changed "
                                    "while the trail was read")
            ev, sealed = self._resealed(decision, doc, int(count))
            res = await self._script(
                _TRIM, [self.k_state, self.k_audit, self.k_head],
                [hashlib.sha1(last[0]).hexdigest(), str(count), first_id, cut_id,
                 json.dumps(ev, ensure_ascii=False), ev["hash"], sealed, self.ch_events,
                 str(MAX_DOC_BYTES)], refused=AuditError, writes=True, conn=conn)
            if res not in (b"ok", b"moved"):  # (was "changed while it was read", 8 times)
                raise StoreOutcomeUnknown(odd_reply("the trim", res, "'ok' or 'moved'")
                                          + ": it may have been made, or not")
            if res == b"ok":
                break
        else:
            raise StoreConflict("the trail or the state changed while it was read")
        seq = doc.audit_seq + 1
        if (doc.generation, seq) >= self._head_at:
            self._guess_head(ev["hash"], (doc.generation, seq),
                             doc.with_changes(audit_head=ev["hash"], audit_seq=seq))
        return decision, ev

    def _resealed(self, decision: TrimDecision, doc: StateDoc,
                  count: int) -> tuple[dict[str, Any], bytes]:
        """The checkpoint chained to `doc`'s head (its counts those of a trail of `count`
        entries) and the signed document naming it as the head."""
        assert decision.draft is not None
        d = decision.draft
        draft = dataclasses.replace(
            d, before={**(d.before or {}), "events": count},
            after={**(d.after or {}), "kept": count - decision.remove})
        akey = self.audit_keys.current
        ev = seal(draft.as_event(), str(doc.audit_head),
                  (akey.kid, akey.secret) if akey is not None else None)
        body = json.dumps({**doc.to_json(), "audit_head": ev["hash"],
                           "audit_seq": doc.audit_seq + 1})
        return ev, self.keys.seal(b"state", body.encode())
