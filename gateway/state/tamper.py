"""What this instance refused to believe: data from the store that failed verification.

Owns the count (`killgate_state_unverified_total{kind}`), the log (one `state_unverified`
error line per kind per interval, with how many were suppressed: a forger cannot flood
the log) and the status block (`/v1/status` → `store.verification`). Also counts what was
accepted only with the previous key (a rotation's overlap). Never raises: a side channel.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.domain.audit import utc_now
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["TamperLog"]

log = logging.getLogger("killgate.state")

#: every kind of value the store hands us that carries a signature
KINDS = ("state", "push", "ack", "heartbeat", "stats", "idempotency", "generation",
         "snapshot", "audit")


class TamperLog:
    def __init__(self, metrics: Metrics, interval: float = 10.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.previous_key: dict[str, int] = {}
        self.last: dict[str, Any] | None = None
        self._logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def note(self, kind: str, problem: str, **detail: Any) -> None:
        """Data of `kind` was refused because of `problem` (already ignored by the caller)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.metrics.inc("killgate_state_unverified_total", (kind,), label_names=("kind",))
        self.last = {"kind": kind, "problem": problem[:200], "time": utc_now(), **detail}
        now = time.monotonic()
        if now - self._logged.get(kind, -1e9) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._logged[kind] = now
        event(log, "state_unverified", logging.ERROR, kind=kind, problem=problem[:200],
              suppressed_since_last=self._suppressed.pop(kind, 0), **detail)

    def accepted_previous(self, kind: str) -> None:
        """Data of `kind` verified only with the previous key (during a rotation)."""
        self.previous_key[kind] = self.previous_key.get(kind, 0) + 1
        self.metrics.inc("killgate_state_previous_key_total", (kind,), label_names=("kind",))

    def status(self) -> dict[str, Any]:
        return {"unverified": dict(self.counts), "unverified_total": sum(self.counts.values()),
                "last_unverified": self.last, "accepted_with_previous_key": dict(self.previous_key)}
