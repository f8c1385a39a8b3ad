"""Reading a config file only once its writer is done with it (the reload's read).

A file replaced at once (a temp file renamed over it, a ConfigMap's `..data` swap) is
always whole. A file written in place (`cp`, some editors, a slow network filesystem)
can be read half-written, and a half cut after a complete route is a valid config that
drops routes. Timing alone cannot tell a writer's pause from its end, so `read_settled`
reads only a file that (1) no process on this machine holds open for writing (a Linux
read-lease probe, where the kernel allows one), and (2) kept one identity (device, inode,
size, mtime, ctime) across the read, at its path, and since the quiet debounce before it.
Otherwise it raises `ConfigUnsettled`, which is not an error: the caller reads again later.
`settled_at_start` is the first load's read (serve, each worker): it waits a little for the
writer instead. Imports only the standard library, log.py and configfile.py; never applies
anything.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import time
from pathlib import Path

from gateway.configfile import read_config_stat
from gateway.errors import ConfigError, ConfigUnsettled
from gateway.log import event

__all__ = ["Ident", "ident", "path_ident", "read_settled", "settled_at_start", "warn_unsettled"]

log = logging.getLogger("killgate.config")

#: how long a first load waits for a writer before it reads the file as it is
START_WAIT_S = 5.0

Ident = tuple[int, int, int, int, int]

# Linux only (fcntl(2)); elsewhere the probe cannot tell and the identities decide alone.
_SETLEASE: int | None = getattr(fcntl, "F_SETLEASE", None)
_SETSIG: int | None = getattr(fcntl, "F_SETSIG", None)


def ident(st: os.stat_result) -> Ident:
    """What changes when a file is replaced (dev, inode) or written (size, mtime, ctime)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def path_ident(path: str | Path) -> Ident | None:
    """The identity of the file `path` names now (links followed); None if there is none."""
    try:
        return ident(os.stat(path))
    except OSError:
        return None


def _refuse_if_being_written(fd: int) -> None:
    """Raise ConfigUnsettled when a process holds the file open for writing. A read lease is
    granted only when nobody does (fcntl(2), EAGAIN otherwise); it is released at once.
    A writer opening the file in that instant waits for the release (microseconds) and
    the kernel signals this process: SIGURG, ignored by default, instead of SIGIO, which
    would end it. Where leases are refused (a file of another owner, as a ConfigMap's is
    to a non-root gateway; NFS; leases disabled), the probe says nothing."""
    if _SETLEASE is None or _SETSIG is None:
        return
    try:
        fcntl.fcntl(fd, _SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            raise ConfigUnsettled("open for writing by another process") from None
        return
    fcntl.fcntl(fd, _SETLEASE, fcntl.F_UNLCK)


def read_settled(path: str | Path, quiet: Ident | None) -> tuple[bytes, Ident]:
    """The file's bytes and identity, read while nobody wrote it. `quiet`: the identity
    the caller saw stay the same for its debounce; the file read must still be that one.
    Raises ConfigUnsettled (read again later) or ConfigError (cannot be read)."""
    data, before, after = read_config_stat(path, _refuse_if_being_written)
    seen = ident(before)
    if ident(after) != seen:
        raise ConfigUnsettled("changed while it was read")
    if path_ident(path) != seen:
        raise ConfigUnsettled("replaced while it was read")
    if quiet != seen:
        raise ConfigUnsettled("changed after it settled")
    return data, seen


def settled_at_start(path: str | Path,
                     wait: float = START_WAIT_S) -> tuple[bytes | None, str | None]:
    """The file's bytes for a first load, read once no process writes it (as `read_settled`,
    retried every 50 ms for up to `wait` seconds), and None; or None and why it never
    settled: the caller then reads it as it is (a start is not held up for ever by a
    writer that keeps the file open) and says so with `warn_unsettled` once its logging
    is set up. (None, None): it cannot be read; the caller's own read says why."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return read_settled(path, path_ident(path))[0], None
        except ConfigError:
            return None, None
        except ConfigUnsettled as exc:
            if time.monotonic() >= deadline:
                return None, exc.reason
        time.sleep(0.05)


def warn_unsettled(path: str | Path, why: str | None) -> None:
    """The log line of a first load that read a file that never settled (`why`)."""
    if why is not None:
        event(log, "config_not_settled", logging.WARNING, path=str(path), reason=why,
              waited_s=START_WAIT_S,
              action="read as it was at start: if another process was still writing it, "
                     "check the routes (`killgate status`) and reload (SIGHUP) once it is "
                     "written")
