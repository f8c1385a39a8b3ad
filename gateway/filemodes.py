"""File permission checks for what killgate trusts on disk: key files and state snapshots.

Owns the rule: a secret (an HMAC key) may be read by its owner and group at most, and
written by its owner only; a file whose content is trusted but public (a PEM public key, a
state snapshot) may be written by its owner only; either must belong to this user or
root. `problem` says what is wrong and how to fix it, or None. `read_key_file` reads
such a file: a regular one (a link to one is followed) of at most MAX_KEY_FILE bytes.
Foundations only.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from pathlib import Path

__all__ = ["MAX_KEY_FILE", "config_problem", "key_env", "problem", "read_key_file"]

#: a key file is a secret of tens of bytes or a PEM public key of a few KiB
MAX_KEY_FILE = 64 << 10


def key_env(name: str) -> str:
    """The key in the environment variable `name` ('' when unset); ValueError when it is
    not UTF-8 text (raw random bytes: `.encode()` of their surrogates raised a
    UnicodeEncodeError that came out of `serve` as a traceback)."""
    value = os.environ.get(name, "")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"the environment variable {name} holds bytes that are not UTF-8 "
                         "text; set it to a key such as `openssl rand -hex 32` prints") from None
    return value


def read_key_file(path: Path) -> bytes:
    """The bytes of the key file at `path`; OSError (with a strerror saying what is
    wrong) unless it is a regular file of at most MAX_KEY_FILE bytes. A config naming
    /dev/zero was read until memory ran out, a FIFO blocked the reader (`killgate check`,
    `serve`'s start) for ever."""
    # (O_NONBLOCK: opening a FIFO waits for a writer otherwise; a regular file ignores it)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a device, FIFO, socket or "
                                        "folder is never read as a key)", str(path))
        data = b""
        while len(data) <= MAX_KEY_FILE:  # (a short read is not the end of a file)
            more = os.read(fd, MAX_KEY_FILE + 1 - len(data))
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise OSError(errno.EFBIG, f"larger than {MAX_KEY_FILE} bytes (not a key file)",
                      str(path))
    return data


def problem(path: Path, secret: bool) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None  # (the caller says what a missing file means)
    except OSError as exc:
        return f"cannot check {path}: {exc.strerror or exc}"
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.getuid(), 0):
        return (f"{path} belongs to another user (uid {st.st_uid}): it could be replaced "
                "behind killgate's back; chown it to the user killgate runs as")
    loose = stat.S_IWGRP | stat.S_IWOTH | (stat.S_IROTH if secret else 0)
    if mode & loose:
        what = "read or written" if secret and mode & stat.S_IROTH else "written"
        fix = "chmod 600" if secret else "chmod go-w"
        return (f"{path} may be {what} by other users (mode {mode:04o}); `{fix}` it"
                + (" (on Kubernetes: defaultMode: 0400 on the secret volume)" if secret
                   else ""))
    return None


def config_problem(path: Path, st: os.stat_result,
                   folder: os.stat_result | None = None) -> str | None:
    """Why the config file (`st`: the fstat of the open file, a link followed, as a
    ConfigMap's is) cannot be trusted: anyone who may write it may point the key settings,
    the state store and the routes elsewhere. As ssh does for its own files: writable by
    others is refused, and by its group unless that group is its owner's alone (a user
    private group: umask 002 makes editors write 0664, mkdir 0775). `folder`: the stat of the folder
    that holds the file itself (links resolved: a ConfigMap's timestamped folder): if others
    may write there they may replace the file, so it is refused, unless the folder is sticky
    (/tmp) and the file is this user's or root's. The owner is not checked otherwise: a
    config deployed by another account (an ops user's 0644 file) is common."""
    mode = stat.S_IMODE(st.st_mode)
    if _writable_by_others(st):
        return (f"{path} may be written by other users (mode {mode:04o}): whoever can write "
                f"it can point the gateway's keys, state store and routes elsewhere; "
                f"`chmod go-w {path}`")
    if folder is not None and _writable_by_others(folder):
        sticky = folder.st_mode & stat.S_ISVTX
        if not sticky or st.st_uid not in (os.getuid(), 0):
            return (f"{path} is in a folder other users may write to (mode "
                    f"{stat.S_IMODE(folder.st_mode):04o}): they could replace the file; move "
                    "it to a folder only its owner may write to, or `chmod go-w` the folder")
    return None


def _writable_by_others(st: os.stat_result) -> bool:
    mode = stat.S_IMODE(st.st_mode)
    return bool(mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _private_group(st)))


def _private_group(st: os.stat_result) -> bool:
    """Whether the file's group is its owner's private one: the owner's primary group,
    named as the owner, with no other member (a shared primary group such as `users`, whose
    members need not be listed, never counts)."""
    try:
        owner = pwd.getpwuid(st.st_uid)
        group = grp.getgrgid(st.st_gid)
    except KeyError:
        return False
    return (owner.pw_gid == st.st_gid and group.gr_name == owner.pw_name
            and all(m == owner.pw_name for m in group.gr_mem))
