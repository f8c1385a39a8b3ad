"""The end of a background task: cancel it and wait until it has finished.

Owns the one way the control loops, the admin API's sweepers, the state sync and the
telemetry writers stop their tasks (STYLE §1: cancelled and awaited on exit). A task that
had already died of an error is logged at that point, never raised into the shutdown
(the rest of it still runs). And `unless_stopped`: a wait given up at a stop (a process's
start, a drill's first steps). Standard library and gateway.log only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol, TypeVar

from gateway.log import event

__all__ = ["Part", "cancel", "unless_stopped"]

log = logging.getLogger("killgate")
T = TypeVar("T")


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


async def unless_stopped(aw: Awaitable[T], stopped: asyncio.Event) -> T | None:
    """`aw`'s result (its error raised), or None when `stopped` is set before it finishes:
    it is then cancelled and awaited, whatever it raises on the way out dropped (it was
    given up). A stop never waits for what it stops: a SIGTERM while the start waits
    `state.start_timeout` for Redis, a Ctrl-C before a drill opens (up to --timeout for
    the admin API or the store). A cancel of the caller itself is never swallowed."""
    task = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None
