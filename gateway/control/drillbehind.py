"""After a drill's restore: the instances the drill started with that are still running and
have not applied it.

A restore's receipt counts live instances only (a heartbeat the store saw within the
lease). An instance cut off from the store stops heartbeating but serves on, enforcing
what it held: the drill's kill. Its lease ran out, the receipt did not wait for it, and a
drill whose traffic did not reach it (`--instances` naming a load balancer, or another
instance) passed with a warning, though the README promises "every instance having
applied the restore". An instance that left (it said goodbye, or its process is gone) is
fine: it enforces nothing. So each instance the drill started with is asked, unless the
fleet's status shows it live at the restore's generation or later: through the fleet's
status first, then at the admin address it published when the drill started. One that
answers there, as itself, with an older generation is named (`behind`); one that does not
answer has left. HTTP through drillload's AdminClient.

With `serve --workers N` the N workers are N instances that published one admin address
(SO_REUSEPORT: the kernel hands each connection to one of them): asked once, another
worker answered, and a worker cut off from the store, still enforcing the drill's kill, was
taken for gone. So an address the drill started with several instances at is asked again,
each time on a new connection, until each of them has answered as itself, up to `asks_for`
times (a worker that has not answered by then has left: the chance of missing a live one is
under `MISS`).

An answer that says "behind" must prove it (domain/readyzproof.py: a MAC with the drill's
key, derived from the state signing key, over instance, generation and the nonce sent): a
process at a replayed heartbeat's address cannot, and is named `unverified` (a warning),
not `behind`. A drill that got no keys when it opened (a fleet without a state signing key,
or older) checks nothing, as before.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.control.drillasks import ASK_TIMEOUT, AT_ONCE, Budget, asks_for, ready
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.readyzproof import verified

__all__ = ["ASK_FOR", "ASK_TIMEOUT", "CATCH_UP_MAX", "Behind", "asks_for", "behind",
           "catch_up_for"]

#: seconds one address is asked for, at most, in one round
ASK_FOR = 10.0
#: seconds, at most, an instance that answered "behind" is given to catch up
CATCH_UP_MAX = 10.0
#: added to the fleet's poll interval: the poll's own read, a resumed process's backlog
CATCH_UP_MARGIN = 0.5


def catch_up_for(poll_interval: float) -> float:
    """How long an instance that answered "behind" is given before it is asked again."""
    return min(CATCH_UP_MAX, max(0.0, poll_interval) + CATCH_UP_MARGIN)


@dataclass(slots=True)
class Behind:
    """`late`: alive without the restore (proved so, or no keys to prove it with);
    `unverified`: answered so at their address without a valid proof (a warning);
    `unverified_applied`: answered "applied" there without a valid proof (the drill fails);
    `unproven`: answered "applied", taken at their word (no keys to check with);
    `unasked`: addresses left unasked when the drill's asks were spent (the drill fails)."""
    late: list[str] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    unverified_applied: list[str] = field(default_factory=list)
    unproven: list[str] = field(default_factory=list)
    unasked: list[dict[str, Any]] = field(default_factory=list)
    asks: int = 0
    proof: str = "none"

    def check(self) -> dict[str, Any]:
        """The report's `restore_check`."""
        return {"proof": self.proof, "asks": self.asks, "late": self.late,
                "unverified": self.unverified, "unverified_applied": self.unverified_applied,
                "unproven": self.unproven, "unasked": self.unasked}

    def lines(self, generation: int) -> list[str]:
        """What the drill says of them on stderr (`generation`: the restore's)."""
        out = []
        if self.late:
            out.append(f"RESTORE NOT APPLIED by {', '.join(self.late)}: alive, running an "
                       f"older generation than the restore's ({generation}), cut off from "
                       "the store?")
        if self.unverified:
            out.append(f"WARNING: could not verify {', '.join(self.unverified)}: the process "
                       "at the admin address it published says it runs an older generation "
                       f"than the restore's ({generation}) without proving it (no valid "
                       "`proof` signed with the state key: another process at that address, "
                       "a replayed heartbeat's?); not counted as behind")
        return out + [f"RESTORE NOT CONFIRMED: {why}" for why in self.problems()]

    def problems(self) -> list[str]:
        """Why the drill cannot pass on these answers (besides `late`)."""
        out = []
        if self.unverified_applied:
            out.append(
                "could not confirm the restore on "
                f"{', '.join(self.unverified_applied)}: the process at the admin address each "
                "published said it applied it without a valid `proof` signed with the state "
                "key (another process at that address, a replayed heartbeat's?); the instance "
                "itself may still enforce the drill's kill")
        for u in self.unasked:
            out.append(f"not asked whether they applied the restore: "
                       f"{', '.join(u['instances'])} at {u['admin']}: {u['why']}")
        return out


def _generation(doc: Any) -> int | None:
    gen = doc.get("generation") if isinstance(doc, dict) else None
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else None


class _Asker:
    def __init__(self, api: AdminClient, generation: int, drill: str | None,
                 keys: Mapping[str, str] | None, catch_up: float, budget: Budget,
                 out: Behind) -> None:
        self.api = api
        self.generation = generation
        self.drill = drill
        self.keys = keys if drill is not None and keys else None
        self.catch_up = catch_up
        self.budget = budget
        self.out = out

    async def _one(self, admin: str) -> tuple[Any, str | None]:
        """An answer at `admin` and the nonce it was asked with (None: no proof asked)."""
        if self.keys is None or self.drill is None:
            return await ready(self.api.session, admin, {}, self.budget), None
        nonce = secrets.token_urlsafe(18)
        return await ready(self.api.session, admin, {"drill": self.drill, "nonce": nonce},
                           self.budget), nonce

    def _judge(self, name: str, doc: Any, nonce: str | None, again: bool,
               waiting: dict[str, float]) -> None:
        """One answer of `name`'s: applied (proved, or taken at its word), behind (named,
        or given `catch_up` first), or unverified."""
        out = self.out
        gen = _generation(doc)
        proved = nonce is not None and verified(self.keys or {}, doc, nonce)
        if gen is None or gen >= self.generation:  # (applied it, or cannot say)
            if self.keys is None:
                out.unproven.append(name)
            elif not proved:
                out.unverified_applied.append(name)
            return
        if self.keys is not None and not proved:
            out.unverified.append(name)
        elif again or self.catch_up <= 0:
            out.late.append(name)
        else:  # (slow, maybe: asked again once it has had a poll to catch up)
            waiting[name] = asyncio.get_running_loop().time() + self.catch_up

    def _left(self, admin: str, names: Collection[str], spent: bool) -> None:
        if names:
            self.out.unasked.append({"admin": admin, "instances": sorted(names),
                                     "why": self.budget.why(spent)})

    async def group(self, names: Collection[str], admin: str, workers: int) -> None:
        """Ask `admin` until each of `names` answered there as itself (or asks_for
        `workers` or ASK_FOR ran out, or nobody answers there: the group left); one that
        answered "behind" once more after its catch-up time."""
        loop = asyncio.get_running_loop()
        pending, waiting, again = set(names), dict[str, float](), set[str]()
        limit, asked, until = asks_for(workers), 0, loop.time() + ASK_FOR
        while pending or waiting:
            if not pending:  # (only those given time to catch up: wait, then ask again)
                at = min(waiting.values())
                if at >= self.budget.until:
                    return self._left(admin, waiting, False)
                await asyncio.sleep(max(0.0, at - loop.time()))
                due = {name for name, t in waiting.items() if t <= loop.time()}
                for name in due:
                    del waiting[name]
                pending, again = due, again | due
                asked, until = 0, loop.time() + ASK_FOR
                continue
            if asked >= limit or (asked and loop.time() >= until):
                pending = set()  # (not heard: left)
                continue
            if self.budget.over():
                return self._left(admin, pending | set(waiting), False)
            n = self.budget.take(min(AT_ONCE, limit - asked))
            if not n:
                return self._left(admin, pending | set(waiting), True)
            answers = await asyncio.gather(*(self._one(admin) for _ in range(n)))
            asked += n
            if all(doc is None for doc, _ in answers):
                return  # (gone, refused: every instance at that address left)
            for doc, nonce in answers:
                who = doc.get("instance") if isinstance(doc, dict) else None
                if isinstance(who, str) and who in pending:
                    pending.discard(who)  # (else another worker of the group, or another
                    # process)
                    self._judge(who, doc, nonce, who in again, waiting)


async def behind(api: AdminClient, started: Collection[str], admin_of: Mapping[str, str],
                 generation: int, drill: str | None = None,
                 keys: Mapping[str, str] | None = None, catch_up: float = 0.0,
                 budget: Budget | None = None) -> Behind:
    """The instances of `started` still running a generation older than `generation` (the
    restore's), sorted, and what could not be told. `admin_of`: the admin URL each
    published when the drill started; `drill` and `keys` (its `readyz_keys`): what an
    answer's proof is checked with; `catch_up`: seconds an instance answering "behind" is
    given (catch_up_for the fleet's poll interval; 0: named at once)."""
    try:
        live = (await api.call("GET", "/v1/status")).get("instances") or {}
    except DrillApiError:
        live = {}
    sharing = Counter(admin_of[n] for n in started if admin_of.get(n))
    ask: dict[str, list[str]] = {}
    for name in sorted(started):
        gen = _generation(live.get(name)) if isinstance(live, dict) else None
        if gen is not None and gen >= generation:
            continue  # (live, and applied it)
        admin = admin_of.get(name)
        if admin:  # (an instance that published no address cannot be asked)
            ask.setdefault(admin, []).append(name)
    budget = budget or Budget()
    out = Behind(proof="required" if drill is not None and keys else "unproven")
    asker = _Asker(api, generation, drill, keys, catch_up, budget, out)
    await asyncio.gather(*(asker.group(names, admin, sharing[admin])
                           for admin, names in ask.items()))
    out.asks = budget.spent
    for names in (out.late, out.unverified, out.unverified_applied, out.unproven):
        names.sort()
    out.unasked.sort(key=lambda u: str(u["admin"]))
    return out
