"""A loss of the store's audit trail that another instance's re-seed reported.

Owns `HeardLoss`, a mixin of `Sync` (sync.py): when this instance applies a document of
another epoch than the one it held (a re-seed by another instance, or by a sibling worker
of its `--workers` group), it reads the store's newest audit events once and, if the
event that document anchors is a `state.reseed` that says the trail before it was lost
(`trail_lost`, reseed.py), reports that loss in `/v1/status` as the instance that
re-seeded does (`store.audit.trail_lost`, naming it in `reseeded_by`).

Why: the loss was held in memory by the process that re-seeded, so `killgate status`, the
console and `/v1/status` showed it only when that process answered: with `--workers 2`,
half the asks, and on the fleet's other instances never. It clears as it did: with the
process holding it (each instance's memory). The event is taken only when its hash is the
one the verified document anchors (nobody who can write to redis alone fakes a loss).
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


def reported_loss(doc: StateDoc, page: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The loss the event `doc` anchors reports (`trail_lost` of `/v1/status`), if that
    event, found in `page`, is a genuine re-seed of a store that lost its trail. Pure."""
    for ev in page:
        if ev.get("hash") != doc.audit_head:
            continue
        if ev.get("action") != "state.reseed" or ev.get("trail_lost") is not True \
                or event_hash(ev) != doc.audit_head:
            return None
        anchored = ev.get("anchored_head")
        return {"anchored_head": anchored if isinstance(anchored, str) else None,
                "generation": doc.generation, "time": ev.get("time"),
                "reseeded_by": ev.get("source")}
    return None


class HeardLoss:
    store: Store
    trail_lost: dict[str, Any] | None
    _own_epochs: dict[str, None]

    def _spawn(self, coro: Any) -> None:
        raise NotImplementedError

    def _heard_of(self, before: StateDoc, doc: StateDoc) -> None:
        """`doc` was applied over `before`: a document of another instance's new epoch is
        looked at once (`_read_loss`) while no loss is reported here."""
        if self.trail_lost is None and before.generation > 0 and doc.audit_head \
                and doc.epoch != before.epoch and doc.epoch not in self._own_epochs:
            self._spawn(self._read_loss(doc))

    async def _read_loss(self, doc: StateDoc) -> None:
        try:
            _, page, _ = await self.store.audit_newest(LOOK)
        except StateError:
            return  # (not said: the re-seeding instance says it, as before)
        lost = reported_loss(doc, page)
        if lost is not None and self.trail_lost is None:
            self.trail_lost = lost
