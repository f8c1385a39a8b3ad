"""The local store's audit trim (retention): the trail and the state file are read, the
caller decides (pure: domain/retention.py), the audit file is replaced by the events kept
plus the checkpoint, then the state file anchoring the checkpoint.

The commit lock is held only to settle which state and which part of the audit file
belong together, and to rename the file kept (written and fsynced before) into place and
write the state: the trail is read, checked and written without it (a kill must not wait
for a long trail's bytes or hashes). The files are replaced only if neither changed
meanwhile (the state file's generation, audit head and epoch; the audit file's inode and
size): two workers never trim at once, and events appended meanwhile (the file only grew,
each line an event continuing the one before, the last the head the state anchors now) are
kept after the events the trim keeps, its checkpoint sealed again after them (as
redistrim.py does): under back-to-back appends every trim was voided before. A state
file that cannot be written puts the audit file back as it was; so does the next start
after a crash between the rename and the state write (`undo_torn_trim`).
A base of `local.LocalStore`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.domain.audit import parse_event, seal
from gateway.domain.retention import Decide, Due, TrimDecision, TrimWindow, trail_clock
from gateway.domain.statedoc import StateDoc
from gateway.errors import AuditError, StoreConflict, StoreUnavailable
from gateway.log import event
from gateway.state.files import (
    atomic_write,
    holds,
    last_line,
    put_in_place,
    write_target,
    written_aside,
)
from gateway.state.localaudit import LocalAudit
from gateway.state.signing import Keyring
from gateway.state.store import Loaded

__all__ = ["LocalTrim"]

log = logging.getLogger("killgate.state")

#: bytes appended to the audit file while a trim read it that the trim keeps (more: the
#: trim is voided, read again)
MAX_TAIL = 4 << 20


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except FileNotFoundError:
        return False


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _newest_hash(path: Path) -> str | None:
    line = last_line(path)
    ev = parse_event(line) if line else None
    h = ev.get("hash") if ev is not None else None
    return h if isinstance(h, str) else None


class LocalTrim(LocalAudit):
    """`audit_trim` of `LocalStore` (see the module docstring)."""

    path: Path
    audit_path: Path
    keys: Keyring
    audit_keys: Keyring

    async def audit_trim(self, decide: Decide,
                         due: Due) -> tuple[TrimDecision, dict[str, Any] | None]:
        """As RedisStore.audit_trim: the decision, and the checkpoint appended (None:
        nothing removed)."""
        return await asyncio.to_thread(self._trim, decide, due)

    def undo_torn_trim(self) -> None:
        """At start: the audit file as it was, kept aside by a trim (`*.tmp.old`), is put
        back when the trim was cut short between its rename and the state write (a crash,
        a power loss): the state still anchors that file's newest event, and the file in
        place ends past it, with a checkpoint no state anchors (`audit verify`: "added
        without the signing key"). Otherwise (the state was written, or a commit since
        anchored the checkpoint) the link is stale and removed."""
        audit = Path(os.path.realpath(self.audit_path))  # (a trim writes beside the file
        pattern = f".{audit.name}.*.tmp.old"  # a link names: write_target)
        if not any(audit.parent.glob(pattern)):
            return
        try:
            with self._locked(fcntl.LOCK_EX):  # (a trim holds it while its link exists)
                doc = self._read().doc
                self._undo(audit, sorted(audit.parent.glob(pattern)),
                           (doc.audit_head or None) if doc is not None else None)
        except StoreUnavailable:
            return  # (cannot tell: left for the next start)

    def _undo(self, audit: Path, olds: list[Path], head: str | None) -> None:
        for old in olds:
            try:
                back = (head is not None and _newest_hash(old) == head
                        and _newest_hash(audit) != head
                        and not _same(old, audit))
                if back:  # (a rename: put_in_place would remove `old` if it failed)
                    os.replace(old, audit)
                    _sync_folder(audit.parent)
                    event(log, "audit_trim_undone", logging.WARNING,
                          audit_log=str(self.audit_path), anchored_head=head,
                          why="a trim was cut short before the state anchored its "
                              "checkpoint: the audit log is back as it was")
                    continue
            except OSError as exc:
                event(log, "audit_trim_undo_failed", logging.ERROR, link=str(old),
                      error=exc.strerror, action="put this file back as the audit log "
                      "by hand if `killgate audit verify` reports events past the head")
                continue
            with contextlib.suppress(OSError):
                old.unlink()

    def _snapshot(self) -> tuple[Loaded, bytes, int, tuple[int, int]]:
        """The state file and the audit file as they are now, the audit file's mode and
        its identity (inode, size). Which state and which part of the audit file belong
        together is settled under the commit lock (shared: a commit appends its event
        before it writes the state that anchors it); the file is read after, outside it
        (a long trail's read must not hold up a kill): what a commit appends meanwhile
        lies past that size, and a file a trim replaced stays open as it was."""
        with self._locked(fcntl.LOCK_SH):
            cur = self._read()
            try:
                f = open(self.audit_path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                return cur, b"", 0o640, (0, 0)
            except OSError as exc:
                raise StoreUnavailable(f"cannot read {self.audit_path}: {exc.strerror}") from None
            st = os.fstat(f.fileno())
        with f:
            try:
                return cur, f.read(st.st_size), st.st_mode & 0o777, (st.st_ino, st.st_size)
            except OSError as exc:
                raise StoreUnavailable(f"cannot read {self.audit_path}: {exc.strerror}") from None

    def _trim(self, decide: Decide, due: Due) -> tuple[TrimDecision, dict[str, Any] | None]:
        """Read and decide without holding up commits (the decision checks every hash);
        then, under the commit lock, trim only if nothing was committed meanwhile."""
        cur, data, mode, ident = self._snapshot()
        lines = data.splitlines(keepends=True)
        # (dated by the trail's newest event, as the decision's age is: by this host's
        # clock alone, one running ahead read the whole file at every look, for nothing)
        clock = trail_clock(parse_event(line) for line in reversed(lines) if line.endswith(b"\n"))
        if not due(len(lines), parse_event(lines[0]) if lines else None, clock):
            return TrimDecision(0, None, "not due"), None
        events = []
        for n, line in enumerate(lines, 1):  # (as _audit_from reads them)
            ev = parse_event(line)
            events.append(ev if ev is not None and line.endswith(b"\n") else {
                "id": f"line-{n}", "unparseable": line.decode("utf-8", "replace")})
        doc = cur.doc if cur.trusted else None
        decision = decide(TrimWindow.whole(events, (doc.audit_head or None)
                                           if doc is not None else None))
        if decision.remove <= 0 or decision.draft is None or doc is None:
            return decision, None
        try:  # (the events kept are written before the commit lock is taken: the tail
            # appended meanwhile and the checkpoint are added to it under the lock; beside
            # the file a link names, which it replaces: the link replaced, every later
            # event and state landed beside it, not in the volume it points into)
            audit = write_target(self.audit_path)
            tmp = written_aside(audit, b"".join(lines[decision.remove:]), mode)
        except OSError as exc:
            raise AuditError(f"cannot replace the audit log {self.audit_path}: "
                             f"{exc.strerror}") from None
        try:
            return self._replace(audit, tmp, data, mode, ident, doc, decision, len(lines))
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()  # (not renamed in: the trim changed nothing)

    def _tail(self, ident: tuple[int, int], doc: StateDoc, now: StateDoc | None) -> bytes:
        """(Under the commit lock) The lines appended to the audit file since it was read
        (`ident`: its inode and size then): each an event continuing the one before from
        `doc`'s head, the last the head `now` anchors. StoreConflict otherwise (the file
        replaced, cut, or not grown by appends alone; the state's epoch changed)."""
        try:
            with open(self.audit_path, "rb") as f:
                st = os.fstat(f.fileno())
                grown = st.st_size - ident[1]
                if now is None or now.epoch != doc.epoch or st.st_ino != ident[0] \
                        or not 0 <= grown <= MAX_TAIL:
                    raise StoreConflict("the audit log or the state changed while it was read")
                f.seek(ident[1])
                tail = f.read(grown)
        except OSError:
            raise StoreConflict("the audit log changed while it was read") from None
        prev: object = doc.audit_head
        for line in tail.splitlines(keepends=True):
            ev = parse_event(line) if line.endswith(b"\n") else None
            if ev is None or ev.get("prev_hash") != prev:
                raise StoreConflict("the audit log changed while it was read (not by appends)")
            prev = ev.get("hash")
        if len(tail) != grown or prev != now.audit_head:
            raise StoreConflict("the audit log or the state changed while it was read")
        return tail

    def _replace(self, audit: Path, tmp: Path, data: bytes, mode: int, ident: tuple[int, int], doc: StateDoc,
                 decision: TrimDecision, count: int,
                 ) -> tuple[TrimDecision, dict[str, Any] | None]:
        """Under the commit lock: the events kept (`tmp`), then those appended since the
        read and the checkpoint after the head the state anchors now, take the audit log's
        place, and the state anchoring the checkpoint is written."""
        assert decision.draft is not None
        with self._locked(fcntl.LOCK_EX):
            now = self._read().doc
            tail = self._tail(ident, doc, now)
            assert now is not None
            count += tail.count(b"\n")
            d = decision.draft
            draft = dataclasses.replace(  # (its counts those of the trail as it is now)
                d, before={**(d.before or {}), "events": count},
                after={**(d.after or {}), "kept": count - decision.remove})
            key = self.audit_keys.current
            ev = seal(draft.as_event(), str(now.audit_head),
                      (key.kid, key.secret) if key is not None else None)
            body = json.dumps({**now.to_json(), "audit_head": ev["hash"]}).encode()
            try:
                with open(tmp, "ab") as f:
                    f.write(tail + (json.dumps(ev, ensure_ascii=False, separators=(",", ":"))
                                    + "\n").encode())
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise AuditError(f"cannot replace the audit log {self.audit_path}: "
                                 f"{exc.strerror}") from None
            # (the file as it was, kept under a second name: put back by a rename, which
            # needs no space, if the state cannot be written: a full disk must not leave
            # the events removed and the checkpoint unanchored, read as forged)
            aside = audit.with_name(f"{tmp.name}.old")
            old: Path | None = aside
            try:
                os.link(audit, aside)
            except OSError:
                old = None  # (a file system without hard links: written back, as it was)
            sealed = self.keys.seal(b"state", body)
            try:
                put_in_place(tmp, audit)
                atomic_write(write_target(self.path), sealed)
            except OSError as exc:
                if holds(self.path, sealed):  # (renamed into place, then the folder's
                    # fsync failed: the trim is made; the audit log put back would end
                    # before the checkpoint the state anchors, read as events cut)
                    event(log, "state_file_not_durable", logging.WARNING,
                          path=str(self.path), error=exc.strerror or str(exc))
                    return decision, ev
                try:  # (nothing was trimmed)
                    if old is not None:
                        os.replace(old, audit)
                    elif os.stat(audit).st_ino != ident[0]:
                        atomic_write(audit, data + tail, mode)
                except OSError as back:
                    raise AuditError(f"cannot put the audit log {self.audit_path} back after "
                                     f"a failed trim ({back.strerror}): its newest event is "
                                     "a checkpoint the state does not anchor") from None
                raise StoreUnavailable(f"cannot write {self.path} or {self.audit_path}: "
                                       f"{exc.strerror}") from None
            finally:
                if old is not None:
                    with contextlib.suppress(OSError):
                        old.unlink()
            return decision, ev
