"""Which build of killgate this process runs: a digest of the package's own files, read
once. `__version__` names a release and stays the same between releases (0.1.0 for every
commit so far), so it cannot tell an upgraded instance from one that is not; two builds
whose code differs in one byte get different digests, and the same code installed on two
hosts the same one. Imports only the standard library.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

__all__ = ["build_id", "said_build"]

_ROOT = Path(__file__).resolve().parent
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo")
#: a build as another instance publishes it with its heartbeat (`build`): hex digits
_SAID = re.compile(r"[0-9a-f]{1,64}")


@functools.cache
def build_id() -> str:
    """The first 12 hex digits of a sha256 over the package's files (each one's path
    relative to the package and its bytes, in path order; compiled caches left out, a
    mypyc-built module's `.so` included), or "unknown" when a file cannot be read."""
    h = hashlib.sha256()
    try:
        files = []
        for folder, dirs, names in os.walk(_ROOT):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
            files += [Path(folder, n) for n in names if not n.endswith(_SKIP_SUFFIXES)]
        for f in sorted(files, key=lambda p: p.relative_to(_ROOT).as_posix()):
            rel = f.relative_to(_ROOT).as_posix().encode()
            data = f.read_bytes()
            h.update(b"%d:%s%d:" % (len(rel), rel, len(data)))
            h.update(data)
    except OSError:
        return "unknown"
    return h.hexdigest()[:12]


def said_build(value: object) -> str | None:
    """The build another instance published with its heartbeat, or None when it says none
    a reader can show (a version before it published one, "unknown", anything not hex:
    the heartbeat's other fields are read as ever)."""
    return value if isinstance(value, str) and _SAID.fullmatch(value) else None
