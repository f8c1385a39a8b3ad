"""Where a trimmed audit trail may start: after the events a trim checkpoint says it removed.

A trim (retention, `state.audit_retention`) removes the oldest events and appends, in the
same atomic step, a checkpoint: an ordinary keyed event (action `audit.trim`) whose `after`
names the last event it removed (`last_removed`: id, hash, time), how many it removed and
their time range. The oldest event kept then continues that hash. Pure; imports nothing
of the gateway (domain/audit.py imports this).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["TRIM_ACTION", "TRIM_ACTOR", "trail_cuts", "trim_cut"]

TRIM_ACTION = "audit.trim"
TRIM_ACTOR = "killgate/retention"
_HASH = re.compile(r"[0-9a-f]{64}")


def trim_cut(ev: Any) -> str | None:
    """The hash of the last event the checkpoint `ev` removed (None: `ev` is no checkpoint,
    or one that names no such hash)."""
    if not isinstance(ev, dict) or ev.get("action") != TRIM_ACTION:
        return None
    after = ev.get("after")
    last = after.get("last_removed") if isinstance(after, dict) else None
    cut = last.get("hash") if isinstance(last, dict) else None
    return cut if isinstance(cut, str) and _HASH.fullmatch(cut) else None


def _summary(ev: dict[str, Any]) -> dict[str, Any]:
    after = ev.get("after")
    after = after if isinstance(after, dict) else {}
    # (a trail that started after a lost trail, re-seeded: said by every later checkpoint)
    start = after.get("starts_after")
    lost = start.get("lost_before") if isinstance(start, dict) else None
    return {"checkpoint": ev.get("id"), "time": ev.get("time"),
            "removed": after.get("removed"), "from": after.get("from"),
            "to": after.get("to"), **({"lost_before": lost} if isinstance(lost, str) else {})}


def trail_cuts(events: Sequence[Any], any_checkpoint: bool = False) -> dict[str, dict[str, Any]]:
    """The hashes a trail (oldest first) may start after, each with what its checkpoint
    says (id, time, how many removed, their time range): the newest checkpoint's only (a
    store's trail: every trim cuts after the one before, so only the newest cut can be its
    start; an older one would let whoever deletes events cut the trail at any older trim),
    or every checkpoint's (`any_checkpoint`: a mirror, which keeps what the store trims and
    so starts after whichever trim came before it started)."""
    out: dict[str, dict[str, Any]] = {}
    for ev in reversed(events):
        cut = trim_cut(ev)
        if cut is not None:
            out.setdefault(cut, _summary(ev))
            if not any_checkpoint:
                break
    return out
