"""Reading a config file only once its writer is done with it (the reload's read).

A file replaced at once (a temp file renamed over it, a ConfigMap's `..data` swap) is
always whole. A file written in place (`cp`, some editors, a slow network filesystem)
can be read half-written, and a half cut after a complete route is a valid config that
drops routes. Timing alone cannot tell a writer's pause from its end, so `read_settled`
reads only a file that (1) no process on this machine holds open for writing (a Linux
read-lease probe, where the kernel allows one), and (2) kept one identity (device, inode,
size, mtime, ctime) across the read, at its path, and since the quiet debounce before it.
Otherwise it raises `ConfigUnsettled`, which is not an error: the caller reads again later.
Imports only the standard library and configfile.py; never applies anything.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from pathlib import Path

from gateway.configfile import read_config_stat
from gateway.errors import ConfigUnsettled

__all__ = ["Ident", "ident", "path_ident", "read_settled"]

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
