"""A store whose reads work but which refuses every write (redis's -NOREPLICAS: its own
`min-replicas-to-write` counts fewer good replicas than it requires): not a lost store.

Owns `WritesRefused`, a mixin of the sync loop (sync.py): `_beat()`, the heartbeat whose
refusal is said (`writes_refused`, /v1/status `store.writes_refused`, the gauge
`killgate_state_writes_refused` that staleness.py sets) instead of ending the cycle (it
was taken for a lost store: a reconnect and a `state_store_lost` warning every 0.5 s, the
replica count unknown, `killgate status` UNREACHABLE: found by revdurable); the log says
`state_store_writes_refused` (WARNING) once when it starts (while it lasts, the
subscription, which hears no heartbeat's ack, is asked with a PING at each heartbeat)
and `state_store_writes_taken` once when a write is taken again. Imports the errors,
the log, the store's protocol and its fleet.
"""

from __future__ import annotations

import logging
import time

from gateway.errors import StoreRefusesWrites
from gateway.log import event
from gateway.state.fleet import Fleet
from gateway.state.store import Store

__all__ = ["WritesRefused"]

log = logging.getLogger("killgate.state")


class WritesRefused:
    peers: Fleet
    store: Store
    #: why the store refuses writes (the last refusal's words), None while it takes them
    writes_refused: str | None = None

    async def _beat(self) -> None:
        """The heartbeat; refused by a store that takes no write, said, not raised (the
        next one at the heartbeat's pace: a refused one is tried again then, not at each
        poll). Any other error is raised as before."""
        try:
            await self.peers.beat()
        except StoreRefusesWrites as exc:
            self.peers.last_beat = time.monotonic()  # (its pace: not one per poll)
            self._refused_writes(exc)
            # its ack, published by the heartbeat, is what the subscription hears at least:
            # without it, its silence was judged a half-open connection (redis.py's watch)
            # 1.6 s on, and the store lost; asked instead (a PING), as after a refusal
            await self.store.kept()
        else:
            self._took_writes()

    def _refused_writes(self, exc: StoreRefusesWrites) -> None:
        """A write refused (-NOREPLICAS): said once when it starts."""
        if self.writes_refused is None:
            event(log, "state_store_writes_refused", logging.WARNING, error=str(exc),
                  detail="the store's reads work, so this instance stays synced, but every "
                         "write (heartbeat, kill, unkill, rollback, drill) is refused until "
                         "it takes writes again (said once; /v1/status store.writes_refused)")
        self.writes_refused = str(exc)

    def _took_writes(self) -> None:
        """A write taken: the refusal, if one was said, is over (said once)."""
        if self.writes_refused is not None:
            self.writes_refused = None
            event(log, "state_store_writes_taken")
