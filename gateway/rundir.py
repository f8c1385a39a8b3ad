"""The supervisor's private run directory, and what a supervisor that died left behind.

`serve --workers N` keeps the workers' metric snapshots and the config bytes the group runs
(which may hold inline secrets) in a 0700 directory under TMPDIR, removed at exit. A
supervisor killed with SIGKILL cannot remove it: each directory names its supervisor's pid
(`supervisor`, with its pid namespace and the kernel's boot id), the supervisor holds a lock
on that file while it runs, and the next supervisor of the same user removes those whose
supervisor is gone. Only directories of this user, never followed through a link, and only
of this boot: one whose lock nobody holds, whatever pid namespace it names (a container
restarted in the same pod keeps its /tmp but not its pids: each restart of a supervisor
that runs as pid 1 left one behind), or, from an older killgate (no lock), one of this pid
namespace whose pid is gone. A TMPDIR shared between hosts over NFS (another boot id: its
locks may be its own host's) and a directory without the file stay.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from gateway.log import event

__all__ = ["PREFIX", "make", "sweep"]

log = logging.getLogger("killgate")
PREFIX = "killgate-workers-"
OWNER = "supervisor"  # the file that holds the supervisor's pid
LOCKED = "locked"  # its third word: the supervisor holds a lock on it while it runs


def make() -> str:
    """A new private run directory naming this process as its supervisor, which holds a
    lock on its `supervisor` file until it ends, however it ends (the descriptor stays
    open for the process's life, and is not inherited by the workers)."""
    path = tempfile.mkdtemp(prefix=PREFIX)
    fd = os.open(os.path.join(path, OWNER), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (a new file: nobody else holds it)
    os.write(fd, f"{os.getpid()} {_namespace()} {LOCKED}\n".encode())
    return path


def _namespace() -> str:
    """Where this process's pids mean something: its pid namespace (the inode of
    /proc/self/ns/pid) and this boot of this host (/proc/sys/kernel/random/boot_id), as one
    word; "-" for what cannot be read."""
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = "-"
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read(64).strip() or "-"
    except OSError:
        boot = "-"
    return f"{ns}/{boot}"


def sweep(root: str | None = None) -> list[str]:
    """Remove the run directories under `root` (TMPDIR) whose supervisor is gone; their
    paths."""
    base = Path(root or tempfile.gettempdir())
    removed: list[str] = []
    try:
        entries = list(base.glob(PREFIX + "*"))
    except OSError:
        return removed
    for path in entries:
        if _abandoned(path):
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(str(path))
    if removed:
        event(log, "run_dirs_removed", paths=removed,
              why="their supervisor ended without removing them (killed with SIGKILL)")
    return removed


def _abandoned(path: Path) -> bool:
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            return False
        fd = os.open(path / OWNER, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            pid_text, namespace, *locked = f.read(128).split()
            pid = int(pid_text)
            if locked == [LOCKED.encode()] and _same_boot(namespace.decode("latin-1")):
                # the lock says it, whatever pid namespace the supervisor ran in (a
                # container restarted in the same pod: its /tmp stays, its pids do not)
                return _unlocked(f.fileno())
    except (OSError, ValueError):
        return False  # not ours, not a run directory, or one an older killgate made
    if pid <= 0 or namespace.decode("latin-1") != _namespace():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive (another user's process has that pid now)
        return False
    return False


def _same_boot(namespace: str) -> bool:
    """`namespace` (a `supervisor` file's) is of this boot of this host: its locks are this
    kernel's (a TMPDIR shared over NFS may not share locks between hosts)."""
    boot = namespace.partition("/")[2]
    return boot != "-" and boot == _namespace().partition("/")[2]


def _unlocked(fd: int) -> bool:
    """Nobody holds the lock of the open file `fd`: its supervisor has ended."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held (alive), or locks do not work here: keep it
    return True  # (released when `fd` closes)
