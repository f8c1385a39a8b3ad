"""Keeps this instance's in-memory state in step with the store, and writes to it.

Owns the background task that (re)connects, subscribes first and then loads, applies
pushed documents, polls the generation every `poll_interval` (the only delivery
guarantee: pub/sub drops messages during reconnects), heartbeats, re-seeds a store that
lost its state, and enforces `on_unavailable`. Invariants: a document is applied only if
its generation is newer than the one held; nothing the store says can lift a kill
except a newer document that omits it (an explicit unkill); the data plane never waits
for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import StateConfig
from gateway.control.table import TableHolder
from gateway.domain.audit import AuditDraft
from gateway.domain.statedoc import StateDoc
from gateway.errors import ApiError, AuditError, NotDurable, StateError, StoreConflict
from gateway.log import event
from gateway.state.local import atomic_write, last_line
from gateway.state.store import Ack, Store, merge_restrictive, new_epoch
from gateway.telemetry.metrics import Metrics

__all__ = ["Sync"]

log = logging.getLogger("killgate.state")

Change = Callable[[StateDoc], StateDoc]
Describe = Callable[[StateDoc, StateDoc], AuditDraft]


class Sync:
    def __init__(self, store: Store, holder: TableHolder, metrics: Metrics, instance: str,
                 cfg: StateConfig, snapshot_path: Path | None,
                 audit_mirror: Path | None = None) -> None:
        self.audit_mirror = audit_mirror
        self.store = store
        self.holder = holder
        self.metrics = metrics
        self.instance = instance
        self.cfg = cfg
        self.snapshot_path = snapshot_path
        self.ready = False
        self.connected = False
        self.synced_once = False
        self.from_snapshot = False
        self.last_error: str | None = None
        self.started_at = time.monotonic()
        self.last_ok: float | None = None
        self.stale = False  # past max_staleness: the alarm (whatever the policy)
        self.acks: dict[str, int] = {}
        self.heard: dict[str, float] = {}  # instance -> when we last heard of it (monotonic)
        self.watching_since: float | None = None
        self._ack_waiters: set[asyncio.Future[None]] = set()
        self._pending_audit: list[AuditDraft] = []
        self._write_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._to_persist: StateDoc | None = None
        self._persister: asyncio.Task[None] | None = None
        self._last_beat = 0.0
        #: told about every audited change this instance commits (outgoing events)
        self.committed: list[Callable[[dict[str, Any], StateDoc], None]] = []
        store.listen(self._pushed)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        snap = await asyncio.to_thread(self._read_snapshot)
        if snap is not None:
            self.holder.apply_doc(snap)
            self.from_snapshot = True
            event(log, "snapshot_loaded", generation=snap.generation, kills=sorted(snap.kills))
        try:
            await asyncio.wait_for(self._connect_and_sync(), max(4 * self.cfg.command_timeout, 1.0))
        except (StateError, AuditError, TimeoutError) as exc:
            self.last_error = str(exc) or type(exc).__name__
            self.connected = False
            event(log, "state_store_unavailable_at_start", logging.WARNING, error=self.last_error,
                  serving="snapshot" if self.from_snapshot else "config only")
        self._update_ready()
        self._tasks = [asyncio.create_task(self._run(), name="state-sync"),
                       asyncio.create_task(self._guard(), name="state-guard")]
        if self.audit_mirror is not None:
            self._tasks.append(asyncio.create_task(self._mirror(self.audit_mirror),
                                                   name="audit-mirror"))

    async def stop(self) -> None:
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=2 * self.cfg.command_timeout)
        if self._persister is not None:
            await asyncio.wait({self._persister}, timeout=5.0)  # the last snapshot lands
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        with contextlib.suppress(StateError, TimeoutError):
            await asyncio.wait_for(self.store.leave(self.instance), self.cfg.command_timeout)
        await self.store.close()

    def _update_ready(self) -> None:
        self.ready = self.synced_once or self.from_snapshot or self.cfg.ready_without_state

    # ------------------------------------------------------------------ snapshot

    def _read_snapshot(self) -> StateDoc | None:
        if self.snapshot_path is None:
            return None
        try:
            return StateDoc.from_json(json.loads(self.snapshot_path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            event(log, "snapshot_unreadable", logging.ERROR, path=str(self.snapshot_path),
                  error=str(exc))
            return None

    async def _persist(self, doc: StateDoc) -> None:
        if self.snapshot_path is None:
            return
        try:
            await asyncio.to_thread(atomic_write, self.snapshot_path,
                                    json.dumps(doc.to_json()).encode())
        except OSError as exc:
            event(log, "snapshot_write_failed", logging.ERROR, path=str(self.snapshot_path),
                  error=exc.strerror)

    # ------------------------------------------------------------------ applying

    def _apply(self, doc: StateDoc) -> bool:
        if not self.holder.apply_doc(doc):
            return False
        self.metrics.set("killgate_state_generation", doc.generation)
        event(log, "state_applied", generation=doc.generation, kills=sorted(doc.kills),
              applied_at=round(time.time(), 6))
        return True

    def _pushed(self, item: StateDoc | Ack) -> None:
        """A change or an ack pushed by the store, taken in the loop iteration that read it:
        the new table is in force before anything else runs."""
        if isinstance(item, Ack):
            self._note_ack(item)
        elif self._apply(item):
            self._spawn(self._after_apply(item))

    async def _after_apply(self, doc: StateDoc) -> None:
        """Ack first (receipts wait on it), then make the state durable locally."""
        try:
            await self._beat()
        except StateError as exc:
            self.last_error = str(exc)
        self._persist_soon(doc)

    def _persist_soon(self, doc: StateDoc) -> None:
        """Write the snapshot in the background; only the newest pending one is written."""
        self._to_persist = doc
        if self._persister is None or self._persister.done():
            self._persister = asyncio.create_task(self._persist_latest())

    async def _persist_latest(self) -> None:
        while self._to_persist is not None:
            doc, self._to_persist = self._to_persist, None
            await self._persist(doc)

    async def _beat(self) -> None:
        gen = self.holder.doc.generation
        await self.store.heartbeat(self.instance, gen, self.holder.loaded.digest)
        self._last_beat = time.monotonic()
        self._note_ack(Ack(self.instance, gen))

    def _note_ack(self, ack: Ack) -> None:
        self.heard[ack.instance] = time.monotonic()
        if ack.generation > self.acks.get(ack.instance, -1):
            self.acks[ack.instance] = ack.generation
        for f in self._ack_waiters:
            if not f.done():
                f.set_result(None)

    def _touch(self) -> None:
        self.last_ok = time.monotonic()
        if self.holder.fail_closed:
            self.holder.set_fail_closed(False)
            self.metrics.set("killgate_fail_closed", 0)
            event(log, "fail_closed_cleared", logging.WARNING)
            self._pending_audit.append(AuditDraft(
                actor="killgate/auto", action="fail_closed.clear", target={"scope": "global"},
                reason="the state store answers again"))

    # ------------------------------------------------------------------ syncing

    async def _connect_and_sync(self) -> None:
        self.watching_since = None
        await self.store.open()
        self.watching_since = time.monotonic()
        await self._full_sync()
        self.connected = True
        self.synced_once = True
        self.last_error = None
        self._update_ready()
        self._touch()
        await self._beat()

    async def _full_sync(self) -> None:
        mine = self.holder.doc  # read first: a write landing meanwhile is not "the store lost it"
        doc = await self.store.load()
        if doc is None and mine.generation == 0 and not mine.kills and not self.from_snapshot:
            # A new store, and we know of no state: start generation 0.
            with contextlib.suppress(StoreConflict):
                await self.store.commit(None, StateDoc(epoch=new_epoch()), None)
            doc = await self.store.load()
        elif doc is None or doc.generation < mine.generation:
            await self._reseed(doc, mine)
            doc = await self.store.load()
        if doc is not None and self._apply(doc):
            self._persist_soon(doc)

    async def _reseed(self, store_doc: StateDoc | None, mine: StateDoc) -> None:
        """The store lost state (restart without persistence, FLUSHALL, old backup)."""
        merged = merge_restrictive(store_doc, mine)
        event(log, "state_store_reseed", logging.WARNING,
              store_generation=None if store_doc is None else store_doc.generation,
              our_generation=mine.generation, kills=sorted(merged.kills))
        draft = AuditDraft(
            actor="killgate/auto", action="state.reseed", target={"store": self.store.backend},
            reason="the state store lost its state; re-seeded from this instance's last-known "
                   "state (kills merged: only an explicit unkill lifts a kill)",
            before={"generation": None if store_doc is None else store_doc.generation},
            after={"generation": merged.generation, "kills": sorted(merged.kills)},
            source=self.instance)
        try:
            await self.store.commit(None if store_doc is None else store_doc.generation,
                                    merged, draft)
        except StoreConflict:
            return  # another instance re-seeded first; the caller reloads
        self.metrics.inc("killgate_state_reseeds_total")

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                if not self.connected:
                    await self._connect_and_sync()
                    event(log, "state_store_connected", generation=self.holder.doc.generation)
                    backoff = 0.05
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - see below
                if not isinstance(exc, (StateError, AuditError, OSError)):
                    # a bug (ours, or a library's) must not end syncing: this loop is what
                    # brings every later kill to this instance
                    event(log, "state_sync_error", logging.ERROR, error=repr(exc))
                    backoff = max(backoff, 1.0)  # a bug that repeats: once a second at most
                elif self.connected:
                    event(log, "state_store_lost", logging.WARNING, error=str(exc))
                self.connected = False
                self.watching_since = None
                self.last_error = str(exc) or type(exc).__name__
                await self.store.reset()
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 2.0)

    async def _cycle(self) -> None:
        """One poll interval: apply pushed changes as they arrive, then check the generation."""
        deadline = time.monotonic() + self.cfg.poll_interval
        while (left := deadline - time.monotonic()) > 0:
            for item in await self.store.watch(left):
                if isinstance(item, Ack):
                    self._note_ack(item)
                elif self._apply(item):
                    await self._after_apply(item)
        held = self.holder.doc.generation  # read first: what we hold only grows
        gen = await self.store.generation()
        if gen is None or gen < held:
            await self._full_sync()
        elif gen > held:
            doc = await self.store.load()
            if doc is not None and self._apply(doc):
                await self._after_apply(doc)
        self._touch()
        if time.monotonic() - self._last_beat >= self.cfg.heartbeat_interval:
            await self._beat()
        while self._pending_audit:  # automatic actions noted while the store was away
            await self.append_audit(self._pending_audit[0])
            self._pending_audit.pop(0)

    async def append_audit(self, draft: AuditDraft) -> dict[str, Any] | None:
        """Append an audit event without changing the state (same generation, same doc)."""
        for _ in range(5):
            cur = await self.store.load()
            if cur is None:
                return None
            try:
                ev = await self.store.commit(cur.generation, cur, draft)
                self.metrics.inc("killgate_audit_records_total")
                return ev
            except StoreConflict:
                continue
        raise StoreConflict("the state kept changing; the audit event was not written")

    async def _mirror(self, path: Path) -> None:
        """Copy the store's audit trail, as it grows, to a local JSONL file (fsynced).

        The position is kept in `<path>.cursor`, so a restart resumes where it stopped.
        Failures are logged and retried; they never affect the gateway."""
        cursor_file = path.with_name(path.name + ".cursor")
        cursor = cursor_file.read_text().strip() if cursor_file.exists() else None
        # A stop between appending a batch and saving the cursor leaves the cursor one batch
        # behind: skip what the file already ends with, so nothing is copied twice.
        last = await asyncio.to_thread(last_line, path)
        resume_after = _hash_of(last)
        batch = 500
        while True:
            try:
                fetched, new = await self.store.audit_since(cursor, batch)
                events = fetched
                if resume_after is not None and fetched:
                    hashes = [e.get("hash") for e in fetched]
                    if fetched[0].get("prev_hash") == resume_after:
                        resume_after = None  # the cursor was right
                    elif resume_after in hashes:
                        events = fetched[hashes.index(resume_after) + 1:]
                        resume_after = None
                    elif len(fetched) == batch:
                        events = []  # older than the file's end: copied already
                    else:
                        resume_after = None  # another chain (a flushed store): copy as is
                if events:
                    await asyncio.to_thread(_append_lines, path, events)
                if fetched:
                    await asyncio.to_thread(atomic_write, cursor_file, (new or "").encode())
                    cursor = new
                    continue  # there may be more
            except (StateError, OSError) as exc:
                self.metrics.inc("killgate_audit_mirror_failures_total")
                event(log, "audit_mirror_failed", logging.WARNING, path=str(path), error=str(exc))
            await asyncio.sleep(max(self.cfg.poll_interval, 0.25))

    async def _guard(self) -> None:
        """Staleness clock and the fail_closed policy; never touches the store."""
        self.metrics.set("killgate_state_stale", 0)
        while True:
            stale = self.staleness()
            self.metrics.set("killgate_kill_state_age_seconds", round(stale, 3))
            self.metrics.set("killgate_state_store_connected", 1 if self.connected else 0)
            self._alarm(stale)
            if (self.cfg.on_unavailable == "fail_closed" and stale > self.cfg.max_staleness
                    and not self.holder.fail_closed):
                self.holder.set_fail_closed(True)
                self.metrics.set("killgate_fail_closed", 1)
                event(log, "fail_closed_tripped", logging.ERROR, staleness_s=round(stale, 3))
                self._pending_audit.append(AuditDraft(
                    actor="killgate/auto", action="fail_closed.trip", target={"scope": "global"},
                    reason=f"no state sync for {stale:.1f}s (max_staleness "
                           f"{self.cfg.max_staleness:g}s): every route answers killed",
                    source=self.instance))
            await asyncio.sleep(min(0.1, self.cfg.max_staleness / 4))

    def _alarm(self, stale: float) -> None:
        """Past max_staleness the state this instance enforces may be missing kills made
        since: raise the alarm under either policy (`last_known` keeps serving)."""
        now = stale > self.cfg.max_staleness
        if now == self.stale:
            return
        self.stale = now
        self.metrics.set("killgate_state_stale", 1 if now else 0)
        if now:
            event(log, "state_stale", logging.ERROR, staleness_s=round(stale, 3),
                  max_staleness_s=self.cfg.max_staleness, policy=self.cfg.on_unavailable,
                  error=self.last_error)
        else:
            event(log, "state_stale_cleared", logging.WARNING)

    def staleness(self) -> float:
        ref = self.last_ok if self.last_ok is not None else self.started_at
        return time.monotonic() - ref

    # ------------------------------------------------------------------ writes

    async def write(self, change: Change, describe: Describe) -> tuple[StateDoc, dict[str, Any] | None]:
        """Apply `change` to the store's current state atomically with its audit event.

        `change` may raise ApiError (404/409) to refuse. Raises StoreUnavailable when the
        store cannot be reached and AuditError when the audit event cannot be stored; in
        both cases nothing changed.
        """
        async with self._write_lock:
            # Optimistic first attempt: what we enforce is nearly always the store's newest
            # state (the commit compares generations, so a stale guess only costs a retry).
            cur: StateDoc | None = self.holder.doc if self.synced_once else None
            guessed = cur is not None
            for _ in range(10):
                if cur is None:
                    guessed = False
                    cur = await self.store.load()
                    if cur is None or cur.generation < self.holder.doc.generation:
                        await self._reseed(cur, self.holder.doc)
                        cur = None
                        continue
                # A refusal ("not killed") or a no-op ("already killed") decided on our own
                # copy must hold in the store too: a change made elsewhere that has not
                # reached us yet would otherwise make a kill look done, or an unkill moot.
                try:
                    new = change(cur)
                except ApiError:
                    if guessed and await self._moved(cur):
                        cur = None
                        continue
                    raise
                if new is cur:
                    if guessed and await self._moved(cur):
                        cur = None
                        continue
                    # nothing to change: no generation, no audit event; a retry after
                    # NotDurable lands here and confirms what is already there
                    await self._durable(cur.generation)
                    return cur, None
                new = new.with_changes(generation=cur.generation + 1)
                try:
                    ev = await self.store.commit(cur.generation, new, describe(cur, new))
                except StoreConflict:
                    cur = None
                    continue
                self.metrics.inc("killgate_audit_records_total")
                self._tell(ev, new)
                if self._apply(new):
                    # ack and snapshot in the background: the receipt counts us already
                    self._spawn(self._after_apply(new))
                await self._durable(new.generation)
                return new, ev
            raise StoreConflict("the state kept changing; try again")

    def _tell(self, ev: dict[str, Any] | None, new: StateDoc) -> None:
        """Side channels (events) hear of a committed change; they never fail the write."""
        for fn in self.committed:
            if ev is not None:
                try:
                    fn(ev, new)
                except Exception as exc:  # noqa: BLE001 - the change is committed already
                    event(log, "commit_listener_failed", logging.ERROR, error=repr(exc))

    async def _moved(self, cur: StateDoc) -> bool:
        """Whether the store is past the copy `cur` (one round trip)."""
        return await self.store.generation() != cur.generation

    async def _durable(self, generation: int) -> None:
        """With `min_replicas`, a write is confirmed only once that many replicas hold it
        (row 19: a failover must not lose an acknowledged kill)."""
        need = self.cfg.min_replicas
        if not need:
            return
        try:
            got = await self.store.replicated(need, self.cfg.replica_timeout)
        except StateError:
            got = 0
        if got < need:
            self.metrics.inc("killgate_writes_not_durable_total")
            event(log, "write_not_durable", logging.WARNING, generation=generation,
                  replicas=got, required=need)
            raise NotDurable(generation, got, need, self.cfg.replica_timeout)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def receipt(self, generation: int, wait: float) -> dict[str, Any]:
        """Wait until every live instance has applied `generation` (or `wait` runs out)."""
        t0 = time.monotonic()
        poll = 0.05 if self.store.pushes else 0.005
        live = await self._live()
        pending = {i for i in live if self.acks.get(i, -1) < generation}
        last = t0
        while pending:
            left = t0 + wait - time.monotonic()
            if left <= 0:
                break
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ack_waiters.add(fut)
            try:
                pending = {i for i in pending if self.acks.get(i, -1) < generation}
                if pending:
                    await asyncio.wait_for(fut, min(left, poll))
            except TimeoutError:
                pass
            finally:
                self._ack_waiters.discard(fut)
            if time.monotonic() - last >= poll:
                last = time.monotonic()
                await self._live()
            pending = {i for i in pending if self.acks.get(i, -1) < generation}
        return {"generation": generation, "applied": {
            "instances": len(live), "acked": len(live) - len(pending),
            "elapsed_ms": round((time.monotonic() - t0) * 1000, 2), "pending": sorted(pending)}}

    async def _live(self) -> dict[str, int]:
        lease = self.cfg.instance_lease
        now = time.monotonic()
        if (self.store.pushes and self.connected and self.watching_since is not None
                and now - self.watching_since > 2 * self.cfg.heartbeat_interval):
            # Every instance's heartbeat reaches us on the acks channel: we know who is live
            # without asking (one round trip less on every write).
            live = {i: self.acks.get(i, 0) for i, t in self.heard.items() if now - t <= lease}
        else:
            try:
                live = await self.store.live_instances(lease)
            except StateError:
                live = {}
        # We enforce what we hold, whatever our last heartbeat told the store.
        live[self.instance] = max(live.get(self.instance, 0), self.holder.doc.generation)
        for inst, gen in live.items():
            self._note_ack(Ack(inst, gen))
        return live

    # ------------------------------------------------------------------ reads

    async def fleet(self) -> dict[str, dict[str, Any]]:
        """Every live instance with the generation and config digest it runs."""
        try:
            return await self.store.fleet(self.cfg.instance_lease)
        except StateError:
            return {}

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.store.backend, "connected": self.connected,
            "staleness_ms": round(self.staleness() * 1000, 1), "policy": self.cfg.on_unavailable,
            "max_staleness_ms": round(self.cfg.max_staleness * 1000), "stale": self.stale,
            "fail_closed": self.holder.fail_closed, "synced": self.synced_once,
            "from_snapshot": self.from_snapshot, "epoch": self.holder.doc.epoch,
            "last_error": self.last_error,
        }


def _hash_of(line: bytes | None) -> str | None:
    try:
        h = json.loads(line).get("hash") if line else None
    except (ValueError, AttributeError):
        return None
    return h if isinstance(h, str) else None


def _append_lines(path: Path, events: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(e, ensure_ascii=False, separators=(",", ":")) + "\n"
                   for e in events).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
