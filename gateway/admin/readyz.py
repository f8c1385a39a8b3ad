"""`GET /readyz`: readiness (no auth), and an instance's proof to a drill that asks.

A probe asks plainly: 200 when ready, else 503, with the reason, this instance's name and
generation and the fleet as it sees it (redacted). A drill asks with `?drill=ID&nonce=N`
after its restore (control/drillbehind.py): the answer adds `proof`, a MAC over instance,
generation and nonce with that drill's key, derived from the state signing key
(domain/readyzproof.py), so that a process at a replayed heartbeat's address cannot claim
to be an instance behind the restore. A worker of a `serve --workers N` group adds `group`:
each sibling's name and generation (as it keeps them in the group's run directory:
workerstates.py) with a proof of its own for the same nonce, so that one ask of the address
the group shares tells the drill of every worker (it asked until each had answered as
itself: N·H(N) asks, the drill's 1024 in all for 90 workers). A malformed question is a 400.
The question needs no token, and each sibling's proof is an HMAC (~5 µs: a group of 90
workers that replaced some, up to 1024 entries, ~5 ms an answer, on the loop the data
plane shares): `ProofBudget` bounds what a flood of questions makes this worker prove
(beyond it the answer has no `group`, and the drill asks each worker as itself, as it asks
a killgate older than groups).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from aiohttp import web

from gateway import redact
from gateway.admin.ports import Current, FleetView, Readiness
from gateway.domain.readyzproof import proof, proofs, question
from gateway.errors import ApiError

__all__ = ["ENTRIES_PER_SECOND", "ProofBudget", "readyz"]

#: sibling entries one worker proves a second at most, in bursts of as many (~5 µs each:
#: ~10 % of a core under a flood; a drill's ask of a group of 90 needs 89 to ~810)
ENTRIES_PER_SECOND = 20_000


class ProofBudget:
    """The sibling entries a worker may still prove (a token bucket of ENTRIES_PER_SECOND,
    whole answers only). The clock is handed in; no I/O."""

    def __init__(self, rate: float = ENTRIES_PER_SECOND,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self.tokens = float(rate)
        self.at = clock()

    def take(self, n: int) -> bool:
        """Whether `n` entries may be proved now (taken when so)."""
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


def readyz(request: web.Request, instance: str, readiness: Readiness, current: Current,
           fleet: FleetView, proof_key: tuple[str, bytes] | None,
           siblings: Callable[[], list[tuple[str, int]]] | None = None,
           budget: ProofBudget | None = None) -> web.Response:
    """The answer; `proof_key`: (key id, the current state signing key), None without one;
    `siblings`: a group worker's siblings (name, generation), told to a drill that asks
    while `budget` allows."""
    try:
        asked = question(request.query.get("drill"), request.query.get("nonce"))
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    reason = readiness.ready_reason
    ready = reason is None
    gen = current.doc.generation
    body = {"ready": ready, "reason": reason, "instance": instance,
            "draining": readiness.draining, "generation": gen,
            "state": redact.tree(fleet.status())}
    if asked is not None and proof_key is not None:
        kid, secret = proof_key
        body["proof"] = proof(kid, secret, asked[0], instance, gen, asked[1])
        members = siblings() if siblings is not None else None
        if members is not None and (budget is None or budget.take(len(members))):
            body["group"] = proofs(kid, secret, asked[0], members, asked[1])
    return web.Response(status=200 if ready else 503, text=json.dumps(body),
                        content_type="application/json")
