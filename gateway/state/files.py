"""Durable file writes of the local store and the state's side files (snapshot, audit
mirror): a file replaced whole (written, fsynced, renamed, its folder fsynced; the
write may come before, outside a lock, and the rename after), JSON lines
appended in one fsynced write, and a file's last line read from its end. Blocking calls;
they know nothing of what the bytes mean. A volatile file (`durable=False`: a heartbeat, a
published count) is replaced whole but never fsynced: it is rewritten every few seconds
by a live process, a power loss ends every process that wrote it, and fsyncs cost the
serving process a disk flush a second for nothing (RESULTS §61).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["LockBusy", "append_lines", "atomic_write", "end_line", "flock_within", "holds",
           "last_line", "lines_before", "put_in_place", "read_regular", "tail_lines", "write_target",
           "written_aside"]

#: how long a side file's writer waits for its `.lock` before saying so (and trying again)
LOCK_WAIT = 2.0


class LockBusy(OSError):
    """A side file's `.lock` stayed held (a sibling worker stopped or hung mid-write)."""


def flock_within(fd: int, name: Path, seconds: float = LOCK_WAIT,
                 give_up: Callable[[], bool] | None = None) -> None:
    """Take the exclusive flock of `fd` (the lock file `name`), waiting at most `seconds`:
    a sibling hung holding it (SIGSTOP, a debugger, a hung disk) must not hold the calling
    thread forever, its failure unseen, and a stop waiting on that thread (asyncio's
    executor shutdown joins it). Raises LockBusy then, or as soon as `give_up()` is true
    (the instance stopping: a heartbeat waiting then held the stop up to `seconds`)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if give_up is not None and give_up():
                raise LockBusy(f"{name} is held by another process; not waited for: "
                               "this instance is stopping") from None
            if time.monotonic() >= deadline:
                raise LockBusy(f"{name} is held by another process (a sibling worker "
                               f"stopped or hung mid-write?) for over {seconds:g} s; "
                               "retrying") from None
            time.sleep(0.02)


def read_regular(path: Path, limit: int) -> bytes | None:
    """At most `limit` bytes of the file at `path` (a link followed); None when it is no
    regular file: opening a FIFO for reading waits for a writer (a start, or every poll of
    a `local` store, hung there with nothing logged)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) < limit:  # (a short read is not the end of a file)
            more = os.read(fd, limit - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


def holds(path: Path, data: bytes) -> bool:
    """Whether the file at `path` (a link followed) holds exactly `data`: a replace that
    raised after its rename (the folder's fsync) did take its place."""
    try:
        return read_regular(path, len(data) + 1) == data
    except OSError:
        return False


def write_target(path: Path) -> Path:
    """Where a replace of the file at `path` (a snapshot, a local store's state) lands:
    the file a link there points to (say into a persistent volume, as it is read).
    Replaced, the link itself became a file beside it: every later write landed there,
    shown as written, and a restart read the file the link pointed to, never written. A
    link in a folder others may write to is refused (OSError): they could point it at any
    file of ours, overwritten."""
    if not path.is_symlink():
        return path
    folder = path.parent.stat()
    if folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OSError(errno.EPERM, f"{path} is a symbolic link in a folder other users may "
                                   "write to (they could point it at any file); name the "
                                   "file itself")
    return Path(os.path.realpath(path))


def atomic_write(path: Path, data: bytes, mode: int | None = None,
                 durable: bool = True) -> None:
    """Replace `path` with `data` (fsynced, renamed, folder fsynced); `mode` is set on
    the new file before it takes the name. `durable=False`: renamed whole, never fsynced
    (a volatile file, see the module doc)."""
    put_in_place(written_aside(path, data, mode, durable), path, durable)


def written_aside(path: Path, data: bytes, mode: int | None = None,
                  durable: bool = True) -> Path:
    """`data` written and fsynced to a new file next to `path` (its name: returned), to
    take `path`'s place with `put_in_place` (or be removed): the long part of a replace,
    done before a lock is taken for the rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own, created here (O_EXCL, no link followed): a predictable name in a
    # folder others may write was a link planted to a file of ours, overwritten
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666 if mode is None else mode)
    try:
        with open(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def put_in_place(tmp: Path, path: Path, durable: bool = True) -> None:
    """`tmp` (from `written_aside`) renamed to `path`, the folder fsynced (not when
    `durable` is False); removed if the rename fails."""
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def append_lines(path: Path, events: list[dict[str, Any]]) -> None:
    """Append events as JSON lines (one write, fsynced): the audit file, the mirror."""
    data = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for e in events).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def end_line(path: Path) -> None:
    """Append a newline to `path` unless it is absent, empty or ends with one (a write torn
    by a power loss: what is appended next starts a line of its own)."""
    try:
        with open(path, "r+b") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        return


def last_line(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            block = 4096
            while True:
                start = max(0, size - block)
                f.seek(start)
                data = f.read(size - start).rstrip(b"\n")
                if b"\n" in data or start == 0:
                    return data.rsplit(b"\n", 1)[-1] if data else None
                block *= 4
    except FileNotFoundError:
        return None


def tail_lines(path: Path, count: int) -> tuple[list[bytes], int, bool]:
    """The last `count` lines of a file as `bytes.splitlines(keepends=True)` splits it,
    the byte offset the first of them starts at, and whether lines come before it. Reads
    blocks from the end: the cost follows `count`, not the file's size (an audit trail
    only grows)."""
    with open(path, "rb") as f:
        return lines_before(f, count, f.seek(0, os.SEEK_END))


def lines_before(f: BinaryIO, count: int, end: int) -> tuple[list[bytes], int, bool]:
    """`tail_lines` of the open file `f`'s first `end` bytes (`end`: where a line starts,
    or the file's size)."""
    block = 64 * 1024
    while True:
        start = max(0, end - block)
        f.seek(start)
        lines = f.read(end - start).splitlines(keepends=True)
        if start > 0:
            lines = lines[1:]  # (it may begin inside a line)
        if start == 0 or len(lines) > count:
            break
        block *= 4
    page = lines[-count:] if count > 0 else []
    return page, end - sum(len(ln) for ln in page), len(lines) > len(page) or start > 0
