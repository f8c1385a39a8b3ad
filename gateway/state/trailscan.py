"""Scanning the redis store's audit trail for the trim: its newest checkpoint, its re-seeds.

Owns `TrailScan`, the base of redistrim.RedisTrim (the trim itself), on `RedisPin`
(redispin.py): the trail between its oldest entries and its newest one read in short
steps of their own (_SCAN), never in one script (a script holds up every other client of
redis, kills included); what a scan found is kept, and the next one reads only the entries
past its newest one while the trail only grew at its end. Reads only: it writes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway.state.redislink import Script
from gateway.state.redispin import SCAN_STEP, RedisPin
from gateway.state.replyshape import entries, shaped, text
from gateway.state.resp import RespConnection

__all__ = ["TrailScan"]

# One step of the scan from the newest entry back (ARGV[1]: where, as XREVRANGE's end;
# ARGV[2]: how many entries; ARGV[3]: where the scan ends, as XREVRANGE's start): the
# newest checkpoint among them (an entry whose action is audit.trim), every entry that may
# be a state.reseed (a plain text search; the caller parses and checks what it gets), and
# where the next step starts ('': none). A step of its own: one script over a whole long
# trail held up every other client (~0.8 s for 100k events, ~10 s for 1M: kills timed
# out), a step takes a few milliseconds.
_SCAN = Script("""
if redis.call('TYPE', KEYS[1])['ok'] ~= 'stream' then return {'', {}, {}} end
local step = tonumber(ARGV[2])
local chunk = redis.call('XREVRANGE', KEYS[1], ARGV[1], ARGV[3], 'COUNT', step)
local ck, reseeds = {}, {}
for _, entry in ipairs(chunk) do
  local f = entry[2]
  local e = ''
  if f[1] == 'e' and type(f[2]) == 'string' then e = f[2] end
  if #ck == 0 and string.find(e, 'audit.trim', 1, true) then
    local ok, v = pcall(cjson.decode, e)
    if ok and type(v) == 'table' and v['action'] == 'audit.trim' then ck = {entry} end
  end
  if string.find(e, 'state.reseed', 1, true) then reseeds[#reseeds + 1] = entry end
end
local nxt = ''
if #chunk == step then nxt = '(' .. chunk[#chunk][1] end
return {nxt, ck, reseeds}
""")


def _sid(entry: Any) -> tuple[int, int]:
    """A stream entry's id as numbers (ids compare so)."""
    ms, _, seq = bytes(entry[0]).partition(b"-")
    return int(ms), int(seq or 0)


def _field_sha(entry: Any) -> str:
    flat = entry[1]
    return hashlib.sha1(flat[1]).hexdigest() if len(flat) >= 2 and flat[0] == b"e" else ""


@dataclass(frozen=True, slots=True)
class _Scanned:
    """What the last scan found, up to its newest entry (`newest`, whose field's sha1 is
    `sha`), and the oldest entry then: a trail that only grew at its end and lost its
    oldest entries since is scanned again only past `newest`."""

    newest: Any
    sha: str
    oldest: tuple[int, int]
    ck: list[Any]
    reseeds: list[Any]


def _scanned(reply: Any) -> tuple[bytes, list[Any], list[Any]]:
    """_SCAN's answer: where the next step starts, the checkpoint ([] or [entry]), the
    re-seeds."""
    return shaped("the trim's scan", reply, type(reply) is list and len(reply) == 3
                  and text(reply[0]) and entries(reply[1]) and len(reply[1]) <= 1
                  and entries(reply[2]), "its answer")


class TrailScan(RedisPin):
    """The trim's scan of the trail (see the module docstring)."""

    #: what the last scan found (None: scan it all)
    _scanned: _Scanned | None = None

    async def _scan(self, first: list[Any], newest: list[Any], memo: _Scanned | None,
                    conn: RespConnection) -> tuple[list[Any], list[Any]]:
        """The newest checkpoint ([] or [entry]) and the entries that may be re-seeds, in
        steps from the newest entry read back (an entry appended meanwhile is not looked
        at: the trim script then finds the document changed), down to the last scan's
        newest entry when `memo` (the last scan) still holds: its findings are kept then,
        but for the entries trimmed since."""
        if not first or not newest:
            self._scanned = None
            return [], []
        oldest = _sid(first[0])
        if memo is not None and oldest < memo.oldest:
            memo = None  # (older entries than it saw: the trail was put back, scan it all)
        ck: list[Any] = []
        reseeds: list[Any] = []
        at, low = newest[0][0], b"(" + memo.newest[0] if memo is not None else b"-"
        while at and (memo is None or _sid(newest[0]) > _sid(memo.newest)):
            at, found_ck, found = _scanned(await self._script(
                _SCAN, [self.k_audit], [at, str(SCAN_STEP), low], conn=conn))
            ck = ck or found_ck
            reseeds.extend(found)
        if memo is not None:
            ck = ck or [e for e in memo.ck if _sid(e) >= oldest]
            reseeds += [e for e in memo.reseeds if _sid(e) >= oldest]
        self._scanned = _Scanned(newest[0], _field_sha(newest[0]), oldest, ck, reseeds)
        return ck, reseeds
