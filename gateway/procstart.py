"""Whether a process a file names is still the one that wrote it: this boot of the host, and
the process's start (clock ticks since the boot, /proc/<pid>/stat's 22nd field).

A pid alone says too little: a dead process that is still a zombie (not yet reaped by its
parent) answers `kill(pid, 0)`, a pid is reused by another process (another user's too),
and a host restarted hands the same pids out again. A file that names its writer's boot and
start is read as gone once that pid has no process, or one of another start (a reuse), or a
zombie, or once the host booted since. Where /proc cannot be read (not Linux), what can be
told is: the pid runs or not. Imports only the standard library.
"""

from __future__ import annotations

import functools
import os

__all__ = ["alive", "boot_id", "runs", "start_of"]


@functools.cache
def boot_id() -> str | None:
    """This boot of the host (None where it cannot be read); read once (a process lives
    within one boot)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read(64).strip() or None
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start) of process `pid` from /proc/<pid>/stat; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read(4096)
        fields = stat.rsplit(b")", 1)[1].split()
        return fields[0].decode("ascii", "replace"), int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def start_of(pid: int) -> int | None:
    """When process `pid` started (clock ticks since the boot); None where it cannot be
    read (no such process, or no /proc)."""
    found = _stat(pid)
    return None if found is None else found[1]


def runs(pid: int) -> bool:
    """Whether `pid` has a process (another user's too), a zombie included."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def alive(pid: int, boot: object = None, start: object = None) -> bool:
    """Whether the process that wrote a file naming `pid`, `boot` and `start` (both None
    for a file that names neither) still runs: the pid has a process that is not a zombie,
    of that start, on this boot of the host."""
    if not runs(pid):
        return False
    if isinstance(boot, str) and (now := boot_id()) is not None and now != boot:
        return False  # (the host booted since: the pid is another process's)
    found = _stat(pid)
    if found is None:
        return True  # (no /proc, or another user's hidden: the pid runs, as far as is known)
    state, began = found
    if state in ("Z", "X"):
        return False  # (dead, not yet reaped by its parent)
    return not (isinstance(start, int) and not isinstance(start, bool) and began != start)
