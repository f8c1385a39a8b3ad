"""Break-glass, counted (`killgate_break_glass_total{action}`) and logged (the ERROR line
`break_glass`): once per write that skipped the two-person rule, when it is known to have
been applied, by the instance that made it.

A replay (a retry with the write's Idempotency-Key, answered with its first result) is
not a second use and is not counted: the trail holds one event with `break_glass: true`
for it, and the retry's `replay` record names that event. A write whose commit's answer was
lost (503 outcome_unknown) is not counted then (it may not have landed): the instance that
made it watches the state in force (`Unanswered`) and counts it once a verified document
naming its write is (signed, so only a commit of it, with its audit event, makes one),
or, where one shows another commit took its generation, watches on (a re-seed merging
that branch with one holding the write may bring it in) and then drops it quietly;
retried or not, the count matches the break-glass events in the trail. Nothing kept in
Redis decides it: the retry that found it landed counted it from the key's record
there, so one who writes Redis put that (sealed, genuine) record back to have each retry
count it again, or deleted it to have none count it. Pure of I/O but for the counter,
the log line and the watch's timer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.admin.actions import Intent
from gateway.admin.glassjournal import Journal
from gateway.admin.ports import Counters, Current
from gateway.domain.writeids import descends_from
from gateway.log import event

__all__ = ["Unanswered", "count", "use", "used"]

log = logging.getLogger("killgate.admin")

#: how long the instance watches for a lost break-glass write (a read of the document in
#: force every WATCH_STEP: no I/O); past it, the use is said to be unresolved
WATCH_FOR = 600.0
WATCH_STEP = 0.1
#: lost break-glass writes watched at once (more: each said unresolved at once)
MAX_WATCHED = 64


def use(intent: Intent, needs: int, peer: str) -> dict[str, Any]:
    return {"actor": intent.actor, "action": intent.action, "target": intent.target,
            "reason": intent.reason, "approvals_skipped": needs - 1, "peer": peer}


def used(counters: Counters, intent: Intent, needs: int, peer: str) -> None:
    """A write that skipped the rule, applied: counted and logged at ERROR."""
    count(counters, use(intent, needs, peer), learned="at once")


def count(counters: Counters, glass: dict[str, Any], learned: str) -> None:
    counters.inc("killgate_break_glass_total", (glass["action"],), label_names=("action",))
    event(log, "break_glass", logging.ERROR, actor=glass.get("actor"),
          action=glass["action"], target=glass.get("target"), reason=glass.get("reason"),
          approvals_skipped=glass.get("approvals_skipped"), peer=glass.get("peer"),
          learned=learned)


@dataclass
class _Lost:
    """One break-glass write whose answer was lost: what is counted should it be in force."""

    generation: int
    glass: dict[str, Any]
    audit_id: str | None
    end: float  # (the loop's clock: past it, unresolved)
    landed: bool | None = None  # (False: a document at its generation that lacks it)
    kept: Path | None = None  # (its file: glassjournal.py)


class Unanswered:
    """Break-glass writes of this instance whose commit's answer was lost, watched until
    the state in force says whether they landed: one task for all (a read of the document
    in force every WATCH_STEP), at most MAX_WATCHED at once (a task each, polling, with no
    bound: a script retrying a break-glass write without its key through a store that
    lost every answer kept ever more of them for 10 minutes, each waking 10 times a
    second on the loop the data plane serves on)."""

    def __init__(self, current: Current, counters: Counters) -> None:
        self.current = current
        self.counters = counters
        self.pending: dict[str, _Lost] = {}  # write id -> its use
        self._task: asyncio.Task[None] | None = None

    def watch(self, write: str, generation: int, intent: Intent, needs: int, peer: str,
              audit_id: str | None, kept: Path | None = None) -> None:
        """`kept`: the use's file (glassjournal.py), removed once it is counted (else the
        next start reads the trail for it)."""
        loop = asyncio.get_running_loop()
        glass = use(intent, needs, peer)
        if len(self.pending) >= MAX_WATCHED:
            _unresolved(glass, audit_id, f"{MAX_WATCHED} others are watched already")
            return
        self.pending[write] = _Lost(generation, glass, audit_id, loop.time() + WATCH_FOR,
                                    kept=kept)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="break-glass-watch")

    async def stop(self) -> None:
        """End the watches (at shutdown: each unresolved is said so)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _settle(self, now: float) -> None:
        doc = self.current.doc
        for write, lost in list(self.pending.items()):
            if doc.generation >= lost.generation:
                said = descends_from(doc.writes, write, lost.generation)
                if said:
                    del self.pending[write]
                    count(self.counters, lost.glass, learned="once its commit was seen in "
                                                             "force (the first answer was lost)")
                    Journal.done(lost.kept)
                    continue
                # (False is not the end: a document of another branch of the history (a
                # promoted replica that missed the write, a store restored from a backup,
                # written on since) may be in force first, and the re-seed that merges it
                # with one holding the write, both sides' writes, later: the watch stopped
                # at the first, and that use, in force, was never counted. Once settled, a
                # window trimmed since says no more.)
                if said is False or lost.landed is None:
                    lost.landed = said
            if now >= lost.end:
                self._drop(write)

    def _drop(self, write: str) -> None:
        lost = self.pending.pop(write)
        if lost.landed is None:
            _unresolved(lost.glass, lost.audit_id, "whether it landed is not known here")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                self._settle(loop.time())
                if self.pending:
                    await asyncio.sleep(WATCH_STEP)
        finally:
            for write in list(self.pending):  # (stopped: each unresolved, said)
                self._drop(write)


def _unresolved(glass: dict[str, Any], audit_id: str | None, why: str) -> None:
    event(log, "break_glass_unresolved", logging.WARNING, audit_id=audit_id,
          action=glass["action"], actor=glass.get("actor"),
          detail=f"a break-glass write whose answer was lost, not counted: {why}; "
                 "`killgate audit` shows it if it landed")
