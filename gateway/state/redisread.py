"""Reading the state document from redis (`RedisStore`'s, redis.py): load, poll, verify.

Owns `RedisRead`, a base of `RedisStore`: the document and its generation read in one
step with the trail's length and the head key (`load`; a document over MAX_DOC_BYTES is
refused unread), the poll's hints, and opening a stored or pushed document: verified
(gateway/state/signing.py; what fails is reported to `on_unverified` and never applied),
the bytes verified last kept, and its `audit_head` taken as the guess of the trail's head
(redishead.py). At rotation step 2 a document still signed with the previous key is
loaded `old_key` (re-signed by reseed.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gateway.domain.statedoc import NewerDocument, StateDoc
from gateway.errors import StoreUnavailable
from gateway.log import event
from gateway.state.rediscommit import RedisCommits
from gateway.state.redislink import SMALL, Script, odd_reply
from gateway.state.shareddecode import SharedDecoder
from gateway.state.signing import Keyring, cause_of
from gateway.state.store import MAX_DOC_BYTES, Loaded, OnUnverified, ignore_unverified

__all__ = ["RedisRead"]

OnLoaded = Callable[[Loaded], None]

log = logging.getLogger("killgate.state")

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

_TEXT = (bytes, type(None))  # (a string reply, or nil)


def _read_shaped(reply: Any) -> bool:
    """Whether `reply` has _LOAD's shape (DOC's, the first three: the trim's reads) and
    types: any other (a proxy that mangles replies, a server that is not redis) was read
    as it came, and raised TypeError or ValueError (tests/test_resp_shapes.py)."""
    return (type(reply) is list and 3 <= len(reply) <= 5 and isinstance(reply[0], _TEXT)
            and isinstance(reply[1], _TEXT) and type(reply[2]) is int
            and (len(reply) < 4 or type(reply[3]) is int)
            and (len(reply) < 5 or isinstance(reply[4], _TEXT)))


class RedisRead(RedisCommits):
    def __init__(self, url: str, prefix: str, timeout: float, *, keys: Keyring,
                 audit_keys: Keyring | None = None,
                 on_unverified: OnUnverified = ignore_unverified) -> None:
        super().__init__(url, prefix, timeout, keys=keys, audit_keys=audit_keys,
                         on_unverified=on_unverified)
        self._last_open: tuple[bytes, StateDoc, str] | None = None  # the last document verified
        self._decoder = SharedDecoder()  # (shares what a pushed document has of the last)
        #: the key order proves us at rotation step 2 (load_retired): a document still
        #: signed with the previous key is loaded `old_key`, and re-signed (reseed.py)
        self.step2 = False

    async def load(self, on_loaded: OnLoaded | None = None) -> Loaded:
        got: list[Loaded] = []

        def read(reply: Any) -> None:  # as the answer is read (see StateStore.load)
            if not _read_shaped(reply):
                return  # NOSCRIPT: the EVAL that follows answers (any other: _loaded says)
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
        if not _read_shaped(reply):
            raise StoreUnavailable(odd_reply("the state read", reply, "the state read's answer"))
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
        got = await self._script(_POLL, [self.k_gen, self.k_head], [])
        if type(got) is not list or len(got) != 2 or not all(isinstance(v, _TEXT) for v in got):
            raise StoreUnavailable(odd_reply("the poll", got, "the poll's answer"))
        gen, head = got
        return (None if gen is None else gen.decode("utf-8", "replace"),
                None if head is None else head.decode("utf-8", "replace"))
