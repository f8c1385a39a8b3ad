"""A reload taken back (the config watcher's part, control/reload.py): an override latched
after a reload went live needs a version the file dropped that the config before it has.

A rollback made through an instance still on the old file, while this one had taken up the
new (a fleet mid-deploy: each instance reads its own copy), left this one serving nothing on
the route (NOT SERVING: no version the override names is in its config). Had the rollback
come first, this instance would have refused the file (configrecord.latch_problems), as the
instance it was made through does. So the outcome is made the one of that order, the one an
Argo Rollouts user expects of an abort (the rollback lands on a serving version, the new
spec waits): the config before is put live again (a reload of its own: checked, swapped,
audited as a change back) and the file counted refused, saying why and that `release` ends
it; the watcher reads the file again as the state changes, as for any refusal. Only the
config the last reload replaced is put back, only when it has every version latched and the
reload changed nothing else (no other route, no setting, of the route itself only its
versions, stable and weights: a fix shipped with it stays; the
route then serves nothing, as status says), once until the next reload
(domain/droppedlatch.taken_back decides).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.configfile import LoadedConfig, restart_changes
from gateway.domain.audit import utc_now
from gateway.domain.droppedlatch import taken_back
from gateway.domain.statedoc import StateDoc
from gateway.errors import ConfigError, Problem
from gateway.log import event

if TYPE_CHECKING:
    from gateway.control.reloadrefused import ReloadOutcome

__all__ = ["TakeBack"]

log = logging.getLogger("killgate.reload")


class TakeBack:
    """ConfigWatcher's take-back (its attributes, set by its constructor)."""

    previous: LoadedConfig | None
    _doc: StateDoc | None
    _lock: asyncio.Lock
    _stop: asyncio.Event
    current: Callable[[], LoadedConfig]
    apply: Callable[[LoadedConfig], Awaitable[None]]
    outcome: ReloadOutcome
    started: LoadedConfig

    def _reject(self, exc: ConfigError, trigger: str) -> None:
        raise NotImplementedError

    def _takes_back(self, before: LoadedConfig) -> list[tuple[str, str]]:
        """The latch problems taking `before` back would end; [] when it is not taken back
        (also when the reload changed any setting beside the routes: none is undone)."""
        running = self.current().config
        if self._doc is None or before is not self.previous or \
                before.config.model_copy(update={"routes": []}) \
                != running.model_copy(update={"routes": []}):
            return []
        return taken_back(self._doc, running.routes, before.config.routes)

    async def _take_back(self, before: LoadedConfig) -> None:
        """Put `before` live again instead of the file (module doc); the file refused."""
        async with self._lock:
            if self._stop.is_set() or not (problems := self._takes_back(before)):
                return
            running = self.current()
            try:
                await self.apply(before)
            except ConfigError as exc:  # (NOT SERVING stays, as said in status)
                event(log, "config_take_back_refused", logging.ERROR, running=running.digest,
                      before=before.digest, problems=[str(p) for p in exc.problems])
                return
            self.previous = None
            self.outcome.loaded_digest, self.outcome.loaded_at = before.digest, utc_now()
            self.outcome.restart_required = restart_changes(self.started.config, before.config)
            event(log, "config_reload_taken_back", logging.WARNING, taken_back=running.digest,
                  running=before.digest, problems=[m for _, m in problems])
            # (/v1/status config.warnings, until the next config goes live; `last_error`
            # says it until the file is read again, refused for the same latch)
            self.outcome.warnings = [*self.outcome.warnings, *(
                f"the reload to {running.digest} was taken back, the config before it put "
                f"live again: {m}" for _, m in problems)]
            self._reject(ConfigError([Problem(p, f"taken back after it went live: {m}")
                                      for p, m in problems]), "state")
