"""The shared state store (`state.backend: redis`) for many gateway instances.

Owns the state document and the audit trail in redis (key names: redislink.py):
  <p>:state       the signed state document       <p>:gen         its generation (a poll hint)
  <p>:audit       audit events (a stream)         <p>:audit:head  hash of the newest event
  channel <p>:events: every committed document, as stored (signed).
Commits are one Lua script: compare the generation and the audit head, append the keyed
audit event, replace the state, publish. The signed document carries the hash of the
event committed with it (`audit_head`, and its position `audit_seq`): the anchor of the
trail's end, and every instance's guess of the head, so the next commit from any instance
is one round trip. An event continues the newest head a verified document anchors, never
the unsigned head key's (only what the script compares). A document over MAX_DOC_BYTES is
refused unread.
Whatever we read back is verified (gateway/state/signing.py); what fails is reported to
`on_unverified` and never applied. Three connections: reads and polls, commits (and the
WAIT after them), and one subscribed, whose messages reach the listener in the loop
iteration that read them. Heartbeats, idempotency and counts: redisaux.py. Redis errors
leave only as StoreUnavailable (StoreOutcomeUnknown when a commit may have run) /
StoreConflict / AuditError.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, parse_event, seal
from gateway.domain.statedoc import StateDoc
from gateway.errors import AuditError, StoreConflict, StoreUnavailable
from gateway.log import event
from gateway.state.redisaux import RedisRecords
from gateway.state.redislink import OWN, Script
from gateway.state.resp import RespConnection, RespError
from gateway.state.signing import Keyring
from gateway.state.store import (
    MAX_DOC_BYTES,
    Ack,
    Loaded,
    OnUnverified,
    decode_doc,
    ignore_unverified,
)

__all__ = ["RedisStore"]

Listener = Callable[[StateDoc | Ack], None]
OnStored = Callable[[StateDoc], None]
OnLoaded = Callable[[Loaded], None]

log = logging.getLogger("killgate.state")

_COMMIT = Script(OWN + """
own(KEYS[2], 'string'); own(KEYS[3], 'stream'); own(KEYS[4], 'string')
local cur = redis.call('GET', KEYS[2])
if (cur or '') ~= ARGV[1] then return {'conflict', cur or ''} end
if ARGV[4] ~= '' then
  local head = redis.call('GET', KEYS[4]) or ARGV[7]
  if head ~= ARGV[5] then return {'audit_conflict', head} end
  redis.call('XADD', KEYS[3], '*', 'e', ARGV[4])
  redis.call('SET', KEYS[4], ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[8], ARGV[2])
return {'ok', ''}
""")


# The document and its generation in one step; a document over the size limit (ARGV[1])
# is not sent at all: {false, generation, its size}. MGET reads a key of another type as
# nil, as an absent one.
_LOAD = Script("""
local gen = redis.call('MGET', KEYS[2])[1]
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local n = redis.call('STRLEN', KEYS[1])
  if n > tonumber(ARGV[1]) then return {false, gen, n} end
end
return {redis.call('MGET', KEYS[1])[1], gen, 0}
""")


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
        if self._stored is None or type(reply) is not list or not reply or reply[0] != b"ok":
            return
        try:
            self._stored(self.doc())
        except Exception as exc:  # noqa: BLE001 - the caller's await still gets the answer
            event(log, "state_commit_hook_failed", logging.ERROR, error=repr(exc))


class RedisStore(RedisRecords):
    backend = "redis"
    pushes = True

    def __init__(self, url: str, prefix: str, timeout: float, silence: float = 10.0, *,
                 keys: Keyring, audit_keys: Keyring | None = None,
                 on_unverified: OnUnverified = ignore_unverified) -> None:
        super().__init__(url, prefix, timeout, keys=keys, audit_keys=audit_keys,
                         on_unverified=on_unverified)
        self.silence = silence  # a subscription that hears nothing this long is dead
        self._b_events, self._b_acks = self.ch_events.encode(), self.ch_acks.encode()
        self._sub: RespConnection | None = None
        self._listener: Listener | None = None
        # the audit head as of the newest document we saw or wrote (a guess the commit checks)
        self._head: str | None = None
        self._head_at = (0, 0)  # (generation, audit_seq) of the document that named it
        self._own: _Own | None = None  # our newest commit as sent
        self._last_open: tuple[bytes, StateDoc, str] | None = None  # the last document verified

    def listen(self, fn: Listener) -> None:
        """Pushed documents and acks go straight to `fn` as they are read (verified)."""
        self._listener = fn

    def _on_message(self, channel: bytes, data: bytes) -> None:
        item: StateDoc | Ack | None = None
        own = self._own
        if channel == self._b_events and own is not None and data == own.sealed:
            # our own commit coming back: the bytes we signed, from the script that stored
            # them; the document is the one we built (no verifying, no decoding). Usually
            # the commit's answer, read just before, has put it in force already.
            item = own.doc()
        elif channel == self._b_events:
            # not a document we can read, or not ours: reported; the poll goes on
            if len(data) > MAX_DOC_BYTES:
                self.on_unverified("push", f"{len(data)} bytes, over the limit", None)
                return
            with contextlib.suppress(ValueError):
                item = self._open_doc(data, "push")
        elif channel == self._b_acks:
            ack = self._own_ack
            # our own heartbeat coming back needs no verifying (the bytes we signed)
            item = ack[1] if ack is not None and data == ack[0] else self._open_ack(data, "ack")
        if item is None or self._listener is None:
            return  # with nobody listening, the poll finds the change
        try:
            self._listener(item)
        except Exception as exc:  # noqa: BLE001 - a bug there must not end the subscription
            event(log, "state_push_failed", logging.ERROR, error=repr(exc))

    async def open(self) -> None:
        """Connect the command connection and (re)subscribe. Safe to call again after reset."""
        await self.reset()
        await self._conn()
        await self._conn("write")
        # Subscribe first, then the caller loads: a change published in between is
        # seen either by the load or by the subscription.
        sub = await self._connect(self._on_message)
        try:
            for ch in (self.ch_events, self.ch_acks):
                await sub.call("SUBSCRIBE", ch, timeout=self.timeout)
        except (RespError, TimeoutError, OSError) as exc:
            await sub.aclose()
            raise StoreUnavailable(f"could not subscribe: {exc or type(exc).__name__}") from None
        self._sub = sub

    async def reset(self) -> None:
        """Drop the subscription (after an error); the command connection is checked on use."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.aclose(self.timeout)

    async def close(self) -> None:
        await self.reset()
        await self._close_conns()

    # ------------------------------------------------------------------ state

    async def load(self, on_loaded: OnLoaded | None = None) -> Loaded:
        got: list[Loaded] = []

        def read(reply: Any) -> None:  # as the answer is read (see StateStore.load)
            if type(reply) is not list:
                return  # NOSCRIPT: the EVAL that follows answers
            got.append(self._loaded(reply))
            if on_loaded is not None:
                try:
                    on_loaded(got[0])
                except Exception as exc:  # noqa: BLE001 - the caller's await still gets it
                    event(log, "state_load_hook_failed", logging.ERROR, error=repr(exc))

        reply = await self._script(_LOAD, [self.k_state, self.k_gen], [str(MAX_DOC_BYTES)],
                                   on_reply=read)
        return got[0] if got else self._loaded(reply)

    def _loaded(self, reply: list[Any]) -> Loaded:
        raw, gen, size = reply
        token = None if gen is None else gen.decode("utf-8", "replace")
        if size:
            return Loaded(None, token or "", f"{self.k_state}: {size} bytes, over the "
                                             f"{MAX_DOC_BYTES}-byte limit (not read)")
        if raw is None:
            if token is None:
                return Loaded(None, None)
            return Loaded(None, token, f"{self.k_gen} is set but {self.k_state} is missing")
        try:
            doc = self._open_doc(raw, None)
        except ValueError as exc:
            return Loaded(None, token, f"{self.k_state}: {exc}", raw)
        return Loaded(doc, token)

    def _open_doc(self, raw: bytes, kind: str | None) -> StateDoc:
        """A stored or pushed document, verified; its `audit_head` becomes our guess of
        the head. Raises ValueError (Unverified included); reports it when `kind` is set."""
        last = self._last_open
        if last is not None and raw == last[0]:
            # the bytes we verified last (an unkill's push, then the store re-read before
            # applying it: the same document, whose checks would give the same answer)
            doc, which = last[1], last[2]
        else:
            try:
                body, which = self.keys.open(b"state", raw)
                doc = decode_doc(body)
            except ValueError as exc:
                if kind is not None:
                    self.on_unverified(kind, str(exc), None)
                raise
            self._last_open = (raw, doc, which)
        if which == "previous":
            self.on_unverified(kind or "state", "", "previous")
        if doc.audit_head and (doc.generation, doc.audit_seq) >= self._head_at:
            self._head, self._head_at = doc.audit_head, (doc.generation, doc.audit_seq)
        return doc

    async def generation(self) -> str | None:
        raw = await self._call("GET", self.k_gen)
        return None if raw is None else raw.decode("utf-8", "replace")

    async def commit(self, expected: str | None, doc: StateDoc, draft: AuditDraft | None,
                     chain_from: str | None = None,
                     on_stored: OnStored | None = None) -> dict[str, Any] | None:
        plain_doc = doc.to_json()
        base = draft.as_event() if draft is not None else None
        akey = self.audit_keys.current
        mac_key = (akey.kid, akey.secret) if akey is not None else None
        # The head named by the newest document we verified is nearly always still the
        # head: one round trip. The event continues that head; the (unsigned) head key is
        # only what the script compares (`expect`). With no head stored (a flushed store)
        # the trail continues from `chain_from`.
        first = chain_from or GENESIS
        head = expect = self._head or first
        seq = self._head_at[1] if self._head else doc.audit_seq
        for _ in range(5):
            ev = seal(base, head, mac_key) if base is not None else None
            body = json.dumps(plain_doc if ev is None else {
                **plain_doc, "audit_head": ev["hash"], "audit_seq": seq + 1}).encode()
            sealed = self.keys.seal(b"state", body)
            own = _Own(sealed, doc, ev["hash"] if ev else None, seq + 1, on_stored)
            self._own = own  # its echo on the channel needs no opening (see _on_message)
            args: list[str | bytes] = [
                "" if expected is None else expected, sealed,
                str(doc.generation), json.dumps(ev, ensure_ascii=False) if ev else "", expect,
                ev["hash"] if ev else "", first, self.ch_events]
            # READONLY replica, OOM, script errors: nothing was written, the action is refused.
            res = await self._script(
                _COMMIT, [self.k_state, self.k_gen, self.k_audit, self.k_head], args,
                refused=AuditError, writes=True, on_reply=own.replied)
            status = res[0].decode() if isinstance(res[0], bytes) else str(res[0])
            if status == "conflict":
                raise StoreConflict("the state changed under us")
            if status == "audit_conflict":
                expect = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
                head, seq = await self._anchor(expect, chain_from, doc.audit_seq)
                continue
            if ev is not None and (doc.generation, seq + 1) >= self._head_at:
                self._head, self._head_at = ev["hash"], (doc.generation, seq + 1)
            return ev
        raise StoreConflict("the audit head kept changing under us")

    async def _anchor(self, stored: str, chain_from: str | None,
                      seq: int) -> tuple[str, int]:
        """The head the next event continues (and its position), after the head key named
        `stored` instead of the head we expected: the newest head a verified document
        anchors (the store's, if at least as new as any we saw: another instance
        committed). The key is not signed: chained after an older event it names, the
        events in between could be cut out of the trail unnoticed; a key that disagrees is
        reported, never followed."""
        await self.load()  # a verified document at least as new as ours moves `_head`
        if self._head is not None:
            anchor, seq = self._head, self._head_at[1]
        elif chain_from is not None:
            anchor = chain_from
        else:
            return stored, seq  # no verified anchor at all: nothing better to go by
        if anchor != stored:
            self.on_unverified("audit", f"the audit head key names {stored[:16]!r}, not the "
                                        f"head the newest signed state anchors "
                                        f"({anchor[:16]}…)", None)
        return anchor, seq

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        """Wait up to `timeout`, or until the subscription is lost (StoreUnavailable).
        Pushes never queue here: they reach the listener as they are read."""
        sub = self._sub
        if sub is None or sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        if asyncio.get_running_loop().time() - sub.last_rx > self.silence:
            # not even our own heartbeats come back: a half-open connection
            raise StoreUnavailable(f"the redis subscription heard nothing for "
                                   f"{self.silence:g}s")
        await asyncio.wait({sub.closed}, timeout=timeout)
        if sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        return []

    async def replicated(self, replicas: int, timeout: float) -> int:
        """WAIT on the connection that committed: replicas that acknowledged its writes.
        It has that connection to itself (heartbeats and polls do not queue behind it)."""
        return int(await self._call("WAIT", replicas, max(1, int(timeout * 1000)),
                                    timeout=timeout + self.timeout, slot="write"))

    # ------------------------------------------------------------------ audit

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

    async def audit_head(self) -> str | None:
        """The head anchored by the signed state document (the head key itself is not
        signed: whoever cut events off the end could rewrite it). None: no document, or
        one that does not verify."""
        loaded = await self.load()
        return (loaded.doc.audit_head or None) if loaded.doc is not None else None

    async def audit_page(self, limit: int, before: str | None) -> tuple[list[dict[str, Any]],
                                                                        str | None]:
        """`before` and the returned cursor are stream entry ids (opaque to callers); an
        unknown cursor gives an empty page, as with the local store."""
        if before is not None and not re.fullmatch(r"[0-9]{1,20}-[0-9]{1,20}", before):
            return [], None
        hi = f"({before}" if before else "+"
        entries = await self._call("XREVRANGE", self.k_audit, hi, "-", "COUNT", limit + 1)
        pairs = self._decode(entries)
        nxt = pairs[limit - 1][0] if len(pairs) > limit else None
        return [ev for _, ev in pairs[:limit]], nxt
