"""Emergency local kills: the journal of kills taken while the state store could not commit.

Owns `<state.snapshot_path>.local-kills`: the kills an operator took on this instance
(`POST /v1/kill?local=1`) while the store could not commit a kill, not yet in the store.
Kills only: the journal never holds an unkill or a weight. Each entry is a kill flag with
who, why, when, the instance that took it and the generation it held (`based_on`), and,
for an alert's kill, the alert as evidence (bounded: `MAX_EVIDENCE`), signed with the rest,
so its merged audit event carries what a kill through the store's does.

The file is signed like the snapshot (kind `localkills`, bound to the deployment: the
redis prefix). A file that does not verify (another key, edited, another deployment's)
is refused whole and said loudly (`local_kills_refused`, `/v1/status` local_kills.refused):
its entries would be committed to the store as audited kills in someone's name, so a
forgery is never enforced nor merged; the next local kill moves it aside
(`<path>.refused`). The workers of `serve --workers N` share the file (flock on
`<path>.lock`): each reads it again when it changes (`changed`, a stat), so a local kill
one worker took is enforced by its siblings within `poll_interval`. Blocking calls: the
caller runs them in a thread.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gateway.domain.statedoc import KillFlag, kill_key
from gateway.log import event
from gateway.state.files import atomic_write, flock_within, read_regular
from gateway.state.localevidence import MAX_EVIDENCE, bounded, size
from gateway.state.signing import Keyring, Unverified

__all__ = ["LocalEntry", "LocalKills", "journal_path"]

log = logging.getLogger("killgate.state")

FORMAT = 1
MAX_BYTES = 1 << 20  # far more than any incident's kills; a bigger file is refused unread
MAX_ENTRIES = 256
#: merged ids kept in the file: more than a whole journal, so a sibling that reads the file
#: only after a merge of every entry still tells each merged one from one removed by hand
MAX_MERGED = 2 * MAX_ENTRIES


def journal_path(snapshot: Path | None) -> Path | None:
    return None if snapshot is None else snapshot.with_name(snapshot.name + ".local-kills")


@dataclass(frozen=True, slots=True)
class LocalEntry:
    """One local kill, as journaled."""

    id: str
    scope: str
    route: str | None
    version: str | None
    actor: str
    reason: str
    time: str
    instance: str
    based_on: int  # the store generation the instance held when it took the kill
    abort_inflight: bool = True
    #: why it was taken, as its audit event says it (an alert's labels, generatorURL...)
    evidence: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return kill_key(self.scope, self.route, self.version)

    def flag(self) -> KillFlag:
        """The kill flag this instance enforces (generation 0: not in any document)."""
        return KillFlag(self.scope, self.route, self.version,  # type: ignore[arg-type]
                        self.actor, self.reason, self.time, 0, self.abort_inflight,
                        f"local:{self.id}")

    def public(self) -> dict[str, Any]:
        return {"id": f"local:{self.id}", "kill": self.key, "actor": self.actor,
                "reason": self.reason, "time": self.time, "instance": self.instance,
                "based_on": self.based_on, "abort_inflight": self.abort_inflight}

    def plain(self) -> dict[str, Any]:
        # (no `evidence` key without one: a journal an older release reads stays its own)
        return {"id": self.id, "scope": self.scope, "route": self.route,
                "version": self.version, "actor": self.actor, "reason": self.reason,
                "time": self.time, "instance": self.instance, "based_on": self.based_on,
                "abort_inflight": self.abort_inflight,
                **({} if self.evidence is None else {"evidence": self.evidence})}

    @staticmethod
    def new(scope: str, route: str | None, version: str | None, actor: str, reason: str,
            now: str, instance: str, based_on: int, abort_inflight: bool,
            evidence: dict[str, Any] | None = None) -> LocalEntry:
        return LocalEntry(secrets.token_hex(8), scope, route, version, actor, reason, now,
                          instance, based_on, abort_inflight, bounded(evidence))


def _entry(d: Any) -> LocalEntry:
    if not isinstance(d, dict) or set(d) - {"evidence"} != set(LocalEntry.__slots__) - {
            "evidence"}:
        raise ValueError("an entry is not a local kill")
    e = LocalEntry(**d)
    if e.evidence is not None and (not isinstance(e.evidence, dict)
                                   or size(e.evidence) > MAX_EVIDENCE):
        raise ValueError("an entry's evidence is not a bounded object")
    if e.scope not in ("global", "route", "version") or not isinstance(e.based_on, int) \
            or not all(isinstance(getattr(e, f), str)
                       for f in ("id", "actor", "reason", "time", "instance")):
        raise ValueError("an entry is not a local kill")
    return e


class LocalKills:
    """The journal file; `entries` is what this process read or wrote last."""

    def __init__(self, path: Path | None, keys: Keyring) -> None:
        self.path = path
        self.deployment = keys.context.decode()
        self.keys = keys.bound("localkills\x00" + self.deployment)
        self.entries: tuple[LocalEntry, ...] = ()
        #: why the file was refused (None: it was not, or there is none)
        self.refused: str | None = None
        #: the newest entries merged into the store (MAX_MERGED), as the file says: id ->
        #: the generation that holds it (an entry gone for that reason, not by hand)
        self.merged: dict[str, int] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime_ns) read
        #: the file read last verified with the previous key only (a rotation's step 2):
        #: re-signed with the current one (`reseal`) before step 3 refuses it
        self.previous_key = False
        #: why the file could not be read last (None: it could): not a verdict on it
        self.unreadable: str | None = None

    # ------------------------------------------------------------------ reading

    def changed(self) -> bool:
        """Whether the file differs from the one read last (a sibling worker wrote it)."""
        return self._stat() != self._seen

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> tuple[LocalEntry, ...]:
        """The journal, verified (refused whole, said once per file: empty)."""
        seen = self._stat()
        if seen is None:
            self._seen, self.entries, self.refused = None, (), None
            self.previous_key = False
            return ()
        try:
            raw = read_regular(self.path, MAX_BYTES + 1)  # type: ignore[arg-type]
        except FileNotFoundError:  # (removed by hand between the stat and the open)
            self._seen, self.entries, self.refused = None, (), None
            self.previous_key = False
            return ()
        except OSError as exc:
            # could not be read now (out of file descriptors, an I/O error): no verdict on
            # its content, so what was enforced stays enforced, and it is read again at the
            # next poll (`_seen` kept); never refused (a refused file is moved aside)
            if self.unreadable != str(exc):
                event(log, "local_kills_unreadable", logging.ERROR, path=str(self.path),
                      error=str(exc), consequence="the local kills read before stay "
                      "enforced; read again at the next poll")
            self.unreadable = str(exc)
            return self.entries
        self.unreadable = None
        try:
            self.entries = self._decode(raw)
            self.refused = None
        except (Unverified, ValueError, TypeError) as exc:
            why = f"{self.path}: {exc}"
            if why != self.refused or seen != self._seen:
                event(log, "local_kills_refused", logging.ERROR, path=str(self.path),
                      error=str(exc), consequence="none of its kills is enforced or merged "
                      "into the store (signed with another key, edited, or another "
                      "deployment's); the next local kill moves it aside")
            self.entries, self.refused, self.previous_key = (), why, False
        self._seen = seen
        return self.entries

    def _decode(self, raw: bytes | None) -> tuple[LocalEntry, ...]:
        if raw is None:
            raise ValueError("not a regular file")
        if len(raw) > MAX_BYTES:
            raise ValueError(f"over {MAX_BYTES} bytes (not read)")
        body, which = self.keys.open(b"localkills", raw)
        self.previous_key = which == "previous"
        d = json.loads(body)
        if not isinstance(d, dict) or d.get("format") != FORMAT \
                or d.get("deployment") != self.deployment \
                or not isinstance(d.get("kills"), list):
            raise ValueError("not this deployment's local kill journal")
        merged = d.get("merged", [])
        if not isinstance(merged, list) or not all(
                isinstance(m, list) and len(m) == 2 and isinstance(m[0], str)
                and isinstance(m[1], int) for m in merged):
            raise ValueError("not this deployment's local kill journal")
        self.merged = dict(merged[-MAX_MERGED:])
        return tuple(_entry(e) for e in d["kills"])

    # ------------------------------------------------------------------ writing

    def _locked(self, edit: Any, merged: dict[str, int] | None = None,
                force: bool = False) -> tuple[LocalEntry, ...]:
        """Read the file under its lock, `edit` the entries, write them back."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lockname = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lockname, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "r+b") as lock:
            flock_within(lock.fileno(), lockname)
            self.merge_lock_file()
            self.read()
            if self.unreadable is not None:  # (writing what this process knew would drop
                raise OSError(f"{self.path} cannot be read: {self.unreadable}")  # siblings')
            if self.refused is not None and os.path.exists(self.path):
                os.replace(self.path, self.path.with_name(self.path.name + ".refused"))
                event(log, "local_kills_moved_aside", logging.WARNING, path=str(self.path),
                      to=str(self.path) + ".refused")
            entries = tuple(edit(self.entries))
            if entries == self.entries and self.refused is None and not merged \
                    and not (force and self.previous_key):
                return entries
            body = json.dumps({"format": FORMAT, "deployment": self.deployment,
                               "kills": [e.plain() for e in entries],
                               "merged": [[k, g] for k, g in {**self.merged, **(merged or {})}.items()][
                                   -MAX_MERGED:]}).encode()
            sealed = self.keys.seal(b"localkills", body)
            if len(sealed) > MAX_BYTES:  # (written, it would be refused whole when read)
                raise ValueError(f"the journal would be over {MAX_BYTES} bytes")
            atomic_write(self.path, sealed, 0o600)
            self.read()
            return self.entries

    def add(self, entry: LocalEntry) -> LocalEntry:
        """Journal `entry` (durably, before it is enforced); one of its key already there
        is kept instead (returned)."""
        kept: list[LocalEntry] = []

        def edit(old: tuple[LocalEntry, ...]) -> tuple[LocalEntry, ...]:
            for e in old:
                if e.key == entry.key:
                    kept.append(e)
                    return old
            if len(old) >= MAX_ENTRIES:
                raise ValueError(f"the journal holds {MAX_ENTRIES} local kills already")
            return (*old, entry)

        self._locked(edit)
        return kept[0] if kept else entry

    def reseal(self) -> None:
        """Re-sign a journal the previous key signed with the current one (a key rotation's
        step 2): at step 3 the previous key is gone, and a genuine journal signed with it
        would be refused whole, its kills no longer enforced nor merged."""
        if self.previous_key and self.path is not None:
            self._locked(lambda old: old, force=True)
            event(log, "local_kills_resealed", logging.WARNING, path=str(self.path),
                  why="signed with the previous state key: re-signed with the current one")

    def remove(self, ids: set[str], generation: int) -> None:
        """Drop entries merged into the store at `generation` (by id: one journaled again
        since is kept); the file names them merged, with that generation."""
        self._locked(lambda old: tuple(e for e in old if e.id not in ids),
                     dict.fromkeys(sorted(ids), generation))

    def merge_lock_file(self) -> None:
        """Create the merge lock's file with the journal (while its volume is writable)."""
        assert self.path is not None
        name = self.path.with_name(self.path.name + ".merge")
        os.close(os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))

    def merge_lock(self) -> IO[bytes] | None:
        """The group's merge lock (`<path>.merge`), taken without waiting; None when a
        sibling holds it. Released as the returned file is closed."""
        assert self.path is not None
        name = self.path.with_name(self.path.name + ".merge")
        try:  # (read only: a volume gone read-only must not stop the merge into the store)
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        f = open(fd, "rb")  # noqa: SIM115 - the caller closes it (the lock's life)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        return f

    def flags(self) -> dict[str, KillFlag]:
        return {e.key: e.flag() for e in self.entries}
