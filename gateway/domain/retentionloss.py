"""Where audit retention may take a loss of the store's trail as a start: a genuine
`state.reseed` after a flushed or restored store, which `audit verify` reports as a loss
until retention removes it as any event past the bounds. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.domain.audit import event_hash, genuine

__all__ = ["lost_at", "lost_start"]


def lost_start(ev: dict[str, Any],
               keys: Mapping[str, bytes]) -> dict[str, dict[str, Any]] | None:
    """A trail whose oldest event is a genuine re-seed (with keys: its MAC; without, its
    hash) starts at it: the store lost the events before it (the re-seed continues the
    head its instance knew, which the store no longer holds). That loss was reported
    (`audit verify`, `audit_trail_lost`) and stays so until the re-seed is past the
    bounds; then it is removed as any event, and the checkpoint says the events before it
    had been lost (`starts_after.lost_before`). The start: the re-seed's own hash."""
    head, me = ev.get("prev_hash"), ev.get("hash")
    if (ev.get("action") != "state.reseed" or not isinstance(head, str)
            or not isinstance(me, str)
            or not (genuine(ev, keys) if keys else me == event_hash(ev))):
        return None
    return {me: {"reseed": ev.get("id"), "time": ev.get("time"), "lost_before": head}}


def lost_at(events: Sequence[dict[str, Any]], at: int, k: int,
            keys: Mapping[str, bytes]) -> dict[str, dict[str, Any]] | None:
    """The break verify found at event `at` is a loss of the store's trail, which the trim
    (removing the oldest `k`) may remove whole, re-seed included: a genuine re-seed (its
    MAC; without keys, its hash) that continues the event before it, naming as its
    instance's head one that is not in the trail before it. Only a loss makes that shape:
    a flushed store (or one restored from an older backup) on which an instance without a
    snapshot wrote from 64 zeros (or the backup's events stood) before the re-seed of an
    instance that remembered more; deleting events to make it breaks a link before the
    re-seed, or is the re-seed's own prev_hash (neither is taken). Before, retention
    refused such a trail for good. The start the events after it continue (its loss said
    by the checkpoint, `lost_before`: the head the re-seed named), or None."""
    if not 0 < at < k or at >= len(events):
        return None
    ev = events[at]
    anchored, me = ev.get("anchored_head"), ev.get("hash")
    if (ev.get("action") != "state.reseed" or not isinstance(anchored, str)
            or not isinstance(me, str) or ev.get("prev_hash") != events[at - 1].get("hash")
            or any(e.get("hash") == anchored for e in events[:at])
            or not (genuine(ev, keys) if keys else me == event_hash(ev))):
        return None
    return {me: {"reseed": ev.get("id"), "time": ev.get("time"), "lost_before": anchored}}
