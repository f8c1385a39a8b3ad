"""Denied admin calls, recorded in the audit trail (RELIABILITY rows 41, 43 and 45).

A refused call (401 bad token, 403 missing scope, 429 after too many failures, 409
principal_changed: signed in as another than X-Killgate-Subject) is tallied
in memory at once and written to the hash-chained audit trail by a background task every
`interval`: one event per caller, action and endpoint, carrying how many attempts it stands
for and when the first and the last were made. The refusal itself never waits on the state
store, and a flood of bad tokens from many addresses costs the trail at most `max_events`
itemised events (plus one summary of the rest) per interval instead of one per attempt.
A flush that fails keeps its tallies for the next one (bounded, like the tallies).
While every flush finds something new (a sustained flood), the interval doubles up to
`max_interval`; the first quiet flush brings it back to `interval`. The events themselves
are budgeted as well, `max_events + 1` per `max_interval` (with a burst of as many): so a
flood costs the trail at most that many events a minute per instance however it is timed
(bursts sent just after each write, with a pause for one quiet write, once had 17 events
written every 3 s). What the budget does not allow waits in the tallies. Endpoints are recorded as
their route pattern (`/v1/routes/{route}/rollback`), so a caller cannot multiply its
tallies, or put arbitrary text in the trail, by varying the path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gateway.admin.ports import Counters
from gateway.domain.audit import AuditDraft, utc_now
from gateway.errors import AuditError, StateError
from gateway.log import event
from gateway.tasks import cancel

__all__ = ["DeniedLog"]

log = logging.getLogger("killgate.admin")

# (action, actor, peer, method, path)
Key = tuple[str, str, str, str, str]
FLUSH_INTERVAL = 1.0  # seconds between writes of what was tallied


@dataclass(slots=True)
class _Tally:
    reason: str
    scope: str
    first: str
    last: str
    count: int = 1


class DeniedLog:
    def __init__(self, append: Callable[[AuditDraft], Awaitable[Any]], metrics: Counters,
                 interval: float | None = None, max_events: int = 16,
                 max_keys: int = 1024, max_interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._append = append
        self.metrics = metrics
        self.interval = FLUSH_INTERVAL if interval is None else interval
        self.max_interval = max(max_interval, self.interval)
        self.wait = self.interval  # until the next flush: grows while a flood lasts
        self.max_events = max_events
        self.max_keys = max_keys
        self._tallies: dict[Key, _Tally] = {}
        self._untallied = 0  # attempts beyond max_keys: counted, not itemised
        self._task: asyncio.Task[None] | None = None
        self.clock = clock
        # events the trail may take now: max_events + 1 per max_interval, up to as many
        self._budget = float(max_events + 1)
        self._budget_at = clock()

    def record(self, action: str, actor: str | None, peer: str, method: str, path: str,
               reason: str, scope: str) -> None:
        """Note one refused call; never blocks, never raises."""
        key = (action, actor or "anonymous", peer, method, path)
        now = utc_now()
        tally = self._tallies.get(key)
        if tally is not None:
            tally.count += 1
            tally.last = now
            tally.reason = reason
        elif len(self._tallies) < self.max_keys:
            self._tallies[key] = _Tally(reason, scope, now, now)
        else:
            self._untallied += 1

    @property
    def pending(self) -> int:
        return sum(t.count for t in self._tallies.values()) + self._untallied

    def _allowance(self) -> int:
        """Whole events the budget allows now."""
        now = self.clock()
        cap = float(self.max_events + 1)
        self._budget = min(cap, self._budget + (now - self._budget_at) * cap / self.max_interval)
        self._budget_at = now
        return int(self._budget)

    async def flush(self, budgeted: bool = True) -> None:
        """Write what is tallied: the oldest callers itemised, the rest summed into one
        event, within the event budget (unless not `budgeted`: the last flush). What is not
        written (over the budget, a failure, an error, a cancellation) is merged back for
        the next flush; an event whose write was cut short may then be counted twice, never
        lost."""
        if not self._tallies and not self._untallied:
            return
        allowed = self._allowance() if budgeted else self.max_events + 1
        if allowed < 1:
            return  # (kept, bounded, for a flush the budget allows)
        tallies = sorted(self._tallies.items(), key=lambda kv: kv[1].first)
        untallied = self._untallied
        self._tallies = {}
        self._untallied = 0
        n = min(self.max_events, len(tallies))
        if n >= allowed:  # not all of them: the summary takes the last event allowed
            n = allowed - 1
        itemised, rest = tallies[:n], tallies[n:]
        others = sum(t.count for _, t in rest) + untallied
        written = 0  # events, the summary included
        try:
            for key, t in itemised:
                action, actor, peer, method, path = key
                draft = AuditDraft(actor, action,
                                   {"method": method, "path": path, "scope": t.scope},
                                   t.reason, source=peer,
                                   extra={"attempts": t.count, "first": t.first, "last": t.last})
                if not await self._write(draft):
                    return
                written += 1
            if others:
                now = utc_now()
                # `untallied`: attempts past max_keys, whose callers were not even kept
                draft = AuditDraft(
                    "anonymous", "denied.summary", {"callers": len(rest), "untallied": untallied},
                    "more denied admin calls than one audit flush itemises: counted, not "
                    "itemised",
                    extra={"attempts": others,
                           "first": min((t.first for _, t in rest), default=now),
                           "last": max((t.last for _, t in rest), default=now)})
                if await self._write(draft):
                    others = 0
                    written += 1
        finally:
            self._budget -= written
            for key, unwritten in itemised[written:]:
                self._merge(key, unwritten)
            self._untallied += others

    async def _write(self, draft: AuditDraft) -> bool:
        try:
            await self._append(draft)
        except (StateError, AuditError, OSError) as exc:
            self.metrics.inc("killgate_audit_denied_failures_total")
            event(log, "denied_audit_failed", logging.WARNING, error=str(exc))
            return False
        return True

    def _merge(self, key: Key, old: _Tally) -> None:
        """Put an unwritten tally back, merged with any recorded since."""
        new = self._tallies.pop(key, None)
        if new is not None:
            old.count += new.count
            old.last = new.last
            old.reason = new.reason
        if len(self._tallies) < self.max_keys:
            self._tallies[key] = old
        else:
            self._untallied += old.count

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.wait)
            busy = self.pending > 0
            try:
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - a side channel must not die
                event(log, "denied_audit_error", logging.ERROR, error=repr(exc))
            self.wait = min(self.wait * 2, self.max_interval) if busy else self.interval

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="denied-audit")

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop, then write what is still tallied (bounded by `timeout`)."""
        await cancel(self._task)
        self._task = None
        try:
            await asyncio.wait_for(self.flush(budgeted=False), timeout)
        except Exception as exc:  # noqa: BLE001 - shutdown goes on; what is lost is said
            event(log, "denied_audit_lost", logging.WARNING, error=repr(exc),
                  attempts=self.pending)
