"""The break-glass uses counted at a start from the files of processes that died
(glassjournal.py), kept so that one use is counted once across restarts.

A file names an audit id; a start counted the use when the trail holds a genuine
break-glass event of that id, and removed the file. Re-created (a copy kept, a backup of
the folder restored, a script), the same file was counted again at each start: one use,
many counts, and an alert on `killgate_break_glass_total` rang for uses never made. Now the
ids counted are kept in `counted.json` in the same folder (the newest MAX_KEPT, written whole
to a temporary file, synced, then renamed over it; read and written under a lock, so
sibling workers starting at once lose none): an id there is not counted again. One who can
write the folder (the gateway's user) could remove this record as well as re-create the
file, and the use was counted once more at each start. So a use counted at a start is also
recorded in the trail, after its count: an audit event `breakglass.counted` naming it
(`counted`: its audit id; `draft`), which a start reads with the use's own event (newer than
it, so within the same read) and, genuine (its hash and MAC under an audit key), takes as
counted (`marked`): only a holder of the audit key writes one, and deleting it breaks the
trail (`audit verify`). The file stays the record when the store cannot take the event.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.domain.audit import AuditDraft, genuine

__all__ = ["MARK", "MAX_KEPT", "claim", "draft", "marked"]

#: the audit action that records a use counted at a start
MARK = "breakglass.counted"

#: the most ids kept (the newest; a start looks for no more than MAX_SCAN events)
MAX_KEPT = 4096
NAME, LOCK = "counted.json", ".counted.lock"


def claim(folder: Path, ids: list[str]) -> tuple[list[str], str | None]:
    """Of `ids` (in order), those not counted before, now kept as counted; and why they
    could not be kept (None: kept). Not kept, they are still returned: counting a use
    twice after a failed write beats never counting it."""
    try:
        with open(folder / LOCK, "a", encoding="ascii") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                before = _read(folder / NAME)
                seen = set(before)
                new = [i for i in dict.fromkeys(ids) if i not in seen]
                if new:
                    _write(folder / NAME, (before + new)[-MAX_KEPT:])
                return new, None
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except OSError as exc:
        seen = set(_read(folder / NAME))
        return [i for i in dict.fromkeys(ids) if i not in seen], str(exc)


def draft(eid: str, use: dict[str, Any]) -> AuditDraft:
    """The audit event that records the use of audit id `eid` counted at a start."""
    return AuditDraft(
        "killgate/auto", MARK, {"audit_id": eid, "action": use["action"]},
        "a break-glass use whose process ended before counting it, counted at a start "
        "from the audit trail (not to be counted again)", extra={"counted": eid})


def marked(ev: dict[str, Any], ids: set[str], keys: Mapping[str, bytes] | None) -> str | None:
    """The audit id (one of `ids`) that `ev` records as counted, or None: `ev` is no
    genuine `breakglass.counted` event (`keys`: the audit keys; None: the trail unkeyed)."""
    eid = ev.get("counted")
    if ev.get("action") != MARK or not isinstance(eid, str) or eid not in ids:
        return None
    return eid if keys is None or genuine(ev, keys) else None


def _read(path: Path) -> list[str]:
    try:
        doc = json.loads(path.read_bytes()[:1 << 20])
    except (OSError, ValueError, RecursionError):
        return []
    ids = doc.get("counted") if isinstance(doc, dict) else None
    return [i for i in ids if isinstance(i, str)][-MAX_KEPT:] if isinstance(ids, list) else []


def _write(path: Path, ids: list[str]) -> None:
    tmp = path.with_name(f".{NAME}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"counted": ids}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # (the rename itself durable)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
