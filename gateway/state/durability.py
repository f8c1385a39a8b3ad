"""Whether the store can confirm a write now (state.min_replicas): its primary's replicas.

Owns `ReplicaWatch`, held by the sync loop: `check()` at the heartbeat's pace (its own
clock: applies beat more often; one command, FleetStore.replicas), never on a request's
path; `status()`, /v1/status `store.replicas` ({"connected", "required"}; null without
min_replicas or while unknown, `store.replicas_unknown` saying why); `export()`, the gauges
`killgate_state_replicas` (absent while unknown: no alert on a count nobody has) and
`killgate_state_min_replicas`; and the log: `state_store_not_durable` (WARNING) when the
count falls below min_replicas, `state_store_durable` when it is back, and
`state_store_replicas_unknown` once per cause. A count older than FRESH_BEATS checks (the
store lost, the loop held up) is unknown. Imports the store protocols, config, log, metrics.
"""

from __future__ import annotations

import logging
import time

from gateway.config import StateConfig
from gateway.log import event
from gateway.state.store import FleetStore, Replicas
from gateway.telemetry.metrics import Metrics

__all__ = ["FRESH_BEATS", "ReplicaWatch"]

log = logging.getLogger("killgate.state")

#: a count learnt more than this many checks (heartbeat intervals) ago is unknown
FRESH_BEATS = 3
#: at most this many causes of an unknown count are logged (each once) by a process
_CAUSES_LOGGED = 8


class ReplicaWatch:
    def __init__(self, store: FleetStore, cfg: StateConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._got: Replicas | None = None
        self._at = 0.0  # (when `_got` was learnt, monotonic)
        self._short = False  # (said below min_replicas, not yet said back)
        self._causes: set[str] = set()  # (the unknown counts' causes logged)

    def due(self) -> bool:
        """Whether a check is due (min_replicas set, a heartbeat interval since the last)."""
        return bool(self.cfg.min_replicas) and \
            time.monotonic() - self._at >= self.cfg.heartbeat_interval

    async def check(self) -> None:
        """Ask the store (one command); never raises (FleetStore.replicas)."""
        got = await self.store.replicas()
        self._got, self._at = got, time.monotonic()
        self._say(got)

    def current(self) -> Replicas:
        """The count as last learnt, if fresh; else None and why."""
        if self._got is None:
            return Replicas(None, "not asked yet (asked with each heartbeat)")
        age = time.monotonic() - self._at
        # (checked by the sync loop's cycle: no more often than it polls)
        pace = max(self.cfg.heartbeat_interval, self.cfg.poll_interval)
        bound = FRESH_BEATS * pace + self.cfg.command_timeout
        if age > bound:  # (no age in the words: the console's ETag holds while it lasts)
            return Replicas(None, f"last asked over {bound:g} s ago (this instance has not "
                                  "been synced with the store since)")
        return self._got

    def status(self) -> dict[str, object]:
        """`store.replicas` and `store.replicas_unknown` of /v1/status."""
        need = self.cfg.min_replicas
        if not need:
            return {"replicas": None, "replicas_unknown": None}
        got = self.current()
        if got.connected is None:
            return {"replicas": None, "replicas_unknown": got.why}
        return {"replicas": {"connected": got.connected, "required": need},
                "replicas_unknown": None}

    def export(self, metrics: Metrics) -> None:
        """The gauges, at each scrape (absent without min_replicas; the count absent while
        unknown)."""
        metrics.clear("killgate_state_replicas")
        metrics.clear("killgate_state_min_replicas")
        need = self.cfg.min_replicas
        if not need:
            return
        metrics.set("killgate_state_min_replicas", float(need))
        got = self.current().connected
        if got is not None:
            metrics.set("killgate_state_replicas", float(got))

    def _say(self, got: Replicas) -> None:
        need = self.cfg.min_replicas
        if got.connected is None:
            cause = (got.why or "").split(":", 1)[0][:80]
            if cause not in self._causes and len(self._causes) < _CAUSES_LOGGED:
                self._causes.add(cause)
                event(log, "state_store_replicas_unknown", logging.WARNING, required=need,
                      detail=f"how many replicas the store's primary holds is unknown: "
                             f"{got.why} (said once; /v1/status store.replicas_unknown)")
            return
        short = got.connected < need
        if short and not self._short:
            event(log, "state_store_not_durable", logging.WARNING, replicas=got.connected,
                  required=need,
                  detail=f"the store's primary has {got.connected} of {need} replica(s) in "
                         "sync (state.min_replicas): every kill, unkill, rollback and drill "
                         "is answered 503 not_durable (in force, not confirmed) until one "
                         "is back; bring a replica back")
        elif self._short and not short:
            event(log, "state_store_durable", replicas=got.connected, required=need)
        self._short = short
