"""Drills past their deadline, closed by the fleet: a drill whose process died (SIGKILL, a
lost laptop, a CI job cancelled) leaves what it injected in force, a kill of its route or of
everything included, until someone runs `killgate drill restore`. Chaos tools users know
end an injected fault at its stated duration; so does killgate, a little later.

Every `interval` each instance looks at the open drills in the state it holds; one still open
`drills.auto_restore_after` past its deadline (the drill's own duration, at most
`drills.max_duration`) is restored and ended as `aborted` in one write, audited `drill.end`
by `killgate/auto` with the reason (`automatic: true`). Every instance may try: the write
is a compare-and-set that looks again at the store's document, so one closes it and the
others find it gone and change nothing. Only the state is read on the way; nothing here
touches the request path.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.config import Config
from gateway.domain.audit import AuditDraft
from gateway.domain.drillfinish import Finished, end_event, finish
from gateway.domain.statedoc import Change, StateDoc
from gateway.errors import AuditError, DomainError, NotDurable, StateError
from gateway.log import event
from gateway.tasks import cancel
from gateway.telemetry.metrics import Metrics

__all__ = ["ACTOR", "OverdueDrills"]

log = logging.getLogger("killgate.drills")

ACTOR = "killgate/auto"

ChangeFn = Callable[[StateDoc], Change | None]
Describe = Callable[[StateDoc, StateDoc], AuditDraft]


class Writer(Protocol):
    async def write(self, change: ChangeFn, describe: Describe) -> tuple[StateDoc, dict[str, Any] | None]: ...


class OverdueDrills:
    def __init__(self, writer: Writer, doc: Callable[[], StateDoc], config: Callable[[], Config],
                 metrics: Metrics, interval: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.writer = writer
        self.doc = doc
        self.config = config
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="drill-watch")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval * (0.5 + random.random()))  # (instances apart)
            try:
                await self.check()
            except (StateError, AuditError):
                pass  # (the store: the next turn tries again)
            except Exception as exc:  # noqa: BLE001 - a bug must not end the watch
                # for good (no overdue drill closed here until a restart): logged with its
                # traceback, and the next turn runs
                event(log, "drill_watch_failed", logging.ERROR, exc=exc)

    async def check(self) -> list[str]:
        """Close every drill due; the ids closed by this instance."""
        grace = self.config().drills.auto_restore_after
        if grace is None:
            return []
        now = self.clock()
        due = [d.id for d in self.doc().drills.values() if now > d.deadline + grace]
        return [d for d in due if await self._close(d, grace)]

    async def _close(self, drill: str, grace: float) -> bool:
        routes = {r.name: r for r in self.config().routes}
        done = Finished()
        late: list[float] = []
        closing: list[bool] = [False]  # what the last decision was (what a commit wrote)
        summary = {"overdue": True}

        def change(cur: StateDoc) -> Change:
            rec = cur.drills.get(drill)
            closing[0] = False
            if rec is None or self.clock() <= rec.deadline + grace:
                return Change()  # (closed meanwhile, by its drill or another instance)
            late[:] = [round(self.clock() - rec.deadline, 1)]
            ch = finish(cur, drill, routes, ACTOR, "aborted", summary, done)
            closing[0] = True
            return ch

        def describe(cur: StateDoc, new: StateDoc) -> AuditDraft:
            reason = (f"the drill was still open {late[0]:g}s after its deadline (its process "
                      "died or hung): restored and ended by the fleet "
                      "(drills.auto_restore_after)")
            return end_event(drill, done, ACTOR, reason, "aborted", summary, automatic=True)

        durable = True
        try:
            _, ev = await self.writer.write(change, describe)
        except DomainError as exc:
            event(log, "drill_auto_restore_refused", logging.WARNING, drill=drill, why=str(exc))
            return False
        except NotDurable:
            # committed and in force, not yet confirmed by state.min_replicas: this close
            # happened (the next turn finds the drill gone), so it is counted and said
            if not closing[0]:
                return False
            ev, durable = {}, False
        if ev is None:
            return False
        self.metrics.inc("killgate_drills_auto_restored_total")
        event(log, "drill_auto_restored", logging.WARNING, drill=drill,
              late_s=late[0] if late else None, undone=done.notes, durable=durable)
        return True
