"""A refused reload (the config watcher's part, control/reload.py): the outcome /v1/status
shows under `config`, a refusal logged once per distinct error and counted, and the refused
file read again by itself (after RETRY_FIRST_S, then at doubling intervals up to
RETRY_MAX_S, while the watcher runs and the refusal stands: what refused it may not be the
file, and nothing else would read the unchanged file again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gateway.configfile import LoadedConfig
from gateway.domain.audit import utc_now
from gateway.errors import ConfigError
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["RETRY_FIRST_S", "RETRY_MAX_S", "Refusals", "ReloadOutcome"]

log = logging.getLogger("killgate.reload")

#: a refused file is read again after this long, then at doubling intervals up to RETRY_MAX_S
RETRY_FIRST_S = 5.0
RETRY_MAX_S = 60.0


class ReloadOutcome:
    """What /v1/status shows under `config`."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded_digest = loaded.digest
        self.loaded_at = utc_now()
        self.last_error: str | None = None
        self.last_problems: list[str] = []
        self.last_attempt: str | None = None
        self.restart_required: list[str] = []
        self.waiting: str | None = None  # a reload waits for the file's writer (why, since)
        #: what the last config applied changed that an operator must know (set by `apply`)
        self.warnings: list[str] = []


class Refusals:
    """ConfigWatcher's refusals (its attributes, set by its constructor)."""

    path: Path
    current: Callable[[], LoadedConfig]
    metrics: Metrics
    outcome: ReloadOutcome
    watch: bool
    _stop: asyncio.Event
    _retry: asyncio.Task[None] | None
    retry_first: float
    retry_max: float

    async def reload(self, trigger: str) -> bool:
        raise NotImplementedError

    def _reject(self, exc: ConfigError, trigger: str) -> None:
        problems = [str(p) for p in exc.problems]
        if trigger != "retry" or problems != self.outcome.last_problems:
            self.metrics.inc("killgate_config_reload_rejected_total")  # (not each retry)
        self.metrics.set("killgate_config_refused", 1)
        if problems != self.outcome.last_problems:  # log each distinct error once
            event(log, "config_rejected", logging.ERROR, trigger=trigger, path=str(self.path),
                  problems=problems, running=self.current().digest)
        self.outcome.last_problems = problems
        self.outcome.last_error = "; ".join(problems)
        if self.watch and not self._stop.is_set() and (self._retry is None
                                                       or self._retry.done()):
            self._retry = asyncio.get_running_loop().create_task(self._retry_refused(),
                                                                 name="config-retry")

    async def _retry_refused(self) -> None:
        """Read the refused file again, at doubling intervals, until it is no longer refused
        (applied, equal to the running one, or replaced by one the watcher reads)."""
        delay = self.retry_first
        while True:
            await asyncio.sleep(delay)
            if self.outcome.last_error is None or self._stop.is_set():
                return
            await self.reload("retry")
            delay = min(delay * 2, self.retry_max)

    def _cleared(self) -> None:
        self.outcome.last_error = None
        self.outcome.last_problems = []
        self.metrics.set("killgate_config_refused", 0)
