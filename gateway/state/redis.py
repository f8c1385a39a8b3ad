"""The shared state store (`state.backend: redis`) for many gateway instances.

Owns the state document and the audit trail in redis (key names: redislink.py):
  <p>:state       the signed state document       <p>:gen         its generation (a poll hint)
  <p>:audit       audit events (a stream)         <p>:audit:head  hash of the newest event
  channel <p>:events: every committed document, as stored (signed).
Commits are one Lua script (rediscommit.py, a base): compare the generation and the audit
head, append the keyed audit event, replace the state, publish. The signed document
carries the hash of the event committed with it (`audit_head`, and its position
`audit_seq`): the anchor of the trail's end, and every instance's guess of the head, so
the next commit from any instance is one round trip. An event continues the newest head a
verified document anchors (redishead.py), never the unsigned head key's (only what the
script compares).
A document over MAX_DOC_BYTES is refused unread; one pushed over PUSH_INLINE_BYTES is only
a hint to re-read the store.
Whatever we read back is verified (gateway/state/signing.py); what fails is reported to
`on_unverified` and never applied. Three connections: reads and polls, commits (and the
WAIT after them), and one subscribed, whose messages reach the listener in the loop
iteration that read them (and, with audit retention, one for its reads). Heartbeats,
idempotency and counts: redisaux.py (and its bases); reading the audit trail, its head
and newest page: redisaudit.py; trimming it (retention): redistrim.py. Redis errors leave
only as StoreUnavailable (StoreOutcomeUnknown when a commit may have run) / StoreConflict /
AuditError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from gateway.domain.statedoc import NewerDocument, StateDoc
from gateway.errors import StateError, StoreUnavailable
from gateway.log import event
from gateway.state.rediscommit import RedisCommits
from gateway.state.redislink import SMALL, Script
from gateway.state.redistrim import RedisTrim
from gateway.state.resp import RespConnection, RespError
from gateway.state.retiredkeys import fleet_signer, load_retired
from gateway.state.rotationbegun import begun_to
from gateway.state.sentinels import led_elsewhere, master_named
from gateway.state.shareddecode import SharedDecoder
from gateway.state.signing import Keyring, cause_of
from gateway.state.store import (
    MAX_DOC_BYTES,
    PUSH_INLINE_BYTES,
    Ack,
    Loaded,
    OnUnverified,
    PushNewer,
    PushNotRead,
    ignore_unverified,
)

__all__ = ["RedisStore"]

Listener = Callable[[StateDoc | Ack | PushNotRead | PushNewer], None]
OnLoaded = Callable[[Loaded], None]

log = logging.getLogger("killgate.state")

#: seconds between asking the sentinels which node is the master (redis+sentinel:// only)
MASTER_CHECK = 5.0

# The document and its generation in one step, and how many events the audit trail holds;
# a document over the size limit (ARGV[1]) is not sent at all: {false, generation, its
# size, events}. MGET reads a key of another type as nil, as an absent one.
_LOAD = Script(SMALL + """
local gen = small(KEYS[2])
local events = 0
if redis.call('TYPE', KEYS[3])['ok'] == 'stream' then events = redis.call('XLEN', KEYS[3]) end
local head = small(KEYS[4])
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local n = redis.call('STRLEN', KEYS[1])
  if n > tonumber(ARGV[1]) then return {false, gen, n, events, head} end
end
return {redis.call('MGET', KEYS[1])[1], gen, 0, events, head}
""")


_POLL = Script(SMALL + "return {small(KEYS[1]), small(KEYS[2])}")  # (hints, bounded)


class RedisStore(RedisCommits, RedisTrim):
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
        self._head_write: str | None = None  # and that document's own write id
        self._seed: tuple[int, str | None] | None = None  # the snapshot's (see `anchored`)
        self._own = None  # our newest commit as sent
        self._committed = None  # (the connection, the generation) of our newest commit
        self._last_open: tuple[bytes, StateDoc, str] | None = None  # the last document verified
        self._decoder = SharedDecoder()  # (shares what a pushed document has of the last)
        self._master_check = 0.0  # when the sentinels are next asked (loop time)
        self._retired_read = False  # (retiredkeys.load_retired done once: started)
        #: the key order proves us at rotation step 2 (load_retired): a document still
        #: signed with the previous key is loaded `old_key`, and re-signed (reseed.py)
        self.step2 = False
        self.begun_to: str | None = None  # (rotationbegun.py: said by vouching.py's _blind)

    def listen(self, fn: Listener) -> None:
        """Pushed documents and acks go straight to `fn` as they are read (verified)."""
        self._listener = fn

    def _on_message(self, channel: bytes, data: bytes) -> None:
        item: StateDoc | Ack | PushNotRead | PushNewer | None = None
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
            if len(data) > PUSH_INLINE_BYTES:
                item = PushNotRead(len(data))  # (verified as the store's, when re-read)
            else:
                try:
                    item = self._open_doc(data, "push")
                except NewerDocument as exc:  # (judged by the next poll: PushNewer)
                    item = PushNewer(exc.generation)
                except ValueError:
                    pass
        elif channel == self._b_acks:
            ack = self._own_ack
            # our own heartbeat coming back needs no verifying (the bytes we signed); any
            # other is verified, and refused when replayed (redisaux.py)
            item = ack[1] if ack is not None and data == ack[0] else self._pushed_ack(data)
            if item is not None:
                self._hear(item.instance)  # (read by name at the next fleet read)
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
        # (after subscribing: a heartbeat written in between is read, or heard, or both;
        # best effort: a store too slow for it now is no reason not to sync)
        with contextlib.suppress(StateError):
            await self._seed_places()
        with contextlib.suppress(StateError):
            self.step2 = await load_retired(
                self._call, self.k_keys, self.keys, self.on_unverified,
                await fleet_signer(self._call, self.k_state, self.keys),
                started=not self._retired_read)
            self._retired_read = True
        self.begun_to = await begun_to(self._call, self.k_state, self.k_keys, self.keys)

    async def reset(self) -> None:
        """Drop the subscription (after an error); the command connection is checked on use."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.aclose(self.timeout)

    async def kept(self) -> None:
        """(StateStore.kept.) The subscription is asked (PING): no heartbeat is sent while
        not synced, so nothing else tells a silent one (half-open: its end never seen)
        from a live one, and kept, every push after the document verified again was lost
        until its silence was judged, 3 heartbeats later (kills by poll alone meanwhile)."""
        sub = self._sub
        if sub is None or sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        loop = asyncio.get_running_loop()
        if self._ep().sentinels and loop.time() >= self._master_check:
            await self._follow_the_sentinels()
        try:  # (a subscribed connection answers ["pong", ""]; no answer closes it)
            await sub.call("PING", timeout=self.timeout)
        except (RespError, TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"the redis subscription did not answer a PING: "
                                   f"{exc or type(exc).__name__}") from None
        sub.last_rx = loop.time()  # (its silence counts from now)

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

        reply = await self._script(_LOAD, [self.k_state, self.k_gen, self.k_audit,
                                           self.k_head], [str(MAX_DOC_BYTES)], on_reply=read)
        head = reply[4] if isinstance(reply, list) and len(reply) > 4 else None
        self.head_key_loaded = head.decode("utf-8", "replace") if head is not None else None
        return got[0] if got else self._loaded(reply)

    def _loaded(self, reply: list[Any]) -> Loaded:
        raw, gen, size = reply[:3]
        trail = int(reply[3]) if len(reply) > 3 else -1  # (_NEWEST reads the trail itself)
        token = None if gen is None else gen.decode("utf-8", "replace")
        if size:
            return Loaded(None, token or "", f"{self.k_state}: {size} bytes, over the "
                                             f"{MAX_DOC_BYTES}-byte limit (not read)",
                          trail=trail)
        if raw is None:
            if token is None:
                return Loaded(None, None, trail=trail)
            return Loaded(None, token, f"{self.k_gen} is set but {self.k_state} is missing",
                          trail=trail)
        try:
            doc = self._open_doc(raw, None)
        except ValueError as exc:
            nd = exc if isinstance(exc, NewerDocument) else None
            return Loaded(None, token, f"{self.k_state}: {exc}", raw, trail=trail,
                          cause=cause_of(exc), newer=nd is not None,
                          newer_generation=None if nd is None else nd.generation)
        old = self.step2 and self._last_open is not None and self._last_open[2] == "previous"
        return Loaded(doc, token, trail=trail, old_key=old)

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
                doc = self._decoder.decode(body)
            except ValueError as exc:
                # (a newer version's, pushed: no forgery; PushNewer has the next poll judge it)
                if kind is not None and not isinstance(exc, NewerDocument):
                    self.on_unverified(kind, str(exc), None, cause_of(exc))
                raise
            self._last_open = (raw, doc, which)
        if which == "previous":
            self.on_unverified(kind or "state", "", "previous")
        if doc.audit_head and ((doc.generation, doc.audit_seq) >= self._head_at
                               or self._not_the_seed(doc)):
            self._guess_head(doc.audit_head, (doc.generation, doc.audit_seq), doc)
        return doc

    async def poll(self) -> tuple[str | None, str | None]:
        gen, head = await self._script(_POLL, [self.k_gen, self.k_head], [])
        return (None if gen is None else gen.decode("utf-8", "replace"),
                None if head is None else head.decode("utf-8", "replace"))

    async def _follow_the_sentinels(self) -> None:
        """Every MASTER_CHECK: drop our connections when most sentinels name another
        master than the one they lead to (sentinels.led_elsewhere says why; then
        StoreUnavailable: the sync loop reconnects through the sentinels)."""
        self._master_check = asyncio.get_running_loop().time() + MASTER_CHECK
        named = await master_named(self._ep(), self.timeout)
        conns = [c for c in (*self._conns.values(), self._sub) if c is not None and c.is_open]
        why = led_elsewhere(named, {c.address for c in conns if c.address is not None})
        if why is not None:
            for c in conns:
                c.close()
            raise StoreUnavailable(why)

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        """Wait up to `timeout`, or until the subscription is lost (StoreUnavailable).
        Pushes never queue here: they reach the listener as they are read."""
        loop = asyncio.get_running_loop()
        if self._ep().sentinels and (t0 := loop.time()) >= self._master_check:
            await self._follow_the_sentinels()  # (the sync loop's wait: never a write's)
            timeout = max(0.0, timeout - (loop.time() - t0))
        sub = self._sub
        if sub is None or sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        if loop.time() - sub.last_rx > self.silence:
            # not even our own heartbeats come back: a half-open connection
            raise StoreUnavailable(f"the redis subscription heard nothing for "
                                   f"{self.silence:g}s")
        await asyncio.wait({sub.closed}, timeout=timeout)
        if sub.closed.done():
            raise StoreUnavailable("the redis subscription was lost")
        return []
