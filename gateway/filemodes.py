"""File permission checks for what killgate trusts on disk: key files and state snapshots.

Owns the rule: a secret (an HMAC key) may be read by its owner and group at most, and
written by its owner only; a file whose content is trusted but public (a PEM public key, a
state snapshot) may be written by its owner only; either must belong to this user or
root. `problem` says what is wrong and how to fix it, or None. Pure apart from one
`stat`; foundations only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["problem"]


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
