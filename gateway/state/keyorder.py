"""Which way the fleet rotated its signing key: the key order (`<prefix>:keys`
`order:<id>:<id>`), what proves an instance holding a previous key at step 2.

Owns the `order:<id>:<id>` fields of `<prefix>:keys` (the ids sorted) → which of two keys
the fleet rotated from (kind `keyorder`, signed): written once (HSETNX) by the first
instance holding both keys while the fleet's document is signed with its current one
(rotation step 1: the fleet's key, then the incoming one); marked done by a step-3
instance (no previous key) for each rotation into its key, in the order and in its
retirement times (`done:<id>`), so rotating back to an earlier key (A to B, later B to A)
starts a new order at its step 1 instead of reading the old one. An instance's keys
alone cannot tell step 1 from step 2 (the same two keys, swapped), nor can the document's
signer (retiredkeys.py says what is recorded without the order). Used by
retiredkeys.load_retired; its redis calls through the `call` it is handed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.state.signing import Keyring, Unverified, Which, cause_of

__all__ = ["DONE", "MAX_RECORD_BYTES", "Report", "mark_done", "rotated_from_previous"]

#: the largest stored record of `<prefix>:keys` read (a list, times, an order)
MAX_RECORD_BYTES = 4096
#: a rotation from the key id that follows, into the key of a `since:<id>` record, was
#: finished: marked by a step-3 instance (`mark_done`), dropped by a step 2 of it again
DONE = "done:"

Report = Callable[..., None]


def _order_field(a: str, b: str) -> str:
    return "order:" + ":".join(sorted((a, b)))


async def rotated_from_previous(call: Callable[..., Awaitable[Any]], key: str,
                                keys: Keyring, signer: Which | None,
                                report: Report, known: list[str],
                                since: dict[str, float]) -> bool:
    """Whether the fleet's key order proves our previous key the older one (we are at
    step 2). Written once (HSETNX) by the first instance holding both keys while the fleet
    signed with its current one (step 1: the previous key is the incoming one), signed
    with that key: `{"from": the fleet's key, "to": the incoming one}`. Without it, our
    own signed list naming the previous key retired from ours (`known`: a step-2 instance
    recorded it) proves the same, and the order is written back that way: deleted after a
    step-2 instance re-signed the document, a step-2 instance starting then took the
    document signed with its current key for step 1 and wrote the order reversed (found
    by review revmerge37): later step-2 instances no longer moved the retirement time on,
    and a step-1 instance recorded the NEW key as retired from the old one. Only while our
    signed retirement times (`since`) name the previous key, and not that rotation done
    (`mark_done`): the list may name an earlier rotation into our key, and we hold its old
    key again as our previous one, step 1 of rotating back (A to B, later B to A: with the
    order deleted or written over, a step-1 instance took itself for step 2 and re-signed
    the step-2 instances' documents back with its key, review revrot4)."""
    assert keys.current is not None and keys.previous is not None
    me, prev = keys.current.kid, keys.previous.kid
    field = _order_field(me, prev)
    raw = await call("HGET", key, field)
    write = "HSETNX"
    if raw is not None:
        try:
            if len(raw) > MAX_RECORD_BYTES:
                raise Unverified(f"{len(raw)} bytes, over the {MAX_RECORD_BYTES}-byte limit "
                                 "(not read)")
            got = json.loads(keys.open(f"keyorder:{field}".encode(), raw)[0])
        except (ValueError, RecursionError) as exc:
            report("state", f"the key order ({key} {field}): {exc}", None, cause_of(exc))
            raw, write = None, "HSET"  # (one written over by a forger: written back)
    if raw is None:
        step2 = prev in known and prev in since and f"{DONE}{prev}" not in since
        if signer == "current" or step2:  # (else never on a document signed with prev)
            order = {"from": prev, "to": me} if step2 else {"from": me, "to": prev}
            await call(write, key, field, keys.seal(
                f"keyorder:{field}".encode(), json.dumps(order).encode()))
        return step2
    if not isinstance(got, dict):
        return False
    if got.get("done") and got.get("from") == prev and got.get("to") == me:
        # a rotation into our key that a step-3 instance finished (`mark_done`): we hold
        # its old key again as our previous one, step 1 of rotating back to it (A to B,
        # later B to A: this order once said "from A to B" through the second rotation,
        # its step 1 took itself for step 2 and its step 2 recorded nothing, so B's
        # left-overs paged as tampering after its step 3, review improt3). The new
        # rotation's order, once the fleet's document is still ours.
        if signer == "current":
            await call("HSET", key, field, keys.seal(
                f"keyorder:{field}".encode(), json.dumps({"from": me, "to": prev}).encode()))
        return False
    return got.get("from") == prev and got.get("to") == me


async def mark_done(call: Callable[..., Awaitable[Any]], key: str, keys: Keyring,
                    known: list[str], since: dict[str, float]) -> None:
    """At step 3 (no previous key): mark each rotation into our key done in its order
    (our own signed list names the key retired from ours, so we know which way it went),
    signed with our key, so that rotating back to one of those keys later starts a new
    order instead of reading this one (`rotated_from_previous`); and in our retirement
    times (`done:<id>`, signed with our key), which tell a step-1 instance of rotating back
    that its list's record is of the finished rotation when the order is lost (review
    revrot4)."""
    assert keys.current is not None
    me = keys.current.kid
    # (only beside a time a holder recorded: a record refused is never written over)
    marks = [f"{DONE}{k}" for k in known if k != me and k in since
             and f"{DONE}{k}" not in since]
    if marks:
        secs, _ = await call("TIME")
        since = {**since, **dict.fromkeys(marks, float(secs))}
        await call("HSET", key, f"since:{me}", keys.seal(
            f"retiredsince:{me}".encode(), json.dumps(since).encode()))
    for old in known:
        if old == me:
            continue
        field = _order_field(me, old)
        done = {"from": old, "to": me, "done": True}
        raw = await call("HGET", key, field)
        try:
            got = None if raw is None or len(raw) > MAX_RECORD_BYTES else json.loads(
                keys.open(f"keyorder:{field}".encode(), raw)[0])
        except (ValueError, RecursionError):
            got = None  # (signed with the old key, which we no longer hold: written over)
        if got is not None and got != {"from": old, "to": me}:
            # done already, or a newer rotation's order signed with our key (step 1 of
            # rotating back, begun while we ran: a restart or reconnect must not undo it)
            continue
        await call("HSET", key, field, keys.seal(f"keyorder:{field}".encode(),
                                                 json.dumps(done).encode()))
