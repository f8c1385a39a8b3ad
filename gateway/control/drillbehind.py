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
answer has left (each answer judged: behindjudge.py, the asker's base). HTTP through
drillload's AdminClient.

With `serve --workers N` the N workers are N instances that published one admin address
(SO_REUSEPORT: the kernel hands each connection to one of them): asked once, another
worker answered, and a worker cut off from the store, still enforcing the drill's kill, was
taken for gone. So an address the drill started with several instances at is asked again,
each time on a new connection, until each of them has answered as itself, up to `asks_for`
times (a worker that has not answered by then has left: the chance of missing a live one is
under `MISS`). Instances at one admin address that published different data addresses
are no such group (the admin listener's default, 127.0.0.1:8081, on several hosts), nor are
instances whose names are no one group's (`apart`: two hosts on loopback data listeners
too): one not heard there is `unasked`, never taken for gone. The worker an ask reaches
tells of its siblings too (`group`, each entry proved as an answer is: admin/readyz.py), so
a group of N costs one ask a round where hearing each as itself cost N·H(N) (a group of 90
spent the drill's asks in all), and a worker whose process is gone (replaced in its slot) is
told of as such, left, where asking for it spent up to 1024 asks; a worker no sibling
tells of (a killgate older than that, one whose file is missing) is still asked for until it
answers as itself.

An answer that says "behind" must prove it (domain/readyzproof.py: a MAC with the drill's
key, derived from the state signing key, over instance, generation and the nonce sent): a
process at a replayed heartbeat's address cannot, and is named `unverified`, not `behind`.
That was a warning only, so that such a process could not fail the drill; but an "applied"
answer must prove itself too (`unverified_applied`, the drill fails), so such a process can
fail it either way, while an instance that really is behind and cannot prove it (a killgate
older than the proofs, during a rolling upgrade; one signing with a key the drill was not
given) let the drill pass as it enforced the drill's kill. Either unproved answer now fails
the drill as not confirmed, saying which could be why. A drill that got no keys when it
opened (a fleet without a state signing key, or older) checks nothing, as before.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from gateway.control.behindjudge import CATCH_UP_MAX, AnswerJudge, generation_of
from gateway.control.behindreport import Behind
from gateway.control.drillasks import ASK_TIMEOUT, AT_ONCE, Budget, asks_for, ready
from gateway.control.drillgroups import apart
from gateway.control.drillload import AdminClient, DrillApiError
from gateway.domain.readyzproof import vouched
from gateway.workerstates import GONE

__all__ = ["ASK_FOR", "ASK_TIMEOUT", "CATCH_UP_MAX", "Behind", "asks_for", "behind",
           "catch_up_for"]

#: seconds one address is asked for, at most, in one round
ASK_FOR = 10.0
#: added to the fleet's poll interval: the poll's own read, a resumed process's backlog, a
#: reconnect's subscribe, load and verify on a loaded host (costs time only when an
#: instance is behind: one that catches up sooner is let off at its next ask)
CATCH_UP_MARGIN = 1.5
#: the longest an instance waits between attempts to reach its store again (state/sync.py:
#: 1 s of backoff, jitter included 1.5 s): a restore made just after a store outage (a
#: store-loss drill's, or one met by `killgate drill restore`) finds instances waiting so
RECONNECT = 1.5


def catch_up_for(poll_interval: float) -> float:
    """How long an instance that answered "behind" is given to catch up: a poll, and its
    reconnect after a store outage (it is asked again meanwhile: one that catches up
    sooner is let off sooner). It was a poll + 0.5 s: 0.55 s with a 50 ms poll, and
    an instance still waiting out its reconnect backoff after a store-loss drill's pause
    was named as not having applied the restore (CI, stop 38)."""
    return min(CATCH_UP_MAX, max(0.0, poll_interval) + RECONNECT + CATCH_UP_MARGIN)


class _Asker(AnswerJudge):
    def __init__(self, api: AdminClient, generation: int, drill: str | None,
                 keys: Mapping[str, str] | None, catch_up: float, budget: Budget,
                 out: Behind, not_groups: Mapping[str, str]) -> None:
        super().__init__(generation, keys if drill is not None and keys else None,
                         catch_up, out)
        self.api = api
        self.drill = drill
        self.budget = budget
        self.apart = not_groups  # admin address -> why the instances there are no one group

    async def _one(self, admin: str) -> tuple[Any, str | None]:
        """An answer at `admin` and the nonce it was asked with (None: no proof asked)."""
        if self.keys is None or self.drill is None:
            return await ready(self.api.session, admin, {}, self.budget), None
        nonce = secrets.token_urlsafe(18)
        return await ready(self.api.session, admin, {"drill": self.drill, "nonce": nonce},
                           self.budget), nonce

    def _quiet(self, names: list[str]) -> None:
        self.out.late.extend(names)
        self.out.quiet.update(names)

    def _unheard(self, names: Collection[str], again: Collection[str], admin: str) -> set[str]:
        """Those of `names` not heard from: left, but for one asked again after proving it
        ran without the restore (named: its silence since, a stalled admin listener or a
        cut admin network, is no sign that it applied it), and but for those at an address
        instances of several hosts published (`unasked`: not theirs to answer); an empty
        set."""
        self._quiet([name for name in names if name in again])
        why = self.apart.get(admin)
        if why is not None and (rest := sorted(n for n in names if n not in again)):
            self.out.unasked.append({"admin": admin, "instances": rest, "why": why})
        return set()

    def _left(self, admin: str, names: Collection[str], spent: bool,
              proved: Collection[str]) -> None:
        """`names` not asked (again) as the drill's asks ran out: `unasked`, but for those
        `proved` to run without the restore when last asked (named `late`: they were
        asked, and gave no sign of having applied it since)."""
        self._quiet([name for name in names if name in proved])
        if rest := [name for name in names if name not in proved]:
            self.out.unasked.append({"admin": admin, "instances": sorted(rest),
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
                if workers > 1:  # (a group's, all at once, once the last is due: asked
                    # apart, each round cost about N asks to hear one of N workers again)
                    last = max(waiting.values())
                    waiting.update(dict.fromkeys(waiting, last))
                at = min(waiting.values())
                if at >= self.budget.until:
                    return self._left(admin, waiting, False, waiting)
                await asyncio.sleep(max(0.0, at - loop.time()))
                due = {name for name, t in waiting.items() if t <= loop.time()}
                for name in due:
                    del waiting[name]
                pending, again = due, again | due
                asked, until = 0, loop.time() + ASK_FOR
                continue
            if asked >= limit or (asked and loop.time() >= until):
                pending = self._unheard(pending, again, admin)  # (not heard: left)
                continue
            if self.budget.over():
                return self._left(admin, pending | set(waiting), False,
                                  again | set(waiting))
            # (a group's first ask of a round alone: its answer tells of every sibling)
            first = workers > 1 and self.keys is not None and not asked
            n = self.budget.take(min(1 if first else AT_ONCE, limit - asked))
            if not n:
                return self._left(admin, pending | set(waiting), True,
                                  again | set(waiting))
            answers = await asyncio.gather(*(self._one(admin) for _ in range(n)))
            asked += n
            if all(doc is None for doc, _ in answers):
                # (gone, refused: every instance at that address left; those still
                # given time to catch up are asked again when it is up)
                pending = self._unheard(pending, again, admin)
                continue
            for doc, nonce in answers:
                who = doc.get("instance") if isinstance(doc, dict) else None
                if isinstance(who, str) and who in pending:
                    pending.discard(who)  # (else another worker of the group, or another
                    # process)
                    self._judge(who, doc, nonce, waiting, workers > 1)
                if workers > 1 and self.keys is not None and nonce is not None:
                    # (a group's worker answers for its siblings, each proved: one ask a
                    # group, where hearing each as itself cost N·H(N))
                    for entry in vouched(self.keys, doc, nonce, pending):
                        name = entry["instance"]
                        # (GONE: its process is gone, left)
                        if entry["generation"] == GONE \
                                or self._judge(name, entry, nonce, waiting, True, hearsay=True):
                            pending.discard(name)
                        else:  # (behind past its catch-up on a sibling's word only: asked
                            # as itself; named late should it not answer, as proved behind)
                            again.add(name)


async def behind(api: AdminClient, started: Collection[str], admin_of: Mapping[str, str],
                 generation: int, drill: str | None = None,
                 keys: Mapping[str, str] | None = None, catch_up: float = 0.0,
                 budget: Budget | None = None,
                 data_of: Mapping[str, str] | None = None, poll: float = 0.0) -> Behind:
    """The instances of `started` still running a generation older than `generation` (the
    restore's), sorted, and what could not be told. `admin_of`: the admin URL each
    published when the drill started; `drill` and `keys` (its `readyz_keys`): what an
    answer's proof is checked with; `catch_up`: seconds an instance answering "behind" is
    given (catch_up_for `poll`, the fleet's poll interval; 0: named at once; one that
    answers with a longer poll interval of its own is given the difference too);
    `data_of`: the data address each published (instances at one admin address with
    different ones are not one --workers group: one not heard there is `unasked`, not
    gone)."""
    try:
        live = (await api.call("GET", "/v1/status")).get("instances") or {}
    except DrillApiError:
        live = {}
    sharing = Counter(admin_of[n] for n in started if admin_of.get(n))
    ask: dict[str, list[str]] = {}
    shown = set[str]()
    for name in sorted(started):
        gen = generation_of(live.get(name)) if isinstance(live, dict) else None
        if gen is not None and gen >= generation:
            shown.add(name)
            continue  # (live, and applied it)
        admin = admin_of.get(name)
        if admin:  # (an instance that published no address cannot be asked)
            ask.setdefault(admin, []).append(name)
    budget = budget or Budget()
    out = Behind(proof="required" if drill is not None and keys else "unproven",
                 applied=shown)
    asker = _Asker(api, generation, drill, keys, catch_up, budget, out,
                   apart(started, admin_of, data_of or {}))
    asker.poll = max(0.0, poll)
    await asyncio.gather(*(asker.group(names, admin, sharing[admin])
                           for admin, names in ask.items()))
    out.asks = budget.spent
    for names in (out.late, out.unverified, out.unverified_applied, out.unproven):
        names.sort()
    out.unasked.sort(key=lambda u: str(u["admin"]))
    return out
