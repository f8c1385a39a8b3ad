"""Whether the process that wrote a break-glass use's file (glassjournal.py) still runs,
wherever it runs: a lock it holds for its life in the same folder, named by each file.

A pid says so only within one pid table: a snapshot folder on a volume two containers of
a host mount (each runs killgate as pid 1), or one that hosts share over NFS, holds files
of live processes whose pids do not run here, or are this process's own. A start took such
a file while its writer was committing the use: it counted it from the trail and the
writer counted it too (one use, two counts), or dropped it as not applied before the commit
landed (the writer killed next: no count anywhere). A lock (`flock`: one kernel's
containers share it, NFS carries it to its server, and it is let go when its process ends,
however it ends: SIGKILL, the OOM killer; a lost NFS client's once its lease runs out) says
so wherever the folder is: each process makes one (`.lock-<pid>-<random>`, locked before it
is renamed into place, so it is never seen free while its process runs), names it in each
file, and a start takes a file only once nobody holds its lock. Where locks cannot be made
(a volume without them), files name none and are judged by their pid as before. Imports
only the standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
from pathlib import Path

__all__ = ["NAME", "held", "mine", "sweep"]

#: a lock's name (what a file may name: never a path)
NAME = re.compile(r"\.lock-[0-9]{1,10}-[0-9a-f]{16}")
#: this process's locks, by folder: (descriptor kept open for the process's life, name)
_OWN: dict[Path, tuple[int, str]] = {}


def mine(folder: Path) -> str | None:
    """The name of this process's lock in `folder`, made and locked the first time (None:
    it cannot be made there)."""
    if folder in _OWN:
        return _OWN[folder][1]
    name = f".lock-{os.getpid()}-{secrets.token_hex(8)}"
    tmp = folder / f".tmp{name}"
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(tmp, folder / name)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    _OWN[folder] = (fd, name)
    return name


def held(folder: Path, name: object) -> bool | None:
    """Whether the lock `name` (as a file names it) in `folder` is held by a process that
    runs: True, False (no such lock, or nobody holds it), None where it cannot be told (no
    lock named, or locks cannot be taken there)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return None
    own = _OWN.get(folder)
    if own is not None and own[1] == name:
        return True  # (this process's: never opened again here, which on NFS, where a
        #             flock is a process's POSIX lock, would let it go at the close)
    try:
        fd = os.open(folder / name, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def sweep(folder: Path) -> None:
    """The locks of processes that ended, removed (each held by nobody; one that is held
    while this looks is left)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if NAME.fullmatch(name) and held(folder, name) is False:
            with contextlib.suppress(OSError):
                os.unlink(folder / name)
