"""This instance's durable last-known state: the snapshot file (`state.snapshot_path`).

Owns writing it after every applied change, and after events appended to the document it
holds (their head is the one a start continues: StateStore.anchored) (in the background,
newest pending document only, atomically, mode 0600), and its status. The workers of `serve
--workers N` share the file: a write takes `<path>.lock` (flock) and leaves a newer
document a sibling wrote there, so a worker a document behind never puts the file back
to a generation without a kill its sibling had written. With a signing key the
file is signed like a stored document (kind `snapshot`, bound to the deployment: the redis
prefix). Reading it at startup, and what of a file not trusted is kept (its kills only):
state/snapshotread.py. State that came from such a file stays of unverified origin after
this instance re-seeded the store with it: the file it writes then says so
(`unverified_origin`, its signed body) until the sync verifies a document of an epoch it
did not create (reseed.py's `_seen_fleet`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import filemodes
from gateway.domain.statedoc import StateDoc
from gateway.log import event
from gateway.state.files import (
    LOCK_WAIT,
    LockBusy,
    atomic_write,
    flock_within,
    read_regular,
    write_target,
)
from gateway.state.signing import MAGIC, Keyring
from gateway.state.snapshotbody import (
    Origin,
    decode_body,
    kills_only,
    read_origin,
    stays,
)
from gateway.state.snapshotread import SnapshotReader
from gateway.state.store import MAX_DOC_BYTES, OnUnverified, ignore_unverified

__all__ = ["Origin", "SnapshotFile", "kills_only"]  # (Origin, kills_only: snapshotbody.py)

log = logging.getLogger("killgate.state")


class SnapshotFile(SnapshotReader):
    def __init__(self, path: Path | None, keys: Keyring,
                 on_unverified: OnUnverified = ignore_unverified,
                 on_failed: Callable[[], None] | None = None) -> None:
        super().__init__(path, keys, on_unverified)
        self.on_failed = on_failed  # told of every write that failed (a metric)
        #: why the newest write failed (None: it did, or none was tried), and the
        #: generation of the newest document that landed: what a restart would enforce
        self.error: str | None = None
        self.written: int | None = None
        #: told at each `soon` where the document handed over came from (the sync's)
        self.origin: Callable[[], Origin] = lambda: None
        self._pending: tuple[StateDoc, Origin] | None = None
        self._newest = (-1, -1)  # (generation, audit_seq) of the newest document handed over
        self._writer: asyncio.Task[None] | None = None
        #: the document (and origin) the newest write put in the file
        self._landed: tuple[StateDoc, Origin] | None = None
        self.lock_wait = LOCK_WAIT

    def _write(self, doc: StateDoc, origin: Origin = None) -> int:
        """Write `doc` (and where it came from) unless the file holds a newer document of
        ours (a sibling worker's, verified); the generation the file holds then."""
        assert self.path is not None
        target = write_target(self.path)
        body = {**doc.to_json(), "prefix": self.deployment}
        if origin is not None:
            body["unverified_origin"] = origin
        sealed = self.keys.seal(b"snapshot", json.dumps(body).encode())
        target.parent.mkdir(parents=True, exist_ok=True)
        # (no link followed: one planted there must not make us create a file elsewhere)
        lockname = target.with_name(target.name + ".lock")
        fd = os.open(lockname, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "r+b") as lock:
            flock_within(lock.fileno(), lockname, self.lock_wait)  # (released as it closes)
            there = self._held(target)
            at = (doc.generation, doc.audit_seq)
            if there is not None and stays(there[:3], at, origin) and not (
                    there[3] and there[:2] == at and (origin is None or there[2])):
                return there[0]  # (as new, signed with the previous key: signed again)
            atomic_write(target, sealed, 0o600)
        return doc.generation

    def _held(self, target: Path) -> tuple[int, int, bool, bool] | None:
        """(generation, audit_seq, whether it is marked of unverified origin, whether it is
        signed with the previous key) of the document the file holds, when it is one this
        deployment signed (or, unkeyed, wrote) and only its owner may write; else None
        (replaced, as ever)."""
        try:
            raw = read_regular(target, MAX_DOC_BYTES + 1)
            if raw is None or len(raw) > MAX_DOC_BYTES \
                    or (self.keys.enabled and not raw.startswith(MAGIC)) \
                    or filemodes.problem(target, secret=False) is not None:
                return None
            body, which = self.keys.open(b"snapshot", raw)
            doc = decode_body(body)
            marked = read_origin(body)[0] is not None
        except (OSError, ValueError):
            return None
        return doc.generation, doc.audit_seq, marked, which == "previous"

    async def write(self, doc: StateDoc, origin: Origin = None) -> bool:
        """Write `doc`; False when the lock stayed held (worth another try), else True
        (written, or failed: reported)."""
        if self.path is None:
            return True
        try:
            written = await asyncio.to_thread(self._write, doc, origin)
        except OSError as exc:
            # a restart would enforce an older file (or none): shown in /v1/status and
            # counted, not only logged (a failure naming another file names it)
            where = exc.filename if exc.filename not in (None, str(self.path)) else None
            self.error = (f"cannot write {self.path}: "
                          + (f"{where}: " if where else "") + f"{exc.strerror or exc}")
            if self.on_failed is not None:
                self.on_failed()
            event(log, "snapshot_write_failed", logging.ERROR, path=str(self.path),
                  error=exc.strerror or str(exc), generation=doc.generation,
                  written=self.written)
            return not isinstance(exc, LockBusy)
        self.error, self.written = None, written
        return True

    def status(self) -> dict[str, Any] | None:
        """`/v1/status` → `store.snapshot` (None: no snapshot_path)."""
        if self.path is None:
            return None
        return {"path": str(self.path), "ok": self.error is None,
                "generation": self.written, "error": self.error, "kills_only": self.kills_only,
                "unverified_origin": self.unverified_origin, "refused": self.refused}

    def soon(self, doc: StateDoc) -> None:
        """Write `doc` in the background; only the newest pending one is written, and never
        one older than a document handed over before (a swap's snapshot waits for its ack,
        and a full sync's does not: an older swap's could land last, without a kill)."""
        at = (doc.generation, doc.audit_seq)
        if at < self._newest:
            return
        self._newest = at
        pending = (doc, self.origin())  # (where it came from as it was applied)
        if self._landed is not None and _same(pending, self._landed):
            return  # the file holds it (a committer hands its document over twice: as
            #         applied, and as its own push comes back): one fsync, not two
        self._pending = pending
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_latest())

    async def _write_latest(self) -> None:
        while self._pending is not None:
            pending, self._pending = self._pending, None
            self._landed = None
            if not await self.write(*pending):
                if self._pending is None:
                    self._pending = pending  # (the lock was held: again, unless a newer one came)
            elif self.error is None:
                self._landed = pending
                if self._pending is not None and _same(self._pending, pending):
                    self._pending = None  # (handed over again while it was written)

    async def flush(self, timeout: float = 5.0) -> None:
        """On the way out: let the last snapshot land."""
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=timeout)


def _same(a: tuple[StateDoc, Origin], b: tuple[StateDoc, Origin]) -> bool:
    """The same document (and origin): one write's, at one audit head. Said by the write
    id it ends with, not a comparison of every field (~0.45 ms on the loop for 1,000 kills);
    a document without one (never written by a commit) is only itself."""
    (x, ox), (y, oy) = a, b
    if x is y:
        return ox == oy
    return ox == oy and x.writes != () and (
        x.generation, x.audit_seq, x.audit_head, x.epoch, x.writes[-1]) == (
        y.generation, y.audit_seq, y.audit_head, y.epoch, y.writes[-1])
