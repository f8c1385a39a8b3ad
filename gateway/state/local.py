"""The embedded state store (`state.backend: local`): files on one host.

Owns three things next to `state.path`: the state document (replaced atomically:
write, fsync, rename, fsync the folder; signed when a key is configured), the audit log
`<path>.audit.jsonl` (appended and fsynced before the state changes; keyed MACs with a
key; read back: localaudit.py, and trimmed: localtrim.py, its bases), and one heartbeat
file per instance in `<path>.instances/`, replaced and removed under its `.lock`
(localbeats.py; idempotency records and counts: localaux.py, their base; the file writes:
files.py).
Without a key the file permissions are the trust boundary: values are neither signed nor
checked. The bytes read last are remembered with their document (polls of an unchanged file
verify and decode nothing; a commit remembers the bytes it wrote), and a changed file is
decoded sharing what it has in common with the last (shareddecode.py). Compare-and-set is
an exclusive `flock` on `<path>.lock`, so the workers of one `killgate serve --workers N`
share it safely. Blocking file work runs in a thread; change
detection is a `stat` per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from gateway.domain.audit import GENESIS, AuditDraft, parse_event, seal
from gateway.domain.branches import replaces_another
from gateway.domain.statedoc import NewerDocument, StateDoc
from gateway.errors import AuditError, StoreConflict, StoreUnavailable
from gateway.log import event as event_log
from gateway.state.files import (
    append_lines,
    atomic_write,
    end_line,
    holds,
    last_line,
    read_regular,
    write_target,
)
from gateway.state.garbled import Garbled
from gateway.state.localsweep import sweep
from gateway.state.localtrim import LocalTrim
from gateway.state.shareddecode import SharedDecoder
from gateway.state.signing import Keyring, Which, cause_of
from gateway.state.store import (
    MAX_DOC_BYTES,
    Ack,
    Loaded,
    OnUnverified,
    ignore_unverified,
)

__all__ = ["LocalStore"]

log = logging.getLogger("killgate.state")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _cut(path: Path, size: int) -> None:
    """The audit file back to `size` bytes (the commit's lock held: no other writer)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)


class LocalStore(LocalTrim):
    backend = "local"
    pushes = False

    def __init__(self, path: Path, audit_path: Path | None = None, *,
                 keys: Keyring | None = None, audit_keys: Keyring | None = None,
                 on_unverified: OnUnverified = ignore_unverified,
                 routes: Collection[str] | None = None) -> None:
        self.keys = keys or Keyring(None)
        self.routes = routes  # (a start sweeps leftovers: localsweep.py; None: a CLI's)
        self.audit_keys = audit_keys or self.keys
        self.on_unverified = on_unverified
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.audit_path = audit_path or path.with_name(path.name + ".audit.jsonl")
        self.instances_dir = path.with_name(path.name + ".instances")
        self._garbled = Garbled()  # (localbeats.py, localaux.py: files a power loss cut)
        self._seen: tuple[int, int, int] | None = None
        self._marks: OrderedDict[str, tuple[int, int]] = OrderedDict()  # (localaudit.py)
        #: the bytes verified last and their document (a poll of an unchanged file, the
        #: commit's read of the file this process wrote: the same bytes, the same answer,
        #: nothing verified or decoded again); reads run in threads: under `_decoding`
        self._last: tuple[bytes, StateDoc, Which] | None = None
        self._decoder = SharedDecoder()
        self._decoding = threading.Lock()

    async def open(self) -> None:
        try:
            await asyncio.to_thread(self._prepare)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use {self.path.parent}: {exc.strerror}") from None

    def _prepare(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        self.lock_path.touch(exist_ok=True)
        self.undo_torn_trim()  # (a trim a crash cut short)
        if self.routes is not None:  # (crashes' temporaries, removed routes' counts)
            sweep(self.path, self.routes)

    async def reset(self) -> None:
        return None

    async def kept(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ state

    def _read(self) -> Loaded:
        try:  # (read at every poll: never more than a document)
            raw = read_regular(self.path, MAX_DOC_BYTES + 1)
        except FileNotFoundError:
            return Loaded(None, None)
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self.path}: {exc.strerror}") from None
        if raw is None:
            raise StoreUnavailable(f"cannot read {self.path}: not a regular file (a FIFO, "
                                   "device, socket or folder); remove it")
        try:
            if len(raw) > MAX_DOC_BYTES:
                raise ValueError(f"over the {MAX_DOC_BYTES}-byte limit of a state document "
                                 "(not read)")
            doc, which = self._open_doc(raw)
        except ValueError as exc:
            nd = exc if isinstance(exc, NewerDocument) else None
            # the compare-and-set token of a refused file: its content's digest
            return Loaded(None, "x" + hashlib.sha256(raw).hexdigest()[:16],
                          f"{self.path}: {exc}",
                          raw if self.keys.enabled and len(raw) <= MAX_DOC_BYTES else None,
                          cause=cause_of(exc), newer=nd is not None,
                          newer_generation=None if nd is None else nd.generation)
        if which == "previous":
            self.on_unverified("state", "", "previous")
        # (signed with the previous key: re-signed, as a redis store's step 2 does; this
        # host's processes share the file, no fleet to sign it back. Kept, a quiet step 2
        # left it so, and step 3 refused it: tampering, or unready without a snapshot)
        return Loaded(doc, str(doc.generation), old_key=which == "previous")

    def _open_doc(self, raw: bytes) -> tuple[StateDoc, Which]:
        """The document in `raw`, verified (raises ValueError, Unverified included)."""
        with self._decoding:
            last = self._last
            if last is not None and raw == last[0]:
                return last[1], last[2]
            body, which = self.keys.open(b"state", raw)
            doc = self._decoder.decode(body)
            self._last = (raw, doc, which)
            return doc, which

    async def load(self, on_loaded: Callable[[Loaded], None] | None = None) -> Loaded:
        got = await asyncio.to_thread(self._read)
        if on_loaded is not None:
            on_loaded(got)
        return got

    async def poll(self) -> tuple[str | None, str | None]:
        got = await self.load()
        return got.token, (got.doc.audit_head or None) if got.doc is not None else None

    def _commit(self, expected: str | None, doc: StateDoc, draft: AuditDraft | None,
                chain_from: str | None) -> tuple[dict[str, Any] | None, StateDoc]:
        with self._locked(fcntl.LOCK_EX):
            cur = self._read()
            if cur.token != expected:
                raise StoreConflict(f"state is at generation {cur.token}, expected {expected}")
            if cur.doc is not None and cur.trusted and replaces_another(cur.doc, doc):
                # another write at our base's generation (another branch: a file restored
                # from a backup, then written): the caller merges it first
                raise StoreConflict("another write at our generation (another branch)")
            event, mark = None, 0
            if draft is not None:
                mark = _size(self.audit_path)
                event = self._append_audit(draft, chain_from, cur.doc.audit_head
                                           if cur.doc is not None and cur.trusted else None)
            # the (signed) state file anchors the audit trail's head: events cut off the
            # end of the audit file are noticed by `audit verify`
            head = event["hash"] if event is not None else (
                cur.doc.audit_head if cur.doc is not None else doc.audit_head)
            body = json.dumps({**doc.to_json(), "audit_head": head}).encode()
            sealed = self.keys.seal(b"state", body)
            try:
                target = write_target(self.path)
                atomic_write(target, sealed)
            except OSError as exc:
                if not holds(self.path, sealed):
                    if event is not None:  # the change was not made: its event goes too
                        _cut(self.audit_path, mark)  # (left, past the anchored head: a break)
                    raise StoreUnavailable(f"cannot write {self.path}: {exc.strerror}") from None
                # renamed into place, then an error (the folder's fsync): every reader and
                # a restart read it, so it is the change made, its event kept (cut, a kill
                # in force was "not made", unaudited, the state anchoring a missing event)
                event_log(log, "state_file_not_durable", logging.WARNING, path=str(self.path),
                          error=exc.strerror or str(exc))
            stored = doc.with_changes(audit_head=head)
            with self._decoding:  # (the bytes we signed: read back, the document we built)
                self._last = (sealed, stored, "current" if self.keys.enabled else "unkeyed")
            return event, stored

    def anchored(self, doc: StateDoc) -> None:
        """(StateStore.anchored) Nothing to do: each commit continues the head the state
        file names, on this host's disk (not a store others write to)."""

    def behind(self, doc: StateDoc | None) -> str | None:
        """(StateStore.behind) None: each commit continues the audit file's last event."""
        return None

    async def audit_head(self) -> str | None:
        """The head the (verified) state file anchors; None without one."""
        try:
            doc = (await self.load()).doc
        except StoreUnavailable:
            return None
        return (doc.audit_head or None) if doc is not None else None

    def _append_audit(self, draft: AuditDraft, chain_from: str | None,
                      anchor: str | None) -> dict[str, Any]:
        """Append the event after the last one; after the head the state file anchors when
        the last line is no event (torn by a power loss, edited: left for `audit verify`)."""
        key = self.audit_keys.current
        try:
            last = last_line(self.audit_path)
            ev = parse_event(last) if last else None  # (None: no event, a deep one too)
            prev = (ev.get("hash") if ev is not None else None) if last else (
                chain_from or GENESIS)
            if not isinstance(prev, str):
                if anchor is None:
                    raise ValueError(f"its last line is no event, and no signed state "
                                     f"anchors a head to continue from: {(last or b'')[:80]!r}")
                prev = anchor
            event = seal(draft.as_event(), prev, (key.kid, key.secret) if key else None)
            end_line(self.audit_path)  # (a torn last line stays a line of its own)
            append_lines(self.audit_path, [event])
        except (OSError, ValueError, KeyError) as exc:
            raise AuditError(f"cannot append to the audit log {self.audit_path}: {exc}") from None
        return event

    async def commit(self, expected: str | None, doc: StateDoc, draft: AuditDraft | None,
                     chain_from: str | None = None,
                     on_stored: Callable[[StateDoc], None] | None = None,
                     based_on: StateDoc | None = None,
                     onto: StateDoc | None = None,
                     pinned: StateDoc | None = None) -> dict[str, Any] | None:
        # (`based_on`, `onto` and `pinned` are redis's: here the generation is the
        # document's own, an event continues the file's last one, and a file this instance
        # cannot verify refuses the commit under its lock)
        event, stored = await asyncio.to_thread(self._commit, expected, doc, draft, chain_from)
        if on_stored is not None:
            on_stored(stored)
        return event

    async def replicated(self, replicas: int, timeout: float, generation: int,
                         fence: bool = False) -> int:
        """An fsynced file has no replicas to wait for (the config refuses min_replicas)."""
        return replicas

    def listen(self, fn: Callable[[StateDoc | Ack], None]) -> None:
        """Nothing is pushed: `watch` notices a replaced file."""

    async def watch(self, timeout: float) -> list[StateDoc | Ack]:
        """Poll the file's identity (inode, size, mtime) every few ms until it changes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = os.stat(self.path)
                ident = (st.st_ino, st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                ident = None
            if ident is not None and ident != self._seen:
                self._seen = ident
                doc = (await self.load()).doc  # a refused file: the poll reports it
                return [doc] if doc is not None else []
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            await asyncio.sleep(min(0.025, left))
