"""An operator's vouch for an instance whose state is not known to be the fleet's
(vouching.py's mark: `unverified_origin`, a kills-only snapshot): `killgate state vouch`,
POST /v1/state/vouch. Mixed into `Sync` in place of `Writes`, whose write it makes.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import DomainError
from gateway.log import event
from gateway.state.reseedmerge import MAX_LINEAGE, new_epoch
from gateway.state.snapshot import SnapshotFile
from gateway.state.writes import Writes

__all__ = ["VOUCH_ACTION", "VouchWrite"]

log = logging.getLogger("killgate.state")

#: the audit action of an operator's vouch
VOUCH_ACTION = "state.vouch"


class VouchWrite(Writes):
    snapshot: SnapshotFile
    instance: str
    _own_epochs: dict[str, None]
    _seen_fleet: bool

    async def vouch(self, draft: AuditDraft) -> tuple[dict[str, Any], StateDoc,
                                                      dict[str, Any] | None]:
        """An operator says this instance's key is the fleet's (`draft`: who and why): a
        lone instance, or one `--workers` group, that seeded a flushed store is otherwise
        never vouched for (no other instance re-seeds over its document). Writes, audited,
        a document of a new epoch descending from the store's and from every epoch this
        instance created while marked, so that its sibling workers are vouched for by it too
        and a restart reads a snapshot without `unverified_origin`. Only over a document it
        verifies (the write path: 503 StoreUnverifiable otherwise, nothing written).
        DomainError `nothing_to_vouch` (409) when its state is known to be the fleet's.
        Returns (the answer's fields, the document written, its audit event)."""
        why = self._unvouched()
        if why is None:
            raise DomainError("nothing_to_vouch",
                              "this instance's state is already known to be the fleet's (no "
                              "unverified_origin mark, no kills-only snapshot in force): "
                              "nothing to vouch for; nothing was changed")
        own = list(self._own_epochs)

        def change(cur: StateDoc) -> Change:
            lineage = {**cur.lineage, **({cur.epoch: cur.generation} if cur.epoch else {})}
            for epoch in reversed(own):  # (the newest first, while there is room)
                if len(lineage) >= MAX_LINEAGE:
                    break
                lineage.setdefault(epoch, 0)  # (its generation not known here: none claimed)
            newest = sorted(lineage.items(), key=lambda kv: kv[1])[-MAX_LINEAGE:]
            return Change(epoch=new_epoch(), lineage=dict(newest))

        new, ev = await self.write(change, lambda cur, doc: draft)
        self._seen_fleet = True  # (also where the lineage had no room for our epochs)
        self._own_epochs.clear()
        self.snapshot.unverified_origin = None  # (the next snapshot no longer says so)
        self.snapshot.soon(self.holder.doc)
        event(log, "state_vouched", logging.WARNING, actor=draft.actor, was=why,
              generation=new.generation, epoch=new.epoch)
        return ({"vouched": True, "instance": self.instance, "was": why,
                 "generation": new.generation, "epoch": new.epoch}, new, ev)

