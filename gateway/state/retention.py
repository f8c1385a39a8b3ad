"""Audit retention (`state.audit_retention`): every `interval` (±10%), ask the store to trim
the trail back to its bounds once it is 10% past one.

Owns the loop and what it reports: `audit_trimmed` (info) for a trim, `audit_trim_refused`
(error) while the trail does not verify (nothing is removed then: a trim never hides a
break), and `status()` for `/v1/status` (`store.audit.retention`). Every instance runs
one; the store lets one trim at a time (the others' attempts change nothing: a conflict,
tried again at the next look). The decision is domain/retention.py's; the atomic trim is
the store's (redistrim.py, localtrim.py). Store failures are retried, never raised.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.config import AuditRetentionConfig
from gateway.domain.audit import GENESIS, AuditDraft, utc_now
from gateway.domain.retention import (
    Decide,
    Due,
    Retention,
    TrimDecision,
    TrimWindow,
    decide_trim,
)
from gateway.errors import DomainError, StateError, StoreConflict
from gateway.log import event
from gateway.state.mirror import AuditMirror
from gateway.state.signing import Keyring

__all__ = ["CONFLICT_RETRIES", "AuditRetention", "Trimmer"]

log = logging.getLogger("killgate.state")

#: a look reads the trail again at once this many times when a write lands meanwhile
CONFLICT_RETRIES = 3


class Trimmer(Protocol):
    async def audit_trim(self, decide: Decide,
                         due: Due) -> tuple[TrimDecision, dict[str, Any] | None]: ...


#: why a manual trim stopped before the bounds, with trims made (its answer's `why`)
STOPPED_CHANGING = ("stopped before the bounds: the trail kept changing under the trim "
                    "(another instance trimming, or writes landing); try again")


class AuditRetention:
    def __init__(self, store: Trimmer, cfg: AuditRetentionConfig, keys: Keyring,
                 mirror: AuditMirror | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock  # (the store's clock bounds it: domain/retention.py's age_clock)
        self.lock = asyncio.Lock()  # one look or manual trim at a time on this instance
        self.stopped = STOPPED_CHANGING  # why the last trim by hand stopped short
        self.mirror = mirror  # (what it has not copied yet is never removed)
        self.cfg = cfg
        self.policy = Retention(cfg.max_events, cfg.max_age)
        self.keys = keys.keys()
        self.last: dict[str, Any] | None = None  # the newest trim this instance made
        self.refused: dict[str, Any] | None = None  # why the last look removed nothing
        self._logged = 0.0

    def status(self) -> dict[str, Any]:
        return {"max_events": self.cfg.max_events, "max_age_s": self.cfg.max_age,
                "last_trim": self.last, "refused": self.refused}

    async def trim_once(self, going_on: bool = False,
                        stamp: Callable[[AuditDraft], AuditDraft] | None = None,
                        ) -> tuple[TrimDecision, dict[str, Any] | None]:
        """One look: the decision and the checkpoint appended (None: nothing removed).
        `going_on`: right after a trim held back by its batch (or asked for by hand), back
        to the bound whether or not the trail is still 10% past it. `stamp`: the checkpoint
        as a manual trim records it (its caller, reason, request). Raises StateError
        (StoreConflict: the store moved)."""
        now = self.clock()

        def due(count: int, oldest: dict[str, Any] | None, clock: float | None) -> bool:
            return going_on or self.policy.due(
                count, oldest, now if clock is None else min(now, clock))

        copied = self._copied()

        def decide(window: TrimWindow) -> TrimDecision:
            d = decide_trim(window, self.keys, self.policy, now, copied)
            if stamp is not None and d.draft is not None:
                d = dataclasses.replace(d, draft=stamp(d.draft))
            return d

        decision, ev = await self.store.audit_trim(decide, due)
        if ev is not None:
            self.refused = None
            self.last = {"time": ev["time"], "checkpoint": ev["id"],
                         "removed": decision.remove}
            event(log, "audit_trimmed", removed=decision.remove, checkpoint=ev["id"],
                  last_removed=ev["after"]["last_removed"]["id"])
        elif decision.broken:
            self.refused = {"time": utc_now(), "problem": decision.why}
            mono = time.monotonic()
            if mono - self._logged > 3600 or self._logged == 0.0:
                self._logged = mono
                event(log, "audit_trim_refused", logging.ERROR, problem=decision.why,
                      action="run `killgate audit verify`; the trail is not trimmed while "
                             "it does not verify")
        return decision, ev

    async def look(self) -> int:
        """One look: trims until the bound is reached (a batch at a time, the next at
        once); how many trims were made. Raises StateError as trim_once does."""
        async with self.lock:
            return len((await self._trims(False, None))[0])

    async def _trims(self, going_on: bool, stamp: Callable[[AuditDraft], AuditDraft] | None,
                     ) -> tuple[list[tuple[TrimDecision, dict[str, Any]]], TrimDecision | None]:
        """Trims until the bound is reached: those made, and the last decision (None: a
        manual trim stopped by conflicts after some; `self.stopped` says why)."""
        made: list[tuple[TrimDecision, dict[str, Any]]] = []
        conflicts, decision = 0, None
        self.stopped = STOPPED_CHANGING
        for _ in range(500):  # (a long trail: one batch after another)
            try:
                decision, ev = await self.trim_once(going_on, stamp)
            except StoreConflict:
                # (a write landed while the trail was read: on a busy fleet, at every look
                # of a long trail. Read again at once: the store reads only what is new)
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    if stamp is not None and made:  # (a manual trim says what it did)
                        return made, None
                    raise
                continue
            except StateError as exc:
                if stamp is not None and made:  # (the batches made stand: each was atomic)
                    self.stopped = (f"stopped before the bounds: the state store failed "
                                    f"after {len(made)} trim(s) ({exc}); try again")
                    return made, None
                raise
            if ev is None:
                break
            made.append((decision, ev))
            conflicts = 0
            if not decision.more:  # (the bound is reached, or held back: no batch more)
                break
            going_on = True
        return made, decision

    async def trim_now(self, draft: AuditDraft, dry_run: bool = False) -> dict[str, Any]:
        """A trim asked for by hand (`POST /v1/audit/trim`): back to the bounds now, whether
        or not the trail is 10% past them, each checkpoint recorded as `draft` says (the
        caller as its actor, the reason, the request), or (`dry_run`) how many events the
        first trim would remove, nothing changed. DomainError `trim_running` (409) while
        this instance trims, or the trail keeps changing under the trim (another instance
        trimming); `trail_broken` (409) when the trail does not verify: nothing removed (a
        break met after batches that verified: they went, and the answer says `broken`)."""
        if self.lock.locked():
            raise DomainError("trim_running", "a trim of the audit trail is already running "
                              "on this instance; try again when it is done")
        async with self.lock:
            if dry_run:
                return await self._dry_run()

            def stamp(d: AuditDraft) -> AuditDraft:
                return dataclasses.replace(
                    d, actor=draft.actor, reason=f"{draft.reason} (manual trim; {d.reason})",
                    request_id=draft.request_id, source=draft.source, trace_id=draft.trace_id)

            try:
                made, last = await self._trims(True, stamp)
            except StoreConflict:
                raise DomainError("trim_running", "the audit trail changed while it was read, "
                                  f"{CONFLICT_RETRIES + 1} times (another instance trimming, "
                                  "or writes landing): nothing was removed; try again") from None
        if not made and last is not None and last.broken:
            raise DomainError("trail_broken", last.why)
        out = {"dry_run": False, "removed": sum(d.remove for d, _ in made),
               "checkpoints": [ev["id"] for _, ev in made],
               "events": made[-1][1]["after"]["kept"] + 1 if made else None}
        if not made and last is not None:
            out["why"] = last.why
        elif made and last is None:
            out["why"] = self.stopped  # (conflicts, or the store failing, after some)
        elif made and last is not None and last.broken:
            # (batches that verified went; the next met a break: said, never as a trim
            # back to the bounds, the break being evidence of tampering)
            out["broken"] = True
            out["why"] = f"stopped before the bounds at a break: {last.why}"
        return out

    async def _dry_run(self) -> dict[str, Any]:
        seen: list[tuple[int, TrimDecision]] = []
        copied = self._copied()
        now = self.clock()

        def decide(window: TrimWindow) -> TrimDecision:
            seen.append((window.count, decide_trim(window, self.keys, self.policy, now, copied)))
            return TrimDecision(0, None, "a dry run")

        for _ in range(CONFLICT_RETRIES + 1):
            try:
                await self.store.audit_trim(decide, lambda count, oldest, clock: True)
                break
            except StoreConflict:
                continue  # (a dry run removes nothing: never raised for its own write)
        if not seen:
            raise DomainError("trim_running", "the audit trail kept changing while it was read")
        count, d = seen[-1]
        if d.broken:
            raise DomainError("trail_broken", d.why)
        return {"dry_run": True, "events": count, "would_remove": d.remove, "more": d.more,
                **({"why": d.why} if d.remove == 0 else {})}

    def _copied(self) -> str | None:
        m = self.mirror  # (what it has not copied yet is never removed)
        return (m.last_hash or GENESIS) if m is not None and m.refused is None else None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval * random.uniform(0.9, 1.1))
            try:
                await self.look()
            except StoreConflict:
                pass  # another instance trimmed, or a write landed: the next look sees it
            except StateError as exc:
                event(log, "audit_trim_failed", logging.WARNING, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug here must not end retention
                event(log, "audit_trim_failed", logging.ERROR, error=repr(exc))
