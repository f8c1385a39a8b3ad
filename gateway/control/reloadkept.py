"""The config changes whose audit event waits for the store, kept on disk while they wait
(`<snapshot_path>.reload-audits`; a `serve --workers N` worker's `.reload-audits.w<i>`), so
that a stop or a crash in a store outage does not lose them: a start queues them again
(control/reloadaudit.py `ReloadAudits.resume`).

Kept in memory only, a change whose event waited was abandoned by the process's stop (a
deploy, a node drain, a crash) and the trail never held a `config.reload` event for it. The
file is rewritten whole (fsynced, renamed) at each change of the list, removed once it is
empty, and signed with the state key (`Keyring.seal`): what is read back becomes an audit
event, so a file not signed by the fleet's key is moved aside, never written to the trail.
Each process writes (and removes) only its own file: the workers of a group shared one, each
rewrote it whole with its own list, and the first whose list emptied removed it, so a change
a sibling still held only in memory (one it alone made: its watcher saw a file its siblings'
debounce skipped, a refusal only it met) was lost by its crash or the group's SIGKILL, and
the trail never had its `config.reload` event. A start reads its own file and takes over
every other one beside it (a dead worker's, a slot the group no longer has, a lone
process's): each is renamed to a name of its own first (`.reload-audits.adopt.<pid>.<hex>`:
a live sibling's next write makes its file afresh, none is lost between the read and the
removal), and removed once this process's file holds its changes. A change queued again by
each worker is recorded once, by its claim (reloadclaim.py); one read twice here, once.
Blocking file work, tiny and rare (a reload's audit failing or ending, a start), on the
caller's thread.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

from gateway.domain.audit import AuditDraft
from gateway.log import event
from gateway.state.files import atomic_write, read_regular
from gateway.state.signing import Keyring

__all__ = ["KeptChanges", "kept_path", "slot_of"]

log = logging.getLogger("killgate")

#: the file's size read at most (64 changes, each a draft with its diff of the config)
LIMIT = 16 * 1024 * 1024
KIND = b"reload-audits"
#: the draft's fields kept (AuditDraft's, but the trace id of no call)
FIELDS = ("actor", "action", "target", "reason", "before", "after", "request_id", "source")


#: a worker's fleet name ends with its slot (serving.instance_id: `<host>-<pid>-<tag>-w<i>`)
SLOT = re.compile(r".*-(w[0-9]+)")


def slot_of(instance: str) -> str | None:
    """The worker slot (`w<i>`) in a fleet name; None: a lone process."""
    m = SLOT.fullmatch(instance)
    return m.group(1) if m else None


def kept_path(snapshot: Path | None, slot: str | None = None) -> Path | None:
    """The file of this process: `<snapshot>.reload-audits`, a worker's with `.<slot>`."""
    if snapshot is None:
        return None
    return snapshot.with_name(snapshot.name + ".reload-audits" + (f".{slot}" if slot else ""))


class KeptChanges:
    """The file of one instance (or group): `save` the changes waiting, `load` them back."""

    def __init__(self, path: Path | None, keys: Keyring) -> None:
        self.path = path
        self.keys = keys
        #: the files taken over by `load`, removed once this process's file holds them
        self._adopted: list[Path] = []
        self._saved = False  # (the last save wrote the file, or removed it)

    def save(self, changes: list[tuple[str, AuditDraft, float]]) -> None:
        """(claim key, draft, when the change was made here) of each change waiting, in
        order; none: the file removed."""
        if self.path is None:
            return
        self._saved = False
        try:
            if not changes:
                self.path.unlink(missing_ok=True)
            else:
                body = json.dumps([{"key": key, "since": since, "draft": {
                    f: getattr(draft, f) for f in FIELDS}} for key, draft, since in changes])
                atomic_write(self.path, self.keys.seal(KIND, body.encode()), 0o600)
            self._saved = True
        except (OSError, TypeError, ValueError) as exc:
            event(log, "config_reload_audit_not_kept", logging.WARNING, path=str(self.path),
                  error=str(exc), action="the changes whose audit waits are kept in memory "
                  "only: a stop before the store answers loses them")

    def load(self) -> list[tuple[str, AuditDraft, float]]:
        """The changes the processes before this one left waiting (oldest first, each key
        once): this process's file and the others beside it, taken over (module doc); a
        file that cannot be read or verified is moved aside (`.refused`), said in the log."""
        if self.path is None:
            return []
        files: list[list[tuple[str, AuditDraft, float]]] = []
        for origin in [self.path, *self._others()]:
            path = origin
            if origin != self.path:
                taken = self.path.with_name(
                    f"{self._base()}.adopt.{os.getpid()}.{secrets.token_hex(4)}")
                try:
                    os.replace(origin, taken)  # (a sibling taking it too: one of us does)
                except OSError:
                    continue
                path = taken
                self._adopted.append(taken)
            files.append(self._read(path, origin))
        # (in the order they were made: each file's own kept, the times between files; one
        # file after the other queued a sibling's older change after this one's newer)
        changes: dict[str, tuple[str, AuditDraft, float]] = {}
        for change in heapq.merge(*files, key=lambda c: c[2]):
            changes.setdefault(change[0], change)
        return list(changes.values())

    def settle(self) -> None:
        """The files `load` took over removed, once this process's file was written with
        their changes (else left for the next start)."""
        if self._saved:
            for path in self._adopted:
                with contextlib.suppress(OSError):
                    path.unlink()
            self._adopted = []

    def _base(self) -> str:
        """`<snapshot>.reload-audits`: the name every process's file starts with."""
        assert self.path is not None
        name = self.path.name
        return name if name.endswith(".reload-audits") else name.rsplit(".", 1)[0]

    def _others(self) -> list[Path]:
        """The files beside this one the other processes on the snapshot left."""
        assert self.path is not None
        base = self._base()
        try:
            names = sorted(os.listdir(self.path.parent))
        except OSError:
            return []
        return [self.path.with_name(n) for n in names if n != self.path.name and (
            n == base or (n.startswith(base + ".") and not n.endswith(".refused")))]

    def _read(self, path: Path, origin: Path) -> list[tuple[str, AuditDraft, float]]:
        """The changes in `path` (`origin`'s, taken over: named so when refused)."""
        if not path.exists():
            return []
        try:
            raw = read_regular(path, LIMIT)
            if raw is None:
                raise ValueError("not a regular file")
            body, _ = self.keys.open(KIND, raw)
            return [_change(item) for item in json.loads(body)]
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            event(log, "config_reload_audits_refused", logging.ERROR, path=str(origin),
                  error=str(exc), action="the config changes it names are in no audit "
                  "event; it is moved aside (.refused)")
            with contextlib.suppress(OSError):
                os.replace(path, origin.with_name(origin.name + ".refused"))
            if path in self._adopted:
                self._adopted.remove(path)
            return []


def _change(item: Any) -> tuple[str, AuditDraft, float]:
    key, since, draft = item["key"], item["since"], item["draft"]
    if not (isinstance(key, str) and isinstance(since, (int, float)) and isinstance(draft, dict)
            and all(isinstance(draft.get(f), str) for f in
                    ("actor", "action", "reason", "request_id", "source"))
            and isinstance(draft.get("target"), dict)):
        raise ValueError("a kept change is malformed")
    return key, AuditDraft(draft["actor"], draft["action"], draft["target"], draft["reason"],
                           draft.get("before"), draft.get("after"), draft["request_id"],
                           draft["source"]), float(since)
