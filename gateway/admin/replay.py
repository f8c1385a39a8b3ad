"""A retry with an Idempotency-Key that an earlier request holds: the answer it gets.

Owns the replay side of admin/writes.py's contract: the same key with another body is a
409; a first try still running is waited for (409 in_progress past the wait, or its claim
lapsed: the retry runs the write); one whose commit's answer was lost (outcome_unknown) is
resolved by asking the store whether any of its attempts landed; one committed on too few
replicas (not_durable) is confirmed before its answer is replayed; an answer that needs a
scope only to a caller that may hold it. Works through the narrow ports of admin/ports.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.admin.attempts import attempts, landed_record, no_event
from gateway.admin.ports import Idempotency, StateWriter
from gateway.admin.writedone import Done, until
from gateway.errors import ApiError, Forbidden, NotDurable, StateError

__all__ = ["Replays"]


class Replays:
    """`lease`: how long a claim this retry takes lives (admin/writes.py's CLAIM_LEASE)."""

    def __init__(self, state: StateWriter, idem: Idempotency, lease: float) -> None:
        self.state = state
        self.idem = idem
        self.lease = lease

    async def replay(self, ident: str, earlier: dict[str, Any], claim: dict[str, Any],
                     wait: float, may: Callable[[str], bool] | None = None,
                     stood_in: list[dict[str, Any]] | None = None) -> web.Response | None:
        """The first answer; None when this request now holds the claim (the first try's
        lapsed, or it failed and let it go): it is to run the write."""
        if earlier.get("fingerprint") != claim["fingerprint"]:
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was used for a different request")
        deadline = time.monotonic() + wait + 5.0
        while "response" not in earlier and "generation" not in earlier:
            if "unknown" in earlier:  # (the first try's answer was lost: did it land?)
                resolved = await self.resolve(ident, earlier, claim,
                                               [] if stood_in is None else stood_in)
                if resolved is None:
                    return None
                earlier = resolved
                continue
            if time.monotonic() > deadline:
                raise ApiError(409, "in_progress", (
                    "a request with this Idempotency-Key is still being applied (or the "
                    "instance running it stopped: its claim lapses within "
                    f"{self.lease:g}s, and the same request sent again then runs it)"))
            await asyncio.sleep(0.01)
            got = await self.idem.idem_claim(ident, claim, self.lease)
            if got is None:  # the first try's claim lapsed, or it failed and let it go
                return None
            earlier = got
        if earlier.get("unconfirmed"):
            # (committed, answered 503 not_durable: confirmed as a repeated write is, by a
            # no-op that waits for the replicas; NotDurable again while none holds it, with
            # the answer it confirms: what it names is said, a drill open's id)
            try:
                await self.state.write(lambda cur: None, no_event)
            except NotDurable as exc:
                exc.done = Done(dict(earlier.get("extra") or {}), earlier.get("generation"))
                raise
        return await self.answer(earlier, wait, may)

    async def answer(self, earlier: dict[str, Any], wait: float,
                     may: Callable[[str], bool] | None) -> web.Response:
        """The answer a record holds (a replay)."""
        scope = earlier.get("scope")
        if isinstance(scope, str) and may is not None and not may(scope):
            raise Forbidden(scope)  # (same subject, another token: not the first answer)
        status = int(earlier.get("status", 200))
        if "response" in earlier:
            resp = dict(earlier["response"])
        elif earlier.get("generation") is None:
            resp = dict(earlier.get("extra", {}))
        else:
            resp = await self.state.receipt(int(earlier["generation"]), wait)
            resp.update(earlier.get("extra", {}))
        return web.json_response(resp, status=status, headers={"idempotent-replayed": "true"})

    async def resolve(self, ident: str, earlier: dict[str, Any], claim: dict[str, Any],
                      stood_in: list[dict[str, Any]]) -> dict[str, Any] | None:
        """A retry of a write whose outcome was unknown: the record to answer from if it
        landed (kept as the answer for later retries); None when it did not, this request
        now holding the key (to run it). The store away: StateError (503); one that
        cannot say: 503 outcome_unknown again."""
        tried = attempts(earlier) or [("", -1)]  # (none: not what writes.py's _unknown writes)
        unsure = None
        for write, gen in tried:  # (the newest attempt first; any may have landed)
            landed = await self.state.landed(write, gen) if gen >= 0 else None
            if landed:
                record = landed_record(earlier, gen)
                # (compare-and-set on the record read: of retries that learn it at once,
                # one records the answer)
                with contextlib.suppress(StateError):
                    await self.idem.idem_take(ident, earlier, record, until(earlier))
                return record
            if landed is None and unsure is None:
                unsure = gen
        if unsure is not None:
            raise ApiError(503, "outcome_unknown", (
                f"a request with this Idempotency-Key made generation {unsure}, whose "
                "answer was lost, and the store's history no longer reaches back to it: "
                "check `killgate audit` for it before sending the request again without "
                "the key"))
        if await self.idem.idem_take(ident, earlier, claim, self.lease):
            # (it may still land, its commit in flight: this retry's write is fenced by it)
            stood_in[:] = [earlier]
            return None
        got = await self.idem.idem_claim(ident, claim, self.lease)  # (another retry's now)
        return got
