"""The end of a background task: cancel it and wait until it has finished.

Owns the one way the control loops, the admin API's sweepers and the telemetry writers
stop their tasks (STYLE §1: cancelled and awaited on exit). The task's own cancellation
is the expected end; any other exception it ended with is raised to the caller (a loop
that died of a bug is not hidden at shutdown). Standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel"]


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
        with contextlib.suppress(asyncio.CancelledError):
            await t
