"""After a store-loss drill's outage, before its restore: every instance the drill started
with heartbeating again, so that the restore's receipt counts the fleet.

A receipt counts live instances only (a heartbeat the store saw within `instance_lease`):
an outage as long as the lease lets every lease lapse, and a restore made before the
instances heartbeat again was "applied by 1/1 instance(s)" with three running. Owns
`wait_rejoined` (bounded; the instances not back are returned, for the drill to say) and
`short_receipt` (what the report and output say when the restore was acknowledged by
fewer instances than the drill started with; at restore time only `receipt_note`: the
check after the settle may yet find each one running it). HTTP through drillload's
AdminClient.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from typing import Any

from gateway.control.drillload import AdminClient, DrillApiError

__all__ = ["applied_by", "receipt_note", "short_receipt", "wait_rejoined"]


def _fresh(record: Any, within: float) -> bool:
    """A heartbeat the store saw at most `within` seconds ago (its own clock's age)."""
    age = record.get("seen_s_ago") if isinstance(record, dict) else None
    return isinstance(age, int | float) and not isinstance(age, bool) and age <= within


async def wait_rejoined(api: AdminClient, ids: Collection[str], outage: float,
                        limit: float, stopped: asyncio.Event,
                        every: float = 0.1) -> list[str]:
    """Wait, from the end of an outage of `outage` seconds (now), until every instance of
    `ids` has a heartbeat the store saw since (within `limit` seconds; not once `stopped`
    is set). A heartbeat from before the outage is at least `outage` old plus the time
    since: `outage / 2` of slack tells them apart. The ids not back, sorted."""
    end = time.monotonic()
    missing = sorted(ids)
    while missing and not stopped.is_set():
        # (the time since the outage as of the call's start: the ages it answers were taken
        # later, so a slow answer cannot make a heartbeat from before the outage look new)
        since = time.monotonic() - end
        status = await _status(api, end + limit - time.monotonic(), stopped)
        if status is not None:
            seen = status.get("instances") or {}
            missing = [i for i in missing if not _fresh(seen.get(i), since + outage / 2)]
        left = end + limit - time.monotonic()
        if not missing or left <= 0 or stopped.is_set():
            break
        with contextlib.suppress(TimeoutError):  # (a Ctrl-C ends the pause at once)
            await asyncio.wait_for(stopped.wait(), min(every, left))
    return missing


async def _status(api: AdminClient, left: float, stopped: asyncio.Event) -> Any:
    """GET /v1/status, given up once `left` seconds have passed or `stopped` is set (None
    then, or when it failed): one call may take the client's 35 s, and the drill's kill
    stays in force until its restore, which this wait holds up (a Ctrl-C restores at once)."""
    call = asyncio.ensure_future(api.call("GET", "/v1/status"))
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({call, stop}, timeout=max(0.0, left),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (stop, call):
            t.cancel()
        await asyncio.gather(stop, call, return_exceptions=True)
    if call.cancelled():
        return None
    try:
        return call.result()
    except DrillApiError:
        return None  # (the store, or the instance answering, not back yet)


def short_receipt(started: Collection[str], receipt: Any, not_back: Collection[str],
                  behind: Collection[str] = (), unverified: Collection[str] = (),
                  confirmed: Collection[str] = ()) -> dict[str, Any] | None:
    """The report's `restore_short` (None when the restore's receipt counted as many
    instances acknowledging it as the drill started with, every one of them heartbeat
    again and none is `behind`, or there is no receipt). (A receipt counts the live
    instances, whichever they are: one that joined meanwhile, or came back under a new id,
    makes up the count for one not back.) `behind`: instances still running without the
    restore (control/drillbehind.py): the drill fails, naming them; `unverified`: those
    whose address answered so without proving it (a warning); `confirmed`: those the check
    found running it since (one reconnecting after a store outage acks after the receipt's
    wait: every one of `started` so, the receipt's count is no news)."""
    if not isinstance(receipt, dict) or not started:
        return None
    if not behind and not unverified and set(started) <= set(confirmed):
        return None
    acked = receipt.get("acked")
    if not isinstance(acked, int) or (acked >= len(started) and not not_back and not behind):
        return None
    return {"acked": acked, "started_with": len(started), "not_back": sorted(not_back),
            "behind": sorted(behind), "unverified": sorted(unverified),
            "message": (
                f"the restore was acknowledged by {acked} of the {len(started)} instance(s) "
                "the drill started with" + (
                    f"; not heartbeating again after the store outage: {', '.join(sorted(not_back))}"
                    if not_back else "") + (
                    f"; still running without it (cut off from the store?): "
                    f"{', '.join(sorted(behind))}" if behind else "") + (
                    "; said to run without it at their published admin address, unproved "
                    f"(could not verify): {', '.join(sorted(unverified))}" if unverified
                    else "") + (
                    "" if behind else
                    ": a receipt counts live instances only, so the others' restore is not "
                    "confirmed (`killgate status` shows whether they run its generation)"))}


def applied_by(started: Collection[str], receipt: Any) -> str:
    """How many instances a receipt says applied a generation, as the drill's `injected:`
    and `restored:` lines say it: `A/N instance(s)`; where the receipt counted another number
    of live instances than the drill started with (one crashed, or cut off from the store
    and its lease run out: a receipt counts live instances only), `A of the S instance(s)
    the drill started with`. It said "applied by 2/2 instance(s)" of a drill started with
    3, as if the whole fleet had (found by a drill review). Pure."""
    r = receipt if isinstance(receipt, dict) else {}
    acked, live = r.get("acked"), r.get("instances")
    n = len(started)
    if not n or not isinstance(live, int) or isinstance(live, bool) or live == n:
        return f"{acked}/{live} instance(s)"
    if live > n:  # (joined meanwhile, or came back under a new id)
        return f"{acked}/{live} instance(s) (the drill started with {n})"
    return (f"{acked} of the {n} instance(s) the drill started with (the receipt counted "
            f"{live} live)")


def receipt_note(started: Collection[str], receipt: Any,
                 not_back: Collection[str]) -> str | None:
    """What a drill says at restore time of a receipt that counted fewer instances than it
    started with (None: it did not): that each is being checked, no warning yet. It said
    "WARNING: the restore was acknowledged by 1 of 2" there, before the check after the
    settle found every instance running the restore (one reconnecting after a store outage
    acks after the receipt's wait; revdrill7): the warning is said after the check, and
    only when it did not confirm them all (`short_receipt` with what it found)."""
    short = short_receipt(started, receipt, not_back)
    if short is None:
        return None
    return (f"the restore's receipt counted {short['acked']} of the {short['started_with']} "
            "instance(s) the drill started with (a receipt counts live instances only): "
            "each is checked after the settle")
