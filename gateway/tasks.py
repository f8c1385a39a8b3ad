"""The end of a background task: cancel it and wait until it has finished.

Owns the one way the control loops, the admin API's sweepers, the state sync and the
telemetry writers stop their tasks (STYLE §1: cancelled and awaited on exit). A task that
had already died of an error is logged at that point, never raised into the shutdown
(the rest of it still runs). Standard library and gateway.log only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from gateway.log import event

__all__ = ["Part", "cancel"]

log = logging.getLogger("killgate")


class Part(Protocol):
    """A part with a lifetime of its own (a control loop, a watcher): started, then
    stopped (its tasks cancelled and awaited)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def cancel(*tasks: asyncio.Task[Any] | Iterable[asyncio.Task[Any]] | None) -> None:
    """Cancel every task given (None is skipped), then wait for each to finish."""
    flat: list[asyncio.Task[Any]] = []
    for t in tasks:
        if t is None:
            continue
        if isinstance(t, asyncio.Task):
            flat.append(t)
        else:
            flat.extend(t)
    for t in flat:
        t.cancel()
    for t in flat:
        try:
            await t
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - a loop that died: said, not raised
            event(log, "task_failed", logging.ERROR, exc=exc, task=t.get_name(),
                  error=repr(exc))
