"""A loss of the store's audit trail that another instance's re-seed reported.

Owns `HeardLoss`, a mixin of `Sync` (sync.py): when this instance applies a document of
another epoch than the one it held (a re-seed by another instance, or by a sibling worker
of its `--workers` group), it reads the store's newest audit events once and, if one of
the events that document anchors since the head it held is a `state.reseed` that says the
trail before it was lost (`trail_lost`, reseed.py), reports that loss in `/v1/status` as
the instance that re-seeded does (`store.audit.trail_lost`, naming it in `reseeded_by`).

Why: the loss was held in memory by the process that re-seeded, so `killgate status`, the
console and `/v1/status` showed it only when that process answered: with `--workers 2`,
half the asks, and on the fleet's other instances never. It clears as it did: with the
process holding it (each instance's memory). Only events linked by their hashes from the
head the verified document anchors are read (nobody who can write to redis alone fakes a
loss).
Off the request path: one read per epoch change, which only a re-seed makes.
"""

from __future__ import annotations

from typing import Any

from gateway.domain.audit import event_hash
from gateway.domain.statedoc import StateDoc
from gateway.errors import StateError
from gateway.state.store import Store

__all__ = ["LOOK", "HeardLoss", "reported_loss"]

#: the newest events read for the re-seed's (writes that follow it at once push it down)
LOOK = 16


def reported_loss(doc: StateDoc, page: list[dict[str, Any]],
                  since: str = "") -> dict[str, Any] | None:
    """The loss a re-seed among the events `doc` anchors reports (`trail_lost` of
    `/v1/status`): walking `page` back from the event `doc` anchors, each event's hash
    checked and linked (the verified document's head authenticates them), to the head
    `since` held before it (a write that followed the re-seed at once is passed over), the
    newest genuine re-seed of a store that lost its trail; None when there is none. Pure."""
    by_hash = {ev.get("hash"): ev for ev in page}
    cur: Any = doc.audit_head
    for _ in range(len(page)):
        ev = by_hash.get(cur)
        if not cur or cur == since or ev is None or event_hash(ev) != cur:
            return None
        if ev.get("action") == "state.reseed" and ev.get("trail_lost") is True:
            anchored = ev.get("anchored_head")
            return {"anchored_head": anchored if isinstance(anchored, str) else None,
                    "generation": doc.generation, "time": ev.get("time"),
                    "reseeded_by": ev.get("source")}
        cur = ev.get("prev_hash")
    return None


class HeardLoss:
    store: Store
    trail_lost: dict[str, Any] | None
    _own_epochs: dict[str, None]

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def _heard_of(self, before: StateDoc, doc: StateDoc) -> None:
        """`doc` was applied over `before`: a document of another instance's new epoch is
        looked at once (`_read_loss`) while no loss, or none named, is reported here."""
        if self._unnamed() and before.generation > 0 and doc.audit_head \
                and doc.epoch != before.epoch and doc.epoch not in self._own_epochs:
            self._spawn(self._read_loss(doc, before.audit_head))

    async def _read_loss(self, doc: StateDoc, since: str) -> None:
        try:
            _, page, _ = await self.store.audit_newest(LOOK)
        except StateError:
            return  # (not said: the re-seeding instance says it, as before)
        lost = reported_loss(doc, page, since)
        if lost is not None and self._unnamed():
            self.trail_lost = lost

    def _unnamed(self) -> bool:
        """No loss is reported here, or one whose re-seed another instance made first
        (this one's lost the race: `reseeded_by` None until that one's is applied)."""
        return self.trail_lost is None or self.trail_lost.get("reseeded_by") is None
