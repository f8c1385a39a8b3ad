"""What this instance refused to believe: data from the store that failed verification.

Owns the count (`killgate_state_unverified_total{kind}`), the log (one `state_unverified`
error line per kind and cause per interval, with how many were suppressed: a forger cannot flood
the log) and the status block (`/v1/status` → `store.verification`), which counts each
cause apart and keeps the latest of each (`by_cause`, `last_by_cause`): one `last` alone
let a forger follow a wrong-MAC write (proof of a writer without the key) with a value
naming a made-up key id (which also reads as a benign key change), hiding the stronger
evidence. Also counts what was accepted only with the previous key (a rotation's
overlap), and, apart from tampering, what was refused for naming a key id the fleet retired
(`retired`: values genuinely written before a rotation, still in the store; counted in
`killgate_state_retired_key_total{kind}` and `store.verification.retired_key`, logged as a
warning: a routine rotation paged someone as tampering). Never raises: a side channel.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.domain.audit import utc_now
from gateway.log import event
from gateway.state.signing import CAUSES, Cause
from gateway.telemetry.metrics import Metrics

__all__ = ["CAUSES", "CONTENDED", "TamperLog", "contended"]

log = logging.getLogger("killgate.state")

#: the kinds of value the fleet leaves in the store, written before a key rotation and read
#: after it: a heartbeat (and its addresses) of an instance gone since, its counts, an
#: idempotency record. Only these are counted as `retired`: the state document, a push, an
#: ack, a snapshot signed with a retired key is live, and says that an instance still signs
#: with it, a replay, or someone holding it (counted as tampering, `unknown_key_id`)
LEFTOVERS = ("heartbeat", "stats", "idempotency")

#: every kind of value the store hands us that carries a signature
KINDS = ("state", "push", "ack", "heartbeat", "stats", "idempotency", "generation",
         "snapshot", "audit")


#: the kinds of refused value that make a write lose its compare-and-set: the document, the
#: generation key, the audit head key. A forged or misconfigured heartbeat, count, ack or
#: idempotency record (written anywhere, any time) cut every write short at 10 tries, with
#: 409 blaming a writer of the state without the key, under a burst nobody forged
CONTENDED = ("state", "generation", "audit")  # (`contended` names them too)


def contended(counts: dict[str, int]) -> int:
    """How many values of CONTENDED kinds `counts` (TamperLog.counts) holds. (Written out:
    every write counts them before its first try, and the generator took ~2k instructions
    of a kill's before its commit leaves.)"""
    get = counts.get
    return get("state", 0) + get("generation", 0) + get("audit", 0)


class TamperLog:
    def __init__(self, metrics: Metrics, interval: float = 10.0) -> None:
        self.metrics = metrics
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.previous_key: dict[str, int] = {}
        self.retired: dict[str, int] = {}
        self.last_retired: dict[str, Any] | None = None
        self.last: dict[str, Any] | None = None
        self.by_cause: dict[str, int] = {}
        self.last_by_cause: dict[str, dict[str, Any]] = {}
        self._logged: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        #: "kind/cause" -> when (monotonic) one was last refused (keyconfirm.py)
        self.at: dict[str, float] = {}

    def note(self, kind: str, problem: str, cause: Cause = "other", **detail: Any) -> None:
        """Data of `kind` was refused because of `problem` (already ignored by the caller);
        `cause` (one of CAUSES): as the Unverified raised said (signing.cause_of)."""
        if cause == "retired":
            if kind in LEFTOVERS:
                self._retired(kind, problem, detail)
                return
            cause = "unknown_key_id"
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.metrics.inc("killgate_state_unverified_total", (kind,), label_names=("kind",))
        cause = cause if cause in CAUSES else "other"
        self.by_cause[cause] = self.by_cause.get(cause, 0) + 1
        self.last = {"kind": kind, "problem": problem[:200], "cause": cause, "time": utc_now(),
                     **detail}
        self.last_by_cause[cause] = self.last
        # (one line per kind and cause: a forger's made-up key id logged first did not
        # keep a wrong-MAC write out of the log for the interval)
        if (suppressed := self._due(f"{kind}/{cause}")) is not None:
            event(log, "state_unverified", logging.ERROR, kind=kind, problem=problem[:200],
                  cause=cause, suppressed_since_last=suppressed, **detail)

    def _due(self, key: str) -> int | None:
        """Whether a line for `key` (kind/cause) is due: the lines suppressed since the last
        (counted), or None within `interval` of it (this one counted as suppressed)."""
        now = time.monotonic()
        self.at[key] = now
        if now - self._logged.get(key, -1e9) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._logged[key] = now
        return self._suppressed.pop(key, 0)

    def _retired(self, kind: str, problem: str, detail: dict[str, Any]) -> None:
        """Refused for a key id the fleet retired: counted and logged apart (a warning)."""
        self.retired[kind] = self.retired.get(kind, 0) + 1
        self.metrics.inc("killgate_state_retired_key_total", (kind,), label_names=("kind",))
        self.last_retired = {"kind": kind, "problem": problem[:200], "time": utc_now(), **detail}
        if (suppressed := self._due(f"{kind}/retired")) is not None:
            event(log, "state_retired_key", logging.WARNING, kind=kind, problem=problem[:200],
                  suppressed_since_last=suppressed, **detail)

    def accepted_previous(self, kind: str) -> None:
        """Data of `kind` verified only with the previous key (during a rotation)."""
        self.previous_key[kind] = self.previous_key.get(kind, 0) + 1
        self.metrics.inc("killgate_state_previous_key_total", (kind,), label_names=("kind",))

    def status(self) -> dict[str, Any]:
        return {"unverified": dict(self.counts), "unverified_total": sum(self.counts.values()),
                "last_unverified": self.last, "by_cause": dict(self.by_cause),
                "last_by_cause": dict(self.last_by_cause),
                "accepted_with_previous_key": dict(self.previous_key),
                "retired_key": dict(self.retired), "last_retired_key": self.last_retired}
