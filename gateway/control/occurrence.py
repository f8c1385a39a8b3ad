"""The fleet's newest config occurrence as the audit trail says it (read at start), and
whether an event is on the trail's chain (a sibling's claim: confighistory.py).

The newest `config.reload` event names the file it brought (`after.digest`) and that
file's occurrence (`after.occurrence`, confighistory.py's module doc): an instance
(re)starting on that file joins it, so the next change is one event fleet-wide; a start on
another file derives a new occurrence from it, the same for every instance starting so.
With no such event in the trail, the base is where the trail starts (64 zeros, or the cut
a trim left), so a start after a trim is a new occurrence too.

Read from the trail, not from a record of its own: the trail is read back from the head
the signed state document anchors, each event's hash checked and each link followed, so
nobody without the signing key can put an older occurrence back, nor append one. (It was a
signed `config:head` record, kept 30 days: written back by someone able to write to redis, it
made every restarted instance rejoin an occurrence the fleet had left, and the same change
made again within the claims' hour was taken for the earlier one: its `config.reload`
event was never written.) A trail that cannot be read so (or too long since the last
reload) raises StateError: the caller then keeps an occurrence of its own (a change is at
worst audited twice, never lost).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from gateway.domain.audit import GENESIS, event_hash
from gateway.errors import StateError
from gateway.state.storeports import AuditStore

__all__ = ["NEAR", "PAGE", "SCAN", "NotNear", "change_event", "change_in_trail", "change_key",
           "fleet_head", "in_trail", "newest_reload", "occurrence_of", "walk"]

#: events read per page; at a start, at most this many of the newest before giving up (a
#: trail with more events since the last reload keeps an occurrence of its own: its next
#: change is at worst audited twice; read before the listeners open); and when a sibling's
#: claim names its event, just written, at most this many (read while serving)
PAGE = 200
SCAN = 20000
NEAR = 1000


class NotNear(StateError):
    """What `walk` looks for is not among the newest entries it may read."""


def occurrence_of(key: str) -> str:
    """The occurrence token of the file a change (its claim key) brought. Pure."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def fleet_head(reload: dict[str, Any] | None, start: str) -> dict[str, str]:
    """The fleet's newest occurrence {"digest", "token"}: the one the newest reload event
    (`reload`) recorded; for an event written before occurrences were recorded, one derived
    from its hash (nobody runs it: the next change is at worst audited twice); with no
    event, one derived from where the trail starts (`start`). Pure."""
    after = reload.get("after") if reload is not None else None
    if reload is not None and isinstance(after, dict) and isinstance(after.get("digest"), str):
        occ = after.get("occurrence")
        return {"digest": after["digest"],
                "token": occ if isinstance(occ, str) else
                occurrence_of(f"event:{reload.get('hash')}")}
    return {"digest": "", "token": occurrence_of(f"trail:{start}")}


async def walk(store: AuditStore, found: Callable[[dict[str, Any]], bool],
               limit: int = SCAN) -> tuple[dict[str, Any] | None, str]:
    """The newest event of the trail's chain back from the anchored head that is `found`
    (None: none), and the hash the part read continues (where the trail starts, when none
    is). Only the chain counts: an entry that is not its next link (added to the stream
    without the signing key: a genuine old event's copy, say) is passed over, as `audit
    verify` reports it. NotNear: none among the newest `limit` entries."""
    head, page, nxt = await store.audit_newest(PAGE)
    if head is None:
        if page:
            raise StateError("the audit trail holds events but no signed state document "
                             "anchors its end")
        return None, GENESIS
    expected: Any = head
    read = 0
    while True:
        read += len(page)
        for ev in page:
            if ev.get("hash") != expected or event_hash(ev) != expected:
                continue  # not the link: added to the stream by someone else (passed over)
            if found(ev):
                return ev, str(expected)
            expected = ev.get("prev_hash")
        if nxt is None or not page:
            return None, str(expected)
        if read >= limit:
            raise NotNear(f"not found among the audit trail's newest {read} events")
        page, nxt = await store.audit_page(PAGE, nxt)


async def newest_reload(store: AuditStore) -> tuple[dict[str, Any] | None, str]:
    """The newest `config.reload` event of the trail (`walk`), and where the part read
    starts."""
    return await walk(store, lambda ev: ev.get("action") == "config.reload")


async def in_trail(store: AuditStore, hash_: str, limit: int = NEAR) -> bool:
    """Whether the event `hash_` is on the trail's chain among its newest `limit` entries
    (`walk`): one a store put back to an earlier state lost is not."""
    try:
        return (await walk(store, lambda ev: ev.get("hash") == hash_, limit))[0] is not None
    except NotNear:
        return False


def change_key(old: str, new: str, token: str) -> str:
    """The claim key of a change from the file `old` to `new` (digests) made by an
    instance in the occurrence `token` (confighistory.py). Pure."""
    return f"config:{old}:{new}:{token}"


def _left(occurrence: str, ev: dict[str, Any]) -> bool:
    """Whether `ev` is a config change made from `occurrence`: the fleet left it then."""
    before, after = ev.get("before"), ev.get("after")
    return isinstance(before, dict) and isinstance(after, dict) and after.get(
        "occurrence") == occurrence_of(change_key(str(before.get("digest")),
                                                  str(after.get("digest")), occurrence))


async def change_in_trail(store: AuditStore, key: str, limit: int = NEAR) -> bool:
    """Whether a `config.reload` event of the change whose claim key is `key` (its
    `after.occurrence`) is on the trail's chain among its newest NEAR entries: written by
    an instance whose claim never came to name it (cut off, or killed, between its commit
    and the claim's update)."""
    return await change_event(store, key, limit) is not None


async def change_event(store: AuditStore, key: str, limit: int = NEAR,
                       named: str | None = None) -> str | None:
    """The hash of `change_in_trail`'s event (`named`: that one alone, a claim's); None:
    none among the newest `limit`, or a change made from the occurrence it left is newer
    (the fleet left it: an instance making the change only now, a staged deploy resumed
    past a revert, makes a change of its own, recorded; at worst twice, never lost)."""
    occurrence = occurrence_of(key)

    def found(ev: dict[str, Any]) -> bool:
        after = ev.get("after")
        if ev.get("action") != "config.reload" or not isinstance(after, dict):
            return named is not None and ev.get("hash") == named
        return (after.get("occurrence") == occurrence if named is None
                else ev.get("hash") == named) or _left(occurrence, ev)

    try:
        ev = (await walk(store, found, limit))[0]
    except NotNear:
        return None
    return None if ev is None or _left(occurrence, ev) else str(ev.get("hash"))
