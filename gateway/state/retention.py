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
import logging
import random
import time
from typing import Any, Protocol

from gateway.config import AuditRetentionConfig
from gateway.domain.audit import GENESIS, utc_now
from gateway.domain.retention import (
    Decide,
    Due,
    Retention,
    TrimDecision,
    TrimWindow,
    decide_trim,
)
from gateway.errors import StateError, StoreConflict
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


class AuditRetention:
    def __init__(self, store: Trimmer, cfg: AuditRetentionConfig, keys: Keyring,
                 mirror: AuditMirror | None = None) -> None:
        self.store = store
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

    async def trim_once(self, going_on: bool = False) -> tuple[TrimDecision,
                                                              dict[str, Any] | None]:
        """One look: the decision and the checkpoint appended (None: nothing removed).
        `going_on`: right after a trim held back by its batch, back to the bound whether
        or not the trail is still 10% past it. Raises StateError (StoreConflict: the store moved)."""
        now = time.time()

        def due(count: int, oldest: dict[str, Any] | None) -> bool:
            return going_on or self.policy.due(count, oldest, now)

        m = self.mirror
        copied = (m.last_hash or GENESIS) if m is not None and m.refused is None else None

        def decide(window: TrimWindow) -> TrimDecision:
            return decide_trim(window, self.keys, self.policy, now, copied)

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
        going_on, made, conflicts = False, 0, 0
        for _ in range(500):  # (a long trail: one batch after another)
            try:
                decision, ev = await self.trim_once(going_on)
            except StoreConflict:
                # (a write landed while the trail was read: on a busy fleet, at every look
                # of a long trail. Read again at once: the store reads only what is new)
                conflicts += 1
                if conflicts > CONFLICT_RETRIES:
                    raise
                continue
            if ev is None:
                break
            made, conflicts = made + 1, 0
            if not decision.more:  # (the bound is reached, or held back: no batch more)
                break
            going_on = True
        return made

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
