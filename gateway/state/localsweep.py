"""The local store's leftovers, removed at a start: the temporary files a crash left between
a replace's write and its rename (files.written_aside: `.<name>.<pid>.<hex>.tmp`, beside the
file: the document, the idempotency records, a heartbeat, published counts), and the counts
folders of routes the config no longer names (`<path>.stats/<route>/`, with the route's
shadow's, `shadow~<route>` and `shadow~<route>~records`: control/shadowblobs.py). Nothing
else read or removed them: each crash mid-write left one more file, a route removed kept
its counts for good.

Only past STALE_AFTER (by mtime; the horizon of an unreadable counts file, localaux.py: a
live writer replaces its counts every few seconds, and writes a temporary file in
milliseconds), and a temporary file only while no process of the pid its name holds runs
(one hung mid-write is left alone), or one of that pid started after the file was last
written (the pid reused: a container's pid 1). A folder whose name is no route's
(`console:traffic`, traffic.py's own, which its view cleans) is left alone, as is any file
not named as killgate's writes name theirs. Logged once at info naming what was removed.
Blocking file work, at the store's open (in its thread); imports only gateway.log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from collections.abc import Collection
from pathlib import Path

from gateway.log import event

__all__ = ["STALE_AFTER", "sweep"]

log = logging.getLogger("killgate.state")

#: seconds since its last write past which a leftover is removed (localaux's
#: GARBLED_STATS_AFTER: three of the console's 5-minute windows)
STALE_AFTER = 900.0
#: files.written_aside's names: `.<name>.<pid>.<12 hex>.tmp`
TEMPORARY = re.compile(r"\..+\.([0-9]+)\.[0-9a-f]{12}\.tmp")
#: seconds a process's start, as /proc says it (whole seconds of boot time), may
#: seem later than a file it wrote
SLACK = 5.0
#: the most names the log line carries (the count is always said)
NAMED = 50


def sweep(path: Path, routes: Collection[str], now: float | None = None) -> list[Path]:
    """Remove the leftovers of the store at `path` (module doc); the files removed."""
    now = time.time() if now is None else now
    stats = path.with_name(path.name + ".stats")
    real = Path(os.path.realpath(path))  # (a link: the document is replaced beside its
    # target, files.write_target)
    folders: list[tuple[Path, str | None]] = [
        (path.parent, path.name), (path.with_name(path.name + ".instances"), None)]
    if real != path:
        folders.append((real.parent, real.name))
    removed: list[Path] = []
    for route in _listed(stats):
        folder = stats / route
        if not _is_folder(folder):  # (a link planted there: to a folder not ours)
            continue
        folders.append((folder, None))
        owner = _route_of(route)
        if owner is not None and owner not in routes:
            removed += _counts_of_removed_route(folder, now)
    for folder, of in folders:
        removed += _temporaries(folder, of, now)
    if removed:
        event(log, "local_store_leftovers_removed", count=len(removed),
              files=[str(f) for f in removed[:NAMED]],
              note=f"older than {STALE_AFTER:g} s: temporary files of crashed writes, "
                   "counts of routes no longer configured")
    return removed


def _route_of(folder: str) -> str | None:
    """The route a counts folder is of (None: no route's: ':' and '~' are in no route
    name)."""
    if folder.startswith("shadow~"):
        folder = folder[len("shadow~"):].split("~", 1)[0]
    return None if ":" in folder or "~" in folder or not folder else folder


def _is_folder(path: Path) -> bool:
    """Whether `path` is a folder itself (a link to one is not followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _listed(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _stale(path: Path, now: float) -> os.stat_result | None:
    """`path`'s stat when it is a regular file last written past STALE_AFTER."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or now - st.st_mtime <= STALE_AFTER:
        return None
    return st


def _unlink_unchanged(path: Path, st: os.stat_result) -> bool:
    """Remove `path` unless it was replaced or written since `st` (a writer came back)."""
    try:
        again = os.lstat(path)
        if (again.st_ino, again.st_mtime_ns) != (st.st_ino, st.st_mtime_ns):
            return False
        path.unlink()
        return True
    except OSError:  # (a sibling worker's sweep removed it first)
        return False


def _counts_of_removed_route(folder: Path, now: float) -> list[Path]:
    """The counts files of a route no longer configured, past STALE_AFTER; the folder too
    once empty (another config's instance writing there keeps it)."""
    removed = []
    for name in _listed(folder):
        f = folder / name
        if name.endswith(".json") and not name.startswith(".") \
                and (st := _stale(f, now)) is not None and _unlink_unchanged(f, st):
            removed.append(f)
    with contextlib.suppress(OSError):
        folder.rmdir()  # (not empty: left)
    return removed


def _temporaries(folder: Path, of: str | None, now: float) -> list[Path]:
    """The temporary files of crashed writes in `folder` (`of`: only those of the files
    whose names start with it: the store's folder may hold other programs' files)."""
    removed = []
    for name in _listed(folder):
        m = TEMPORARY.fullmatch(name)
        if m is None or (of is not None and not name.startswith(f".{of}")):
            continue
        f = folder / name
        st = _stale(f, now)
        if st is None or _runs(int(m.group(1)), st.st_mtime) or not _unlink_unchanged(f, st):
            continue
        removed.append(f)
    return removed


def _runs(pid: int, written: float) -> bool:
    """Whether a process of `pid` runs here that may have written a file last written at
    `written`: one started after it is not its writer (the pid reused: in a container
    killgate is pid 1, or a worker the same low pid, at every start, and a crash's
    temporaries were never removed)."""
    if pid <= 0:
        return True  # (no pid of a writer: never taken for a dead one)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # (none; a pid out of range: none either)
        return False
    except PermissionError:  # (another user's: it runs)
        pass
    started = started_at(pid)
    return started is None or started <= written + SLACK


def started_at(pid: int) -> float | None:
    """When the process `pid` started (seconds since the epoch, from Linux's /proc: its
    start in clock ticks after the boot); None: not known here."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            line = f.read()
        ticks = int(line[line.rindex(b")") + 2:].split()[19])  # (field 22, `starttime`)
        with open("/proc/stat", "rb") as f:
            boot = next(int(ln.split()[1]) for ln in f if ln.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
