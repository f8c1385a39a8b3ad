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
idempotency and counts: redisaux.py (and its bases); loading, polling and verifying the
document: redisread.py; reading the audit trail, its head
and newest page: redisaudit.py; trimming it (retention): redistrim.py; the primary's
replicas in sync (min_replicas): redisreplicas.py. Redis errors leave
only as StoreUnavailable (StoreOutcomeUnknown when a commit may have run) / StoreConflict /
AuditError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from gateway.domain.statedoc import NewerDocument, StateDoc
from gateway.errors import PushesCut, StateError, StoreUnavailable
from gateway.log import event
from gateway.state.redisbusy import busy
from gateway.state.redisread import RedisRead
from gateway.state.redisreplicas import RedisReplicas
from gateway.state.redistrim import RedisTrim
from gateway.state.resp import RespConnection, RespError
from gateway.state.retiredkeys import fleet_signer, load_retired
from gateway.state.rotationbegun import begun_to
from gateway.state.sentinels import led_elsewhere, master_named
from gateway.state.signing import Keyring
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

class RedisStore(RedisRead, RedisTrim, RedisReplicas):
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
        self._master_check = 0.0  # when the sentinels are next asked (loop time)
        self._retired_read = False  # (retiredkeys.load_retired done once: started)
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
        cut = None
        try:
            for ch in (self.ch_events, self.ch_acks):
                await sub.call("SUBSCRIBE", ch, timeout=self.timeout)
        except TimeoutError:
            await sub.aclose()
            raise StoreUnavailable("could not subscribe: TimeoutError") from None
        except (RespError, OSError) as exc:
            # refused or closed as it was made (CLIENT KILL TYPE pubsub, an ACL without
            # our channels): the store answers, and is read all the same (PushesCut)
            await sub.aclose()
            cut = PushesCut(f"could not subscribe: {exc or type(exc).__name__}")
        else:
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
        if cut is not None:
            raise cut

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
        except RespError as exc:  # (-LOADING: redis.io refuses PING while it loads)
            raise busy(str(exc), self._where(sub)) or StoreUnavailable(
                f"the redis subscription did not answer a PING: {exc}") from None
        except (TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"the redis subscription did not answer a PING: "
                                   f"{exc or type(exc).__name__}") from None
        sub.last_rx = loop.time()  # (its silence counts from now)

    async def close(self) -> None:
        await self.reset()
        await self._close_conns()

    async def _follow_the_sentinels(self) -> None:
        """Every MASTER_CHECK: drop our connections when most sentinels name another
        master than the one they lead to (sentinels.led_elsewhere says why; then
        StoreUnavailable: the sync loop reconnects through the sentinels)."""
        self._master_check = asyncio.get_running_loop().time() + MASTER_CHECK
        named = await master_named(self._ep(), self.timeout)
        # (a write's WAIT, on a connection of its own (`_alone`), too: left, the old
        # master's replicas confirmed a kill the master the fleet reads never held, and
        # the connection went back to the write slot: tests/test_wait_led_elsewhere.py)
        conns = [c for c in (*self._conns.values(), *self._lent, self._sub)
                 if c is not None and c.is_open]
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
