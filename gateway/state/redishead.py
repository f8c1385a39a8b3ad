"""The redis store's guess of the audit head its next commit continues: the newest head a
verified document anchors (`_head`; where: `_head_at`; by which write: `_head_write`),
moved by every document verified or written (`_guess_head`), found again from a verified
document when the head key disagrees (`_anchor`: the unsigned key is compared, reported,
never followed), and what it says of a document (`behind`; another branch:
`_over_another`). A base of `rediscommit.RedisCommits`; `redis.RedisStore` holds the state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from gateway.domain.branches import replaces_another
from gateway.domain.statedoc import StateDoc
from gateway.errors import StoreConflict
from gateway.state.redisaux import RedisRecords
from gateway.state.store import Loaded

__all__ = ["RedisHead"]


class RedisHead(RedisRecords):
    """The audit head guess of `RedisStore` (see the module docstring)."""

    #: the audit head key as the last load read it, with the document (redis.py)
    head_key_loaded: str | None = None

    # the store's state they read and write (RedisStore's)
    _head: str | None  # the audit head as of the newest document we saw or wrote
    _head_at: tuple[int, int]  # (generation, audit_seq) of the document that named it
    _head_write: str | None  # that document's own write id
    _seed: tuple[int, str | None] | None  # (generation, write) of the snapshot anchored
    load: Callable[[], Awaitable[Loaded]]
    _last_open: tuple[bytes, StateDoc, str] | None  # the last document verified, its bytes

    def anchored(self, doc: StateDoc) -> None:
        """(StateStore.anchored) The snapshot's head, as any verified document's, but only
        against the snapshot's own document (`_not_the_seed`)."""
        if doc.audit_head and (doc.generation, doc.audit_seq) >= self._head_at:
            self._guess_head(doc.audit_head, (doc.generation, doc.audit_seq), doc)
            self._seed = (doc.generation, self._head_write)

    def behind(self, doc: StateDoc | None) -> str | None:
        """(StateStore.behind) Against our head guess: the newest head we saw."""
        head, at = self._head, self._head_at
        if doc is None or not head:
            return head
        if doc.audit_head == head or (doc.generation, doc.audit_seq) >= at:
            return None
        if doc.generation == at[0] and (doc.writes[-1] if doc.writes else None) \
                != self._head_write:
            return None  # (another write at that generation: a branch)
        return head

    def _not_the_seed(self, doc: StateDoc) -> bool:
        """Whether the verified `doc`, older than the snapshot's head we guess, is another
        document than the snapshot's (not it put back, its later events cut): the store
        lost what we held (a flush, an old backup) and this instance re-seeds it, and the
        re-seed continues the trail the store holds and names our head as lost (README,
        audit retention: "continues the event before it"). Continuing our head instead
        broke the chain at the re-seed, which retention then refused for good."""
        return self._seed is not None and self._seed != (
            doc.generation, doc.writes[-1] if doc.writes else None)

    def _guess_head(self, head: str, at: tuple[int, int], doc: StateDoc) -> None:
        """The audit head the next commit guesses: `head`, named by `doc` at `at`
        (generation, audit_seq), and the write that made `doc` (a commit based on it has
        no other branch to look for, whatever events were appended since)."""
        self._head, self._head_at = head, at
        self._head_write = doc.writes[-1] if doc.writes else None
        self._seed = None  # (a document seen or written since: no longer the snapshot's)

    async def _anchor(self, stored: str, chain_from: str | None, doc: StateDoc,
                      reseed: bool = False) -> tuple[str, int, str]:
        """The head the next event continues (and its position), after the head key named
        `stored` instead of the head we expected: the newest head a verified document
        anchors (the store's, if at least as new as any we saw: another instance
        committed). The key is not signed: chained after an older event it names, the
        events in between could be cut out of the trail unnoticed; a key that disagrees is
        reported, never followed. Raises StoreConflict when the store holds another write
        at our base's generation (another branch): the caller merges it first.
        Also returns, when the key disagrees with the head the stored document anchors, the
        sha1 of that document: the commit compares it instead of the key (rewritten over
        and over, the key made every write lose the race to it: 409 for every kill).
        Raises StoreConflict too when the stored document is `behind` (unless `reseed`: the
        re-seed of it): continued, the events it lost were a break retention refused for
        good; the caller re-seeds it first, naming them."""
        got = await self._over_another(doc)  # (the load moves `_head` to a newer document's)
        if not reseed and got.trusted and got.doc is not None \
                and got.doc.generation >= doc.generation - 1 and self.behind(got.doc):
            raise StoreConflict("the store is behind the audit trail this instance saw")
        seq = doc.audit_seq
        if self._head is not None:
            anchor, seq = self._head, self._head_at[1]
        elif chain_from is not None:
            anchor = chain_from
        else:
            return stored, seq, ""  # no verified anchor at all: nothing better to go by
        based = ""
        if anchor != stored:
            # (reported only when the key read with the document disagrees with it and with
            # our anchor: named by the script before the load, it may be an older head that
            # other instances' appends (config reloads, drills: the same generation) have
            # since moved on from, and a document pushed meanwhile may be newer still, every
            # byte genuine; reported so, it was a tamper alarm nobody caused)
            key = self.head_key_loaded
            agreed = got.trusted and got.doc is not None and (got.doc.audit_head or None) == key
            if not agreed and key != anchor:
                self.on_unverified("audit", f"the audit head key names {stored[:16]!r}, not "
                                            f"the head the newest signed state anchors "
                                            f"({anchor[:16]}…)", None)
            last = self._last_open
            if got.trusted and got.doc is not None and got.doc.audit_head == anchor \
                    and last is not None and last[1] is got.doc:
                based = hashlib.sha1(last[0]).hexdigest()  # (what redis.sha1hex gives)
        return anchor, seq, based

    async def _over_another(self, doc: StateDoc) -> Loaded:
        """StoreConflict when the store holds another write at the generation `doc` is
        based on (another branch): the caller merges it first. Returns what was loaded."""
        got = await self.load()  # a verified document at least as new as ours moves `_head`
        if got.trusted and got.doc is not None and replaces_another(got.doc, doc):
            raise StoreConflict("another write at our generation (another branch)")
        return got
