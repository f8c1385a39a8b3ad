"""The supervisor's private run directory, and what a supervisor that died left behind.

`serve --workers N` keeps the workers' metric snapshots and the config bytes the group runs
(which may hold inline secrets) in a 0700 directory under TMPDIR, removed at exit. A
supervisor killed with SIGKILL cannot remove it: each directory names its supervisor's pid
(`supervisor`, with its pid namespace and the kernel's boot id), and the next supervisor of
the same user removes those whose supervisor is gone. Only directories of this user, never
followed through a link, and only of its own pid namespace and boot (a TMPDIR shared between
containers, or between hosts over NFS, names pids this one cannot see: every host's initial
namespace has the same inode); a directory without the file (an older killgate's) or whose
pid is alive stays.
"""

from __future__ import annotations

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


def make() -> str:
    """A new private run directory naming this process as its supervisor."""
    path = tempfile.mkdtemp(prefix=PREFIX)
    fd = os.open(os.path.join(path, OWNER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {_namespace()}\n")
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
            pid_text, namespace = f.read(128).split()
        pid = int(pid_text)
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
