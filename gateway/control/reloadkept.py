"""The config changes whose audit event waits for the store, kept on disk while they wait
(`<snapshot_path>.reload-audits`), so that a stop or a crash in a store outage does not lose
them: a start on that file queues them again (control/reloadaudit.py `ReloadAudits.resume`).

Kept in memory only, a change whose event waited was abandoned by the process's stop (a
deploy, a node drain, a crash) and the trail never held a `config.reload` event for it. The
file is rewritten whole (fsynced, renamed) at each change of the list, removed once it is
empty, and signed with the state key (`Keyring.seal`): what is read back becomes an audit
event, so a file not signed by the fleet's key is moved aside, never written to the trail.
The workers of a `serve --workers N` group share it (they make the same changes: a change
queued again by each is recorded once, by its claim). Blocking file work, tiny and rare (a
reload's audit failing or ending), on the caller's thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.domain.audit import AuditDraft
from gateway.log import event
from gateway.state.files import atomic_write, read_regular
from gateway.state.signing import Keyring

__all__ = ["KeptChanges", "kept_path"]

log = logging.getLogger("killgate")

#: the file's size read at most (64 changes, each a draft with its diff of the config)
LIMIT = 16 * 1024 * 1024
KIND = b"reload-audits"
#: the draft's fields kept (AuditDraft's, but the trace id of no call)
FIELDS = ("actor", "action", "target", "reason", "before", "after", "request_id", "source")


def kept_path(snapshot: Path | None) -> Path | None:
    return None if snapshot is None else snapshot.with_name(snapshot.name + ".reload-audits")


class KeptChanges:
    """The file of one instance (or group): `save` the changes waiting, `load` them back."""

    def __init__(self, path: Path | None, keys: Keyring) -> None:
        self.path = path
        self.keys = keys

    def save(self, changes: list[tuple[str, AuditDraft, float]]) -> None:
        """(claim key, draft, when the change was made here) of each change waiting, in
        order; none: the file removed."""
        if self.path is None:
            return
        try:
            if not changes:
                self.path.unlink(missing_ok=True)
                return
            body = json.dumps([{"key": key, "since": since, "draft": {
                f: getattr(draft, f) for f in FIELDS}} for key, draft, since in changes])
            atomic_write(self.path, self.keys.seal(KIND, body.encode()), 0o600)
        except (OSError, TypeError, ValueError) as exc:
            event(log, "config_reload_audit_not_kept", logging.WARNING, path=str(self.path),
                  error=str(exc), action="the changes whose audit waits are kept in memory "
                  "only: a stop before the store answers loses them")

    def load(self) -> list[tuple[str, AuditDraft, float]]:
        """The changes a process before this one left waiting (oldest first); a file that
        cannot be read or verified is moved aside (`.refused`) and said in the log."""
        if self.path is None or not self.path.exists():
            return []
        try:
            raw = read_regular(self.path, LIMIT)
            if raw is None:
                raise ValueError("not a regular file")
            body, _ = self.keys.open(KIND, raw)
            return [_change(item) for item in json.loads(body)]
        except (OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            event(log, "config_reload_audits_refused", logging.ERROR, path=str(self.path),
                  error=str(exc), action="the config changes it names are in no audit "
                  "event; it is moved aside (.refused)")
            with contextlib.suppress(OSError):
                os.replace(self.path, self.path.with_name(self.path.name + ".refused"))
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
