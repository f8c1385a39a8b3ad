"""The staleness clock of the kill state, and the `on_unavailable` policy.

Owns the guard task: how long since the store last answered, the stale alarm past
`max_staleness` (under either policy: the state enforced may be missing kills made since),
and, under `fail_closed`, closing every route until the store answers again (noted for
the audit trail). Never touches the store. Mixed into `Sync` (state/sync.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.config import StateConfig
from gateway.domain.audit import AuditDraft
from gateway.log import event
from gateway.state.holder import Holder
from gateway.telemetry.metrics import Metrics

__all__ = ["Guard"]

log = logging.getLogger("killgate.state")


class Guard:
    holder: Holder
    metrics: Metrics
    cfg: StateConfig
    instance: str
    connected: bool
    answering: bool
    pushes_cut: bool
    writes_refused: str | None
    last_ok: float | None
    started_at: float
    stale: bool
    last_error: str | None
    _pending_audit: list[AuditDraft]

    async def _guard(self) -> None:
        """Staleness clock and the fail_closed policy; never touches the store."""
        self.metrics.set("killgate_state_stale", 0)
        while True:
            stale = self.staleness()
            self.metrics.set("killgate_kill_state_age_seconds", round(stale, 3))
            # (a store that answers with a document this instance cannot verify is not
            # "unreachable": KillgateStateStoreDisconnected sent the SRE to a healthy Redis;
            # /readyz and the sync's error say state_unverifiable)
            # (nor is one whose reads verify while its pushes are cut: PushesCut; said by
            # killgate_state_pushes_cut, its reads at a poll's pace)
            self.metrics.set("killgate_state_store_connected",
                             1 if self.connected or self.answering or self.pushes_cut else 0)
            self.metrics.set("killgate_state_pushes_cut",
                             1 if self.pushes_cut and not self.connected else 0)
            self.metrics.set("killgate_state_writes_refused",  # (writesrefused.py)
                             1 if self.connected and self.writes_refused else 0)
            self._alarm(stale)
            if (self.cfg.on_unavailable == "fail_closed" and stale > self.cfg.max_staleness
                    and not self.holder.fail_closed):
                self.holder.set_fail_closed(True)
                self.metrics.set("killgate_fail_closed", 1)
                event(log, "fail_closed_tripped", logging.ERROR, staleness_s=round(stale, 3))
                self._pending_audit.append(AuditDraft(
                    actor="killgate/auto", action="fail_closed.trip", target={"scope": "global"},
                    reason=f"no state sync for {stale:.1f}s (max_staleness "
                           f"{self.cfg.max_staleness:g}s): every route answers killed",
                    source=self.instance))
            await asyncio.sleep(min(0.1, self.cfg.max_staleness / 4))

    def _alarm(self, stale: float) -> None:
        """Past max_staleness the state this instance enforces may be missing kills made
        since: raise the alarm under either policy (`last_known` keeps serving)."""
        now = stale > self.cfg.max_staleness
        if now == self.stale:
            return
        self.stale = now
        self.metrics.set("killgate_state_stale", 1 if now else 0)
        if now:
            event(log, "state_stale", logging.ERROR, staleness_s=round(stale, 3),
                  max_staleness_s=self.cfg.max_staleness, policy=self.cfg.on_unavailable,
                  error=self.last_error)
        else:
            event(log, "state_stale_cleared", logging.WARNING)

    def _touch(self) -> None:
        """The store answered: the clock starts again, and fail_closed opens (audited)."""
        self.last_ok = time.monotonic()
        if self.holder.fail_closed:
            self.holder.set_fail_closed(False)
            self.metrics.set("killgate_fail_closed", 0)
            event(log, "fail_closed_cleared", logging.WARNING)
            self._pending_audit.append(AuditDraft(
                actor="killgate/auto", action="fail_closed.clear", target={"scope": "global"},
                reason="the state store answers again", source=self.instance))

    def staleness(self) -> float:
        ref = self.last_ok if self.last_ok is not None else self.started_at
        return time.monotonic() - ref

    def confirmed(self) -> bool:
        """Whether the state held was confirmed by the store recently enough to say a kill
        is in force without it (two polls and a command's wait, 1 s at least): a copy
        not confirmed since, an instance cut off from the store, may hold a kill another
        instance lifted meanwhile (control/alertlocal.py). A process the store never
        answered holds nothing it confirmed: its snapshot may be hours old (found by review
        revsync: the window ran from the process's start, so a snapshot served cut off
        counted as confirmed for up to a window after its start)."""
        cfg = self.cfg
        return self.last_ok is not None \
            and self.staleness() <= max(1.0, 2 * cfg.poll_interval + cfg.command_timeout)
