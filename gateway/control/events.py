"""Alert webhooks: POST a JSON event, retried with backoff, never blocking traffic.

Owns the aiohttp client session used for alerts (the third place, after upstream and
probes, allowed to make outbound HTTP calls). Deliveries run as background tasks; a
failed delivery is logged and counted, never raised.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["Alerts"]

log = logging.getLogger("killgate.alerts")


class Alerts:
    def __init__(self, metrics: Metrics, attempts: int = 5, backoff: float = 0.5,
                 timeout: float = 5.0) -> None:
        self.metrics = metrics
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, url: str, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._deliver(url, payload), name="alert")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, url: str, payload: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"user-agent": "killgate-alerts/1"})
        for attempt in range(self.attempts):
            try:
                async with self._session.post(url, json=payload) as r:
                    if 200 <= r.status < 300:
                        self.metrics.inc("killgate_event_deliveries_total", ("delivered",),
                                         label_names=("result",))
                        return
                    why = f"HTTP {r.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = type(exc).__name__
            event(log, "alert_retry", logging.WARNING, url=url, attempt=attempt + 1, error=why)
            await asyncio.sleep(self.backoff * 2 ** attempt)
        self.metrics.inc("killgate_event_deliveries_total", ("failed",), label_names=("result",))
        event(log, "alert_failed", logging.ERROR, url=url, attempts=self.attempts)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
