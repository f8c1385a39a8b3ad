"""A config change's fleet-wide claim: whether this instance records its audit event.

Owns `claimed` (reloadaudit.ReloadAudits' one try asks it) and the claims' timings: the
instances making one change share a claim (an idempotency record, CLAIM_TTL) keyed on the
change and the occurrence it left (occurrence.py); the one that claims it records the
event and names it in the claim. A sibling's claim that names no event within the wait,
or one the trail does not hold, is taken over (recorded here too: at worst twice, never
lost); the trail is looked at for the change's own event first (a claim gone past its TTL
or deleted). Its redis calls through the store it is handed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.control.occurrence import NEAR, SCAN, change_event, change_in_trail
from gateway.errors import StateError
from gateway.state.store import Store

__all__ = ["CLAIM_POLL", "CLAIM_TTL", "CLAIM_WAIT", "claimed"]

#: how long a change's claim is kept (a sibling making the same change later than that
#: finds its event on the trail, among the newest NEAR entries: occurrence.py)
CLAIM_TTL = 3600.0
#: how often a sibling's claim is read again until it names its event, and for how many
#: command timeouts at most (its event is a load and a commit, retried on conflicts; on a
#: loaded host a shorter wait recorded a change its sibling was still recording)
CLAIM_POLL = 0.05
CLAIM_WAIT = 20


async def claimed(store: Store, key: str, mine: dict[str, Any], wait: float) -> bool:
    """Whether this instance records the change `key`: it claims it; or the claim held
    names no event within `wait` (its instance died, or could not write it), or one the
    trail does not hold (a store put back to an earlier state lost it): then it is
    recorded here too (at worst twice, never lost). Taken over by a sibling first (its
    claim there now: its own wait ended as ours did), it waits for that one's event: each
    instance past the wait recorded the change, one event per instance (waited for up to
    twice `wait` more: a claim taken over and over is recorded here all the same). Before
    a claim is taken over, the trail is looked at for the change's own event (its
    occurrence): one whose claim never came to name it was written again so."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    last = deadline + 2 * wait  # (the takeovers waited for: never past this)
    claim = await store.idem_claim(key, mine, CLAIM_TTL)
    if claim == mine:
        return True  # (ours, made by a try before that failed after it)
    while claim is not None:
        named = claim.get("event")
        # (an event named is looked for past the newest NEAR entries, up to SCAN: a
        # rare read, where a busy trail had pushed a sibling's event out of NEAR and it
        # was taken for one a store put back had lost, the change recorded again)
        far = SCAN if isinstance(named, str) else NEAR
        # (the event named counts until a change made from the occurrence it left: then
        # this change, made late, is this instance's own: occurrence.change_event)
        if isinstance(named, str) and await change_event(store, key, far, named) is not None:
            return False
        if isinstance(named, str) or loop.time() >= deadline:
            if await change_in_trail(store, key, far):
                return False  # (its event written, the claim never updated to name it)
            try:
                if await store.idem_take(key, claim, mine, CLAIM_TTL):
                    return True
            except StateError:
                return True  # (recorded here: at worst twice)
            if loop.time() >= last:
                return True  # (taken over and over: recorded here, never lost)
            deadline = min(loop.time() + wait, last)  # (another took it: its event next)
        await asyncio.sleep(CLAIM_POLL)  # (its instance is writing the event)
        claim = await store.idem_claim(key, mine, CLAIM_TTL)
    # claimed afresh: the change's event may be on the trail all the same, its claim
    # gone (past its TTL, a sibling making the change an hour later; deleted by a
    # redis writer): then named in ours, not written again (it was, twice)
    recorded = await change_event(store, key)
    if recorded is None:
        return True
    await store.idem_take(key, mine, {**mine, "event": recorded}, CLAIM_TTL)
    return False
