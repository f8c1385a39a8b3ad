"""Volatile files of the local store a power loss left unreadable (RESULTS §61): a
heartbeat or published counts are renamed into place whole but never fsynced, so after a
power loss one can be empty, cut short or full of NULs. Its writer's name holds a pid that
never runs again, so nothing writes it again: such a file is treated as absent, warned
about once per process (naming it), and removed by its reader once its mtime is past the
horizon a stale file of its kind is removed at. Owns `Garbled`; imports only gateway.log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from gateway.log import event

__all__ = ["Garbled", "older_than"]

log = logging.getLogger("killgate.state")


class Garbled:
    """The unreadable volatile files seen by one store (reads run in threads: locked)."""

    def __init__(self) -> None:
        self._warned: set[Path] = set()
        self._lock = threading.Lock()

    def seen(self, path: Path, why: str) -> None:
        """`path` could not be read as what its writer writes: warned about the first time."""
        with self._lock:
            if path in self._warned:
                return
            self._warned.add(path)
        event(log, "volatile_file_unreadable", logging.WARNING, file=str(path), error=why,
              note="treated as absent (a power loss's leftover?); removed once older than "
                   "a stale file of its kind")

    def gone(self, path: Path) -> None:
        with self._lock:
            self._warned.discard(path)


def older_than(path: Path, horizon: float, now: float | None = None) -> bool:
    """Whether `path` was last written more than `horizon` s ago (False: unknown)."""
    try:
        return (time.time() if now is None else now) - os.stat(path).st_mtime > horizon
    except OSError:
        return False
