"""One answer of an instance a drill asks after its restore, judged: applied, behind, or
unproved.

Owns `AnswerJudge`, the base of drillbehind's asker: an answer at or past the restore's
generation is applied (proved with the drill's key, or taken at its word when the drill
got no keys; unproved: `unverified_applied`); one older is `unverified` unless proved, and
`late` only once its catch-up time (`catch_up`, with the instance's own poll interval
when longer, at most CATCH_UP_MAX) has passed since its first such answer; meanwhile it
is asked again (`_step`). Time is the running loop's; no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from gateway.control.behindreport import Behind
from gateway.domain.readyzproof import verified

__all__ = ["ASK_AGAIN_EVERY", "CATCH_UP_MAX", "AnswerJudge", "generation_of"]

#: seconds, at most, an instance that answered "behind" is given to catch up
CATCH_UP_MAX = 10.0
#: an instance behind is asked again this often (at most) within its catch-up time (_step)
ASK_AGAIN_EVERY = 0.25



def _step(catch_up: float) -> float:
    """Seconds between asks of an instance behind: at half of `catch_up` and at its end.
    (Every quarter of it, an instance behind cost five asks where it had cost two: a fleet
    of 300 reconnecting after a store outage spent the drill's asks in all (drillasks.
    Budget) within their catch-up time, and 176 were named as not having applied it.)"""
    return min(catch_up, max(ASK_AGAIN_EVERY, catch_up / 2))


def _own_poll(doc: Any) -> float:
    """The poll interval (s) an instance's /readyz answer says it runs with (0: none said;
    whatever it says, catch_up_for bounds what it is given by CATCH_UP_MAX)."""
    state = doc.get("state") if isinstance(doc, dict) else None
    ms = state.get("poll_interval_ms") if isinstance(state, dict) else None
    if not isinstance(ms, int | float) or isinstance(ms, bool) or not 0 <= ms < 1e9:
        return 0.0
    return float(ms) / 1000


def generation_of(doc: Any) -> int | None:
    gen = doc.get("generation") if isinstance(doc, dict) else None
    return gen if isinstance(gen, int) and not isinstance(gen, bool) else None


class AnswerJudge:
    def __init__(self, generation: int, keys: Mapping[str, str] | None, catch_up: float,
                 out: Behind) -> None:
        self.generation = generation
        self.keys = keys
        self.catch_up = catch_up
        self.out = out
        self.first: dict[str, float] = {}  # name -> when it first answered "behind"
        self.poll = 0.0  # (the fleet's poll interval `catch_up` was given for)


    def _judge(self, name: str, doc: Any, nonce: str | None,
               waiting: dict[str, float], shared: bool = False,
               hearsay: bool = False) -> bool:
        """One answer of `name`'s: applied (proved, or taken at its word), behind (named
        once `catch_up` has passed since its first such answer; asked again meanwhile), or
        unverified. `hearsay`: a sibling's word for it (its file in the group's run
        directory, workerstates.py), which lags its own and stays behind for good when its
        write fails (a full disk): never named late on that word (False: not judged, to be
        asked as itself; it is named late only on its own answer, or its silence)."""
        out = self.out
        gen = generation_of(doc)
        proved = nonce is not None and verified(self.keys or {}, doc, nonce)
        if not proved and isinstance(doc, dict) and "proof" not in doc:
            out.no_proof.add(name)
        if gen is None or gen >= self.generation:  # (applied it, or cannot say)
            if self.keys is None:
                out.unproven.append(name)
                out.applied.add(name)
            elif not proved:
                out.unverified_applied.append(name)
            else:
                out.applied.add(name)
            return True
        if self.keys is not None and not proved:
            out.unverified.append(name)
            return True
        now = asyncio.get_running_loop().time()
        # (its own poll, when longer than the fleet's the drill was told of: a config
        # rolled out to some instances only; each gave the opener's, and an instance
        # polling less often was named before its poll had come)
        extra = max(0.0, _own_poll(doc) - self.poll) if self.catch_up > 0 else 0.0
        catch_up = max(self.catch_up, min(CATCH_UP_MAX, self.catch_up + extra))
        until = self.first.setdefault(name, now) + catch_up
        if now >= until and hearsay:
            return False
        if now >= until:
            out.late.append(name)
        else:  # (slow, maybe: asked again soon, until its catch-up time has passed; a
            # worker of a group `shared` at its end only: hearing again from each of N
            # workers costs N·H(N) asks a round, and a round more spent the drill's asks)
            waiting[name] = until if shared else min(now + _step(catch_up), until)
        return True
