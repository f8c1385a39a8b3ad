"""A loss of the store's audit trail that another instance's re-seed reported.

Owns `HeardLoss`, a mixin of `Sync` (sync.py): when this instance applies a document of
another epoch than the one it held (a re-seed by another instance, or by a sibling worker
of its `--workers` group), it reads the store's newest audit events and, if one of the
events that document anchors since the head it held is a `state.reseed` that says the
trail before it was lost (`trail_lost`, reseed.py), reports that loss in `/v1/status` as
the instance that re-seeded does (`store.audit.trail_lost`, naming it in `reseeded_by`).

Why: the loss was held in memory by the process that re-seeded, so `killgate status`, the
console and `/v1/status` showed it only when that process answered: with `--workers 2`,
half the asks, and on the fleet's other instances never. It clears as it did: with the
process holding it (each instance's memory). Only events linked by their hashes from the
head the verified document anchors are read (nobody who can write to redis alone fakes a
loss), and entries whose hash is not their content's are passed over (nobody hides one
with an edited copy).

The newest LOOK events are read first; when the walk needs older ones (an instance that
applied the re-seed's epoch only after more writes followed it: a stalled process, a
partition; or entries appended by hand past the head) it reads on, a page of PAGE at a
time, up to PAGES pages (found by review revmerge41: reading only the newest 16, such an
instance never said the loss).
A process that starts after the re-seed (restarted on its snapshot, which holds the
re-seed's epoch already; a new instance; a worker its `--workers` group replaced) lives
through no epoch change: it reads back the same way, once, from the head of the first
document it syncs, to the trail's start or the walk's bound (found by review revsync: such
a process never said the loss, and `killgate status` said it or not by who answered).
Also owns the reads a re-seed makes of the store's trail (reseed.py): whether it ends at a
head, and whether it lacks the head the re-seed names (a store on another branch of the
history: the loss is said then as after a flush).
Off the request path: one walk per epoch change, which only a re-seed makes, and one at
a process's first sync; each page is a separate read (the loop runs requests between them).
"""

from __future__ import annotations

from typing import Any

from gateway.domain.audit import GENESIS, event_hash
from gateway.domain.statedoc import StateDoc
from gateway.errors import BadCursor, StateError
from gateway.state.holder import Holder
from gateway.state.store import Store

__all__ = ["LOOK", "PAGE", "PAGES", "HeardLoss", "reported_loss", "trail_ends_at",
           "trail_lacks", "walk_loss"]

#: the newest events read first for the re-seed's (most often it is among them)
LOOK = 16
#: then older pages of PAGE events, at most PAGES of them (a byte bound is the store's)
PAGE = 200
PAGES = 10

#: the walk needs events older than those read (the hash it reached)
Need = str


def walk_loss(doc: StateDoc, events: list[dict[str, Any]],
              since: str = "") -> dict[str, Any] | Need | None:
    """Walk `events` (any order) back from the head `doc` anchors, each event's hash
    checked and linked (the verified document's head authenticates them), to the head
    `since` held before it: the newest genuine re-seed of a store that lost its trail on
    the way (a dict), None when there is none, or the hash reached (a str) when the event
    holding it is not among `events` (older ones are needed). Pure."""
    by_hash: dict[Any, list[dict[str, Any]]] = {}
    for e in events:  # (a hash that is no string is no event's: a list raised, review revtrail)
        if isinstance(e, dict) and isinstance(e.get("hash"), str):
            by_hash.setdefault(e["hash"], []).append(e)
    cur: Any = doc.audit_head
    for _ in range(len(events) + 1):
        if not isinstance(cur, str) or not cur or cur == since:
            return None
        ev: dict[str, Any] | None = next(
            (e for e in by_hash.get(cur, ()) if event_hash(e) == cur), None)
        if ev is None:
            return cur
        if ev.get("action") == "state.reseed" and ev.get("trail_lost") is True:
            anchored = ev.get("anchored_head")
            return {"anchored_head": anchored if isinstance(anchored, str) else None,
                    "generation": doc.generation, "time": ev.get("time"),
                    "reseeded_by": ev.get("source")}
        cur = ev.get("prev_hash")
    return None


def reported_loss(doc: StateDoc, page: list[dict[str, Any]],
                  since: str = "") -> dict[str, Any] | None:
    """The loss a re-seed among the events `doc` anchors reports (`trail_lost` of
    `/v1/status`), from `page` alone (`walk_loss`); None when there is none, or when it
    would need older events. Pure."""
    got = walk_loss(doc, page, since)
    return got if isinstance(got, dict) else None


def _reaches(events: list[dict[str, Any]], head: str, target: str) -> bool | None:
    """Whether the links back from `head` through `events` reach `target` (False: the
    trail's start first), None when the walk needs events older than these. Pure."""
    by_hash = {e["hash"]: e for e in events if isinstance(e, dict) and isinstance(e.get("hash"), str)}
    cur: Any = head
    for _ in range(len(events) + 1):
        if cur == target:
            return True
        if not isinstance(cur, str) or cur == GENESIS:
            return False
        ev = by_hash.get(cur)
        if ev is None or event_hash(ev) != cur:
            return None
        cur = ev.get("prev_hash")
    return None


async def trail_lacks(store: Store, head: str, target: str) -> bool:
    """Whether the store's trail, followed back by its links from `head` (a verified
    document's), is known to lack the event `target`: read as the walk above, LOOK then
    PAGES pages. False when it cannot tell (a read failed, a gap, past the bound): only a
    trail known to lack it is said to have lost it (reseed.py, a re-seed over another
    branch: found by review revsync, `audit verify` reported that loss and no instance
    said it)."""
    if not head or not target or head == target:
        return False
    try:
        _, events, cursor = await store.audit_newest(LOOK)
        for _ in range(PAGES + 1):
            got = _reaches(events, head, target)
            if got is not None or cursor is None:
                return got is False
            page, cursor = await store.audit_page(PAGE, cursor)
            events += page
    except (StateError, BadCursor):
        pass
    return False


async def trail_ends_at(store: Store, head: str) -> bool:
    """Whether the store's newest audit event is `head` (one read)."""
    _, page, _ = await store.audit_newest(1)
    return bool(page) and page[0].get("hash") == head


class HeardLoss:
    store: Store
    holder: Holder
    trail_lost: dict[str, Any] | None
    _own_epochs: dict[str, None]

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def _heard_of(self, before: StateDoc, doc: StateDoc) -> None:
        """`doc` was applied over `before`: a document of another instance's new epoch is
        looked at once (`_read_loss`), also when a loss is reported here already (a later
        one replaces it: found by review revmerge41, an instance that had said a first
        loss went on naming it, head and time, after a second)."""
        if before.generation > 0 and doc.audit_head \
                and doc.epoch != before.epoch and doc.epoch not in self._own_epochs:
            self._spawn(self._read_loss(doc, before.audit_head))

    def _look_back(self) -> None:
        """The first document this process synced from the store: a loss a re-seed before
        its start reported, read back from that document's head (nothing held before it
        bounds the walk: a process that starts knows of no loss)."""
        doc = self.holder.doc
        if doc.audit_head and self.trail_lost is None:
            self._spawn(self._read_loss(doc, ""))

    async def _read_loss(self, doc: StateDoc, since: str) -> None:
        try:
            _, events, cursor = await self.store.audit_newest(LOOK)
            got = walk_loss(doc, events, since)
            for _ in range(PAGES):
                if not isinstance(got, str) or cursor is None:
                    break
                page, cursor = await self.store.audit_page(PAGE, cursor)
                events += page
                got = walk_loss(doc, events, since)
        except (StateError, BadCursor):  # (a cursor a trim removed meanwhile: local store)
            return  # (not said: the re-seeding instance says it, as before)
        if isinstance(got, dict) and (self._unnamed() or self._later(got)):
            self.trail_lost = got

    def _later(self, got: dict[str, Any]) -> bool:
        """Whether the loss `got` is another, later one than the one reported here."""
        held = self.trail_lost or {}
        return got.get("anchored_head") != held.get("anchored_head") \
            and str(got.get("time") or "") > str(held.get("time") or "")

    def _unnamed(self) -> bool:
        """No loss is reported here, or one whose re-seed another instance made first
        (this one's lost the race: `reseeded_by` None until that one's is applied)."""
        return self.trail_lost is None or self.trail_lost.get("reseeded_by") is None
