"""Whether a document still signed with the previous key is one the audit trail has moved
past, and so no rotation re-sign's to make (review revrot5).

A step-2 instance re-signs the fleet's document with its new key. One holding no state of
its own could not tell the fleet's document from an older one put back (signed with the
old key, replayed by someone without a key): it re-signed the replay, its event forked the
trail after the replay's head, and the laundered document outlived step 3, which refuses
the old key's. The stored document anchors the trail's newest event (every commit and
trim writes both in one script), so one whose head the trail moved past is behind.
Also `TrailAhead`, the sync's check of that at its first sync (review revlate47).
One read; nothing is written.
"""

from __future__ import annotations

import logging

from gateway.domain.audit import genuine
from gateway.domain.statedoc import StateDoc
from gateway.log import event
from gateway.state.storeports import AuditStore

__all__ = ["TrailAhead", "trail_ahead", "trail_moved_past"]

log = logging.getLogger("killgate.state")


async def trail_moved_past(store: AuditStore, doc: StateDoc) -> bool:
    """Whether the trail's newest event is not the head `doc` anchors while the store
    still holds `doc` (read at once: a commit landing meanwhile is no replay, and the
    re-seed's own check sees it); said in the log. A trail with no event behind a
    document naming none (a fleet that never wrote) has nothing to move past."""
    head, page, _ = await store.audit_newest(1)
    if head != (doc.audit_head or None):
        return False  # (another document since: overtaken, not behind)
    newest = page[0].get("hash") if page else None
    if newest == head:
        return False
    event(log, "state_resign_withheld", logging.WARNING, generation=doc.generation,
          trail_head=str(newest)[:16], action="the store's document, signed with the "
          "previous key, is older than the audit trail (replayed?): not re-signed; a write "
          "through an instance holding the newer state replaces it")
    return True


async def trail_ahead(store: AuditStore, doc: StateDoc) -> bool:
    """Whether the store still holds `doc` and its trail's newest event is past the head
    `doc` anchors: a document put back (replayed, a restore) that no instance repaired yet
    (review revlate47: redis refusing writes, nobody could). Read at once; no log."""
    if not doc.audit_head:  # (naming none, it cannot be told behind: never said so)
        return False
    head, page, _ = await store.audit_newest(1)
    # (an entry the fleet's keys do not authenticate, one anybody can XADD, says nothing:
    # else one such entry made every instance that starts "no sync" until a commit)
    keys = store.audit_keys.keys() if store.audit_keys.enabled else None
    if not page or (keys is not None and not genuine(page[0], keys)):
        return False
    newest = page[0].get("hash")
    return head == doc.audit_head and newest is not None and newest != head


class TrailAhead:
    """A mixin of the sync loop's repair (reseed.py): the first sync (a process holding
    nothing newer to tell a document put back by), and each after while it lasts, is no
    sync while the store's document is older than its trail (found by revlate47: redis
    refusing writes, nobody repaired one put back, and an instance started meanwhile
    served a route killed since, said synced). Said by last_error."""

    store: AuditStore
    last_error: str | None
    _resync: bool
    #: the store's document was older than its trail at the last check
    _trail_ahead: bool = False

    async def _behind_trail(self, doc: StateDoc) -> bool:
        self._trail_ahead = await trail_ahead(self.store, doc)
        self._resync |= self._trail_ahead  # (checked again at the next poll)
        if self._trail_ahead:
            self.last_error = ("the state store's document is older than its audit trail "
                               f"(generation {doc.generation}; put back, replayed?): kills "
                               "made since may be missing here, so this is no sync until "
                               "an instance holding the newer state repairs the store")
        return self._trail_ahead
