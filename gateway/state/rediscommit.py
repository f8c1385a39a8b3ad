"""The redis store's commits: one Lua script compares the generation and the audit head,
appends the keyed audit event, replaces the signed state document and publishes it, in one
round trip when our guess of the audit head (the newest verified document's `audit_head`)
is right; else the head a verified document anchors is found again (`_anchor`, of the head
guess: redishead.py, its base), never the unsigned head key's. Then WAIT for replicas on the
connection that committed. A base of `redis.RedisStore`, which keeps the head guess up to
date as it verifies documents.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, seal_json
from gateway.domain.statedoc import StateDoc
from gateway.errors import AuditError, StoreConflict, StoreOutcomeUnknown, StoreUnavailable
from gateway.log import event
from gateway.state.redishead import RedisHead
from gateway.state.redislink import OWN, SMALL, Script, odd_reply
from gateway.state.resp import RespConnection
from gateway.state.signing import Keyring
from gateway.state.store import MAX_DOC_BYTES, encode_doc

__all__ = ["RedisCommits", "seal_commit"]

OnStored = Callable[[StateDoc], None]

log = logging.getLogger("killgate.state")

_COMMIT = Script(OWN + SMALL + """
own(KEYS[2], 'string'); own(KEYS[3], 'stream'); own(KEYS[4], 'string')
local cur = small(KEYS[2])
-- ARGV[12]: the sha1 of the stored document a commit by an instance whose state is not known
-- to be the fleet's was decided on (`pinned`): any other document there (one it cannot
-- verify, the fleet's re-seed at the same generation) refuses it, whatever the keys say
if ARGV[12] ~= '' and not (redis.call('TYPE', KEYS[1])['ok'] == 'string'
    and redis.call('STRLEN', KEYS[1]) <= tonumber(ARGV[10])
    and redis.sha1hex(redis.call('GET', KEYS[1])) == ARGV[12]) then
  return {'conflict', cur or ''}
end
-- ARGV[9]: the sha1 of the stored (verified) document the commit is based on, compared
-- instead of the head key (it disagreed with the head that document anchors) and, with
-- ARGV[11] '1', of the generation key too (it disagreed with that document's generation):
-- every commit replaces the document, and neither key is signed
local same = false
if ARGV[9] ~= '' then
  same = redis.call('TYPE', KEYS[1])['ok'] == 'string'
    and redis.call('STRLEN', KEYS[1]) <= tonumber(ARGV[10])
    and redis.sha1hex(redis.call('GET', KEYS[1])) == ARGV[9]
end
if not (same and ARGV[11] == '1') and (cur or '') ~= ARGV[1] then
  return {'conflict', cur or ''}
end
if ARGV[4] ~= '' and ARGV[9] ~= '' then
  if not same then return {'audit_conflict', small(KEYS[4]) or ARGV[7]} end
elseif ARGV[4] ~= '' then
  local head = small(KEYS[4]) or ARGV[7]
  if head ~= ARGV[5] then return {'audit_conflict', head} end
end
if ARGV[4] ~= '' then
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])
  redis.call('SET', KEYS[4], ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
-- pcall: refused (an ACL user without the channel: PushesCut), the writes above stand (a
-- script is not rolled back): raised, a kill stored was answered 503 'not in force'
redis.pcall('PUBLISH', ARGV[8], ARGV[2])
return {'ok', ''}
""")


# A write of nothing (the generation key set to the value it holds, replicated like any
# write) on a node that holds the generation ARGV[1]: WAIT after it on that connection
# counts the replicas holding that node's state up to it. 0: the node holds another
# generation. (It was a PUBLISH: a redis ACL user without the channels, whose commits go
# through, had every repeated kill answered 503 not_durable. A redis at its maxmemory
# (noeviction) refuses the SET, -OOM, but not a PUBLISH, which is the write then: the SET
# alone had every repeated kill answered 503 while redis was full. tests/test_fence_acl.py.
# A plain SET, as the commit's: KEEPTTL is Redis 6's, and the key has no TTL.)
_FENCE = Script("""
if redis.call('MGET', KEYS[1])[1] ~= ARGV[1] then return 0 end
local set = redis.pcall('SET', KEYS[1], ARGV[1])
if type(set) == 'table' and set['err'] then
  -- (any other refusal, READONLY: said as it is, a demoted node's connection dropped)
  if string.sub(set['err'], 1, 4) ~= 'OOM ' then return set end
  redis.call('PUBLISH', ARGV[2], '')
end
return 1
""")


#: what the commit script answers first (then the head key's value, or '')
_STATUSES = (b"ok", b"conflict", b"audit_conflict")


def _answered(reply: Any) -> bool:
    """Whether `reply` has the commit script's shape ({status, text}): any other (a proxy
    that mangles replies, a server that is not redis) says nothing of what was done."""
    return (type(reply) is list and len(reply) == 2 and reply[0] in _STATUSES
            and type(reply[1]) is bytes)


def seal_commit(keys: Keyring, plain_doc: dict[str, Any], base: dict[str, Any] | None,
                head: str, seq: int, mac_key: tuple[str, bytes] | None
                ) -> tuple[dict[str, Any] | None, bytes, bytes]:
    """What a commit sends: the audit event `base` sealed after `head` (id, time, hash,
    MAC), the document naming it as its head (`seq` + 1) signed, and the event's JSON.
    (No event: the document as it is.) Every byte of it is required; each is written once,
    by the cheapest writer that gives those values (domain/audit.seal_json: the event's
    with its hash's own bytes; encode_doc)."""
    ev, ev_json = seal_json(base, head, mac_key) if base is not None else (None, b"")
    body = encode_doc(plain_doc if ev is None else {
        **plain_doc, "audit_head": ev["hash"], "audit_seq": seq + 1})
    return ev, keys.seal(b"state", body), ev_json


class _Own:
    """A commit as sent: its signed bytes and the document they hold once stored."""

    __slots__ = ("_doc", "_stored", "head", "sealed", "sent", "seq")

    def __init__(self, sealed: bytes, sent: StateDoc, head: str | None, seq: int,
                 on_stored: OnStored | None) -> None:
        self.sealed, self.sent, self.head, self.seq = sealed, sent, head, seq
        self._stored = on_stored
        self._doc: StateDoc | None = None

    def doc(self) -> StateDoc:
        """The document as stored: the one sent, anchoring the audit event's hash."""
        if self._doc is None:
            self._doc = self.sent if self.head is None else self.sent.with_changes(
                audit_head=self.head, audit_seq=self.seq)
        return self._doc

    def replied(self, reply: Any) -> None:
        """The script's answer, as it is read: when it stored the document, `on_stored`
        has it before anything else runs (the caller's await resumes a loop turn later)."""
        if self._stored is None or not _answered(reply) or reply[0] != b"ok":
            return
        try:
            self._stored(self.doc())
        except Exception as exc:  # noqa: BLE001 - the caller's await still gets the answer
            event(log, "state_commit_hook_failed", logging.ERROR, error=repr(exc))


class RedisCommits(RedisHead):
    """Commits and replica waits of `RedisStore` (see the module docstring)."""

    # the store's state they read and write (RedisStore's)
    _own: _Own | None  # our newest commit as sent
    #: the connection our newest commit was stored through, and its generation: WAIT
    #: counts the replicas holding that connection's writes, on that node only
    _committed: tuple[RespConnection, int] | None

    async def commit(self, expected: str | None, doc: StateDoc, draft: AuditDraft | None,
                     chain_from: str | None = None, on_stored: OnStored | None = None,
                     based_on: StateDoc | None = None,
                     onto: StateDoc | None = None,
                     pinned: StateDoc | None = None) -> dict[str, Any] | None:
        plain_doc = doc.to_json()
        base = draft.as_event() if draft is not None else None
        akey = self.audit_keys.current
        mac_key = (akey.kid, akey.secret) if akey is not None else None
        # The head named by the newest document we verified is nearly always still the
        # head: one round trip. The event continues that head; the (unsigned) head key is
        # only what the script compares (`expect`). With no head stored (a flushed store)
        # the trail continues from `chain_from`.
        first = chain_from or GENESIS
        if doc.audit_head and self._head not in (None, doc.audit_head) \
                and self._head_at[0] == doc.generation - 1 and self._head_write not in doc.writes:
            # the newest document we verified, at our base's generation, is not our base:
            # a write on another branch, whose head would raise no audit conflict: look at
            # it first (our base with events appended since names our base's write: no need)
            await self._over_another(doc)
        head = expect = self._head or first
        seq = self._head_at[1] if self._head else doc.audit_seq
        if onto is not None and onto.audit_head and onto.audit_head != head:
            # a re-seed of a store behind what we saw: the event continues the store's
            # trail (and names the head it lost); a head key that names another (the
            # document put back without its trail): the newest head we saw, as ever
            head = expect = onto.audit_head
            seq = onto.audit_seq
        # the sha1 of the stored document to compare instead of the head key, and (whole)
        # of the generation key: `based_on`, as read, when it anchors the head we continue
        based, whole = "", ""
        last = self._last_open
        if based_on is not None and last is not None and last[1] is based_on \
                and (based_on.audit_head or None) == self._head:
            based, whole = hashlib.sha1(last[0]).hexdigest(), "1"
        pin = ""
        if pinned is not None:
            # the bytes `pinned` was verified from; verified something else since (a push, a
            # poll): no longer known to be the stored document, a conflict (the caller
            # loads and decides again)
            if last is None or last[1] is not pinned:
                raise StoreConflict("the stored document changed since it was read")
            pin = hashlib.sha1(last[0]).hexdigest()
        for _ in range(5):
            conn = await self._conn("write")  # (failing here, nothing was sent)
            ev, sealed, ev_json = seal_commit(self.keys, plain_doc, base, head, seq, mac_key)
            own = _Own(sealed, doc, ev["hash"] if ev else None, seq + 1, on_stored)
            self._own = own  # its echo on the channel needs no opening (see _on_message)
            args: list[str | bytes] = [
                "" if expected is None else expected, sealed,
                str(doc.generation), ev_json, expect,
                ev["hash"] if ev else "", first, self.ch_events, based, str(MAX_DOC_BYTES),
                whole, pin]
            # (the document as stored is made in the loop's next turn, once the EVALSHA is
            # written, while redis runs the script: its answer only swaps it in, ~25k
            # instructions sooner; kill_stages.py, RESULTS §52)
            asyncio.get_running_loop().call_soon(own.doc)
            # READONLY replica, OOM, script errors: nothing was written, the action is refused.
            try:
                res = await self._script(
                    _COMMIT, [self.k_state, self.k_gen, self.k_audit, self.k_head], args,
                    refused=AuditError, writes=True, on_reply=own.replied, conn=conn)
                if not _answered(res):  # (never a commit made: it may or may not be)
                    raise StoreOutcomeUnknown(odd_reply(
                        "the commit", res, "the commit script's answer") + ": it may have "
                        "been made, or not")
            except StoreOutcomeUnknown as exc:
                exc.event = ev  # (what a retry answers with, should it have landed)
                raise
            status = res[0].decode()
            if status == "conflict":
                raise StoreConflict("the state changed under us")
            if status == "audit_conflict":
                expect = res[1].decode("utf-8", "replace")
                head, seq, based = await self._anchor(expect, chain_from, doc,
                                                      reseed=onto is not None)
                whole = ""
                continue
            if ev is not None and (doc.generation, seq + 1) >= self._head_at:
                self._guess_head(ev["hash"], (doc.generation, seq + 1), doc)
            self._committed = (conn, doc.generation)
            return ev
        raise StoreConflict("the audit head kept changing under us")

    async def replicated(self, replicas: int, timeout: float, generation: int,
                         fence: bool = False) -> int:
        """Replicas that hold `generation`: WAIT on the connection that committed it (its
        writes are what WAIT counts), which has that connection to itself (heartbeats and
        polls do not queue behind it). Closed since (a failover: the sentinel check, a
        READONLY; a new connection may lead to another node, and WAIT on a connection
        that wrote nothing counts every attached replica at once): none confirmed. With
        `fence` (a no-op: `generation` is the store's, not our commit's) a write of nothing
        on a node holding it comes first (_FENCE), and WAIT follows on that connection."""
        wait = ("WAIT", replicas, max(1, int(timeout * 1000)))
        if fence:
            conn = await self._conn("write")
            fenced = await self._script(_FENCE, [self.k_gen], [str(generation), self.ch_fence],
                                        conn=conn)
            if fenced == 0:
                return 0  # (the node holds another generation: the caller's copy is old)
            if fenced != 1:
                raise StoreUnavailable(odd_reply("the fence", fenced, "0 or 1"))
        elif self._committed is None or self._committed[1] != generation \
                or not self._committed[0].is_open:
            return 0
        else:
            conn = self._committed[0]
        # (WAIT blocks the connection: a commit meanwhile (the sync loop's re-seed, which
        # does not wait for the write lock) queued behind it, missed its deadline, and
        # closing the connection failed the WAIT too; it connects anew now: `_alone`)
        with self._alone("write", conn):
            got = await self._run("write", wait, timeout + self.timeout,
                                  StoreUnavailable, StoreUnavailable, conn=conn)
        if type(got) is not int or got < 0:  # (int(b"OK") raised ValueError: a 500)
            raise StoreUnavailable(odd_reply("WAIT", got, "a count of replicas"))
        return got
