"""The audit mirror (`state.audit_mirror`): a local JSONL copy of the trail that only grows
by events that verifiably continue it.

Owns copying new events from the store to the file (appended and fsynced; the store's
position in `<file>.cursor`, so a restart resumes without duplicates) and the refusal:
an event whose `prev_hash` is not the file's last hash, whose hash does not match its
content, or (with the audit key) whose MAC does not verify is never appended. A refusal
raises the alarm — `killgate_audit_mirror_refused_total`, `killgate_audit_mirror_ok` 0, an
`audit_mirror_refused` error log, and the `alarm` hook — and copying stops until the file is
moved aside. A flushed or re-sealed store therefore never extends the mirror. Failures to
reach the store or the disk are retried and never affect the gateway. The file's end is
read and written only under its lock, verified there, a torn tail cut (mirrortail.py).
Any other error (a bug, an input nobody foresaw) is supervised: the copy stops, the status
says so and why (`stopped`: the error's type and its message, redacted), `ok` is 0, and it
starts again after a back-off (RESTART_FIRST doubling to RESTART_MOST), counted in
`restarts` and `killgate_audit_mirror_restarts_total`. Such an error once ended the task
for good while its status still said ok.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.domain.audit import parse_event, utc_now
from gateway.errors import StateError
from gateway.log import event
from gateway.redact import message
from gateway.state.files import atomic_write, last_line
from gateway.state.mirrortail import (
    TailUnverified,
    append_after,
    line_problem,
    locked,
    rotated_key,
    verified_end,
)
from gateway.state.signing import Keyring
from gateway.state.store import AuditStore
from gateway.telemetry.metrics import Metrics

__all__ = ["AuditMirror"]

log = logging.getLogger("killgate.state")

BATCH = 500
#: seconds before a copy that died of an unexpected error starts again (doubling, at most
#: RESTART_MOST; back to the first once a restarted copy has made a pass)
RESTART_FIRST, RESTART_MOST = 1.0, 60.0
Alarm = Callable[[dict[str, Any]], None]
_append = append_after  # (the file's end, under its lock: mirrortail.py)


class AuditMirror:
    def __init__(self, store: AuditStore, path: Path, keys: Keyring, metrics: Metrics,
                 poll: float, alarm: Alarm | None = None) -> None:
        self.store = store
        self.path = path
        self.cursor_file = path.with_name(path.name + ".cursor")
        self.keys = keys.keys()
        self.metrics = metrics
        self.poll = poll
        self.alarm = alarm
        self.last_hash: str | None = None
        self.keyed = False  # a keyed event is in the file: every later one must be keyed
        self.copied = 0
        self.refused: dict[str, Any] | None = None
        self.unusable: str | None = None  # why the file cannot be opened, while it cannot
        #: the copy died of an unexpected error and waits to start again (None: running)
        self.stopped: dict[str, Any] | None = None
        self.restarts = 0
        self.last_crash: dict[str, Any] | None = None  # (the newest such error, kept)
        self._wait = RESTART_FIRST
        self._logged = 0.0

    def status(self) -> dict[str, Any]:
        out = {"path": str(self.path),
               "ok": self.refused is None and self.unusable is None and self.stopped is None,
               "copied": self.copied, "last_hash": self.last_hash, "refused": self.refused,
               "stopped": self.stopped, "restarts": self.restarts,
               "last_crash": self.last_crash}
        if self.unusable is not None:
            out["error"] = self.unusable
        return out

    # ------------------------------------------------------------------ supervision

    async def run(self) -> None:
        """The copy (`_copy`), started again after a back-off whenever it dies of an
        error it does not handle itself; only a cancel ends it."""
        while True:
            try:
                await self._copy()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a dead mirror is said, and restarted
                wait = self._wait
                error = message(f"{type(exc).__name__}: {exc}")[:500]
                self.last_crash = {"error": error, "time": utc_now()}
                self.stopped = {**self.last_crash, "restart_in_s": round(wait, 1)}
                self.metrics.set("killgate_audit_mirror_ok", 0)
                event(log, "audit_mirror_stopped", logging.ERROR, path=str(self.path),
                      error=error, restarts=self.restarts, restart_in_s=round(wait, 1),
                      action="copying stopped by an unexpected error; it starts again by "
                             "itself: if it keeps stopping, report the error")
                await asyncio.sleep(wait)
                self._wait = min(wait * 2, RESTART_MOST)
                self.restarts += 1
                self.metrics.inc("killgate_audit_mirror_restarts_total")
                event(log, "audit_mirror_restarted", logging.WARNING, path=str(self.path),
                      restarts=self.restarts)

    def _went_on(self) -> None:
        """A pass of the copy worked: ok again, and a stop before it is over (the next
        one's back-off starts from the first)."""
        self.metrics.set("killgate_audit_mirror_ok", 1)
        self.stopped, self._wait = None, RESTART_FIRST

    # ------------------------------------------------------------------ checks

    def _problem(self, ev: dict[str, Any]) -> str | None:
        """Why `ev` cannot be appended after the file's last line (None: it can)."""
        if self.last_hash is not None and ev.get("prev_hash") != self.last_hash:
            if ev.get("action") == "state.reseed" and ev.get("anchored_head") == self.last_hash:
                return (f"it is the re-seed of a store that lost the events up to the mirror's "
                        f"last one ({self.last_hash[:16]}…, which it names): the store's trail "
                        f"continues {str(ev.get('prev_hash'))[:16]}… instead (restored from a "
                        "backup, or events cut); this file holds what it lost: keep it, and "
                        "move it aside to mirror the trail from here")
            return (f"its prev_hash {str(ev.get('prev_hash'))[:16]}… is not the mirror's last "
                    f"hash {self.last_hash[:16]}…: the store's trail does not continue the "
                    "mirror (flushed, truncated, reordered or re-sealed)")
        return line_problem(ev, self.keys, self.keyed)

    def _adopt(self, ev: dict[str, Any]) -> None:
        self.last_hash = str(ev["hash"])
        self.keyed = self.keyed or "mac" in ev

    def _refuse(self, problem: str, ev: dict[str, Any] | None) -> None:
        first = self.refused is None
        self.refused = {"problem": problem, "event_id": None if ev is None else ev.get("id"),
                        "time": utc_now()}
        self.metrics.set("killgate_audit_mirror_ok", 0)
        now = time.monotonic()
        if first:
            self.metrics.inc("killgate_audit_mirror_refused_total")
        if first or now - self._logged > 60:
            self._logged = now
            event(log, "audit_mirror_refused", logging.ERROR, path=str(self.path),
                  problem=problem, event_id=self.refused["event_id"],
                  action="copying stopped: compare the mirror with the store, then move the "
                         "mirror file aside to start a new one")
        if first and self.alarm is not None:
            self.alarm({"event": "killgate.audit_mirror_refused", "path": str(self.path),
                        **self.refused})

    # ------------------------------------------------------------------ the copy

    def _open_file(self) -> str | None:
        """Read the file's last line (under the lock, a torn tail cut off first: see
        mirrortail.py): the line the next event must continue."""
        self.last_hash, self.keyed = None, False
        try:
            with locked(self.path):
                ev = verified_end(self.path, self.keys)
        except TailUnverified as exc:
            return str(exc)
        if ev is not None:
            self._adopt(ev)
            if rotated_key(ev, self.keys):
                event(log, "audit_mirror_end_rotated", logging.WARNING, path=str(self.path),
                      kid=str(ev.get("kid"))[:16],
                      detail="the mirror's last line carries a MAC under a key id this "
                             "instance does not hold (the audit key rotated since it was "
                             "written): taken on its hash; the next event must continue it "
                             "and verify, or copying stops")
        return None

    def _ends_with(self, hash_: str | None) -> bool | None:
        """Whether the file's last line is the event `hash_` (None: it cannot be read)."""
        try:
            last = last_line(self.path)
        except OSError:
            return None
        ev = parse_event(last) if last else None
        return ev is not None and ev.get("hash") == hash_

    def _start(self) -> tuple[str | None, str | None]:
        """The saved cursor, and what is wrong with the file's last line (if anything)."""
        cursor = self.cursor_file.read_text().strip() if self.cursor_file.exists() else None
        return cursor, self._open_file()

    async def _copy(self) -> None:
        while True:  # a file that cannot be opened (a missing folder, no permission)
            try:
                cursor, problem = await asyncio.to_thread(self._start)
                break
            except OSError as exc:  # shown, counted and tried again; the task goes on
                self.unusable = f"cannot use the mirror file: {exc.strerror or exc}"
                self.metrics.set("killgate_audit_mirror_ok", 0)
                self.metrics.inc("killgate_audit_mirror_failures_total")
                event(log, "audit_mirror_failed", logging.ERROR, path=str(self.path),
                      error=self.unusable)
                await asyncio.sleep(max(self.poll, 1.0))
        self.unusable = None
        if problem is not None:
            self._refuse(problem, None)
        if cursor is not None and cursor.isdigit() and self.last_hash is not None:
            # a local store's cursor as saved before retention (a bare byte offset): with
            # the hash the file ends with, the store finds its place in an audit file a
            # trim rewrote (the offset alone then named nothing, or half a line)
            cursor = f"{cursor}:{self.last_hash}"
        # A stop between appending a batch and saving the cursor leaves the cursor behind
        # the file's end: events up to the file's last hash are skipped, not copied twice.
        catching_up = self.last_hash is not None
        while True:
            try:
                if self.refused is not None:
                    if not self.path.exists():  # moved aside: start a new mirror
                        self.refused, cursor, catching_up = None, None, False
                        await asyncio.to_thread(self._open_file)
                        self.metrics.set("killgate_audit_mirror_ok", 1)
                    else:
                        await asyncio.sleep(max(self.poll, 1.0))
                        continue
                fetched, new = await self.store.audit_since(cursor, BATCH)
                events = fetched
                if catching_up and fetched:
                    hashes = [e.get("hash") for e in fetched]
                    if fetched[0].get("prev_hash") == self.last_hash:
                        catching_up = False
                    elif self.last_hash in hashes:
                        events = fetched[hashes.index(self.last_hash) + 1:]
                        catching_up = False
                    elif len(fetched) == BATCH or (await self.store.audit_since(new, 1))[0]:
                        # older than the file's end: copied already (more follow: a page is
                        # cut at BATCH events, and a redis one at PAGE_BYTES too; a short
                        # page taken for the end was a false refusal: test_mirror_cut_pages)
                        events = []
                    else:
                        catching_up = False  # the file's end is not in the store: refused below
                good: list[dict[str, Any]] = []
                problem = None
                before = self.last_hash, self.keyed
                for ev in events:
                    problem = self._problem(ev)
                    if problem is not None:
                        break
                    good.append(ev)
                    self._adopt(ev)
                if good:
                    try:
                        done, _ = await asyncio.to_thread(append_after, self.path, good,
                                                          before[0], self.keys)
                    except TailUnverified as exc:
                        self.last_hash, self.keyed = before
                        self._refuse(str(exc), None)
                        continue
                    except OSError:
                        # unless it landed whole (only the fsync failed), the file ends where
                        # it did: the same batch, fetched again, continues it (a disk full for
                        # a moment once raised the tamper alarm and stopped copying for good)
                        if await asyncio.to_thread(self._ends_with, self.last_hash) is False:
                            self.last_hash, self.keyed = before
                        raise
                    if done is None:
                        # a sibling worker appended past this batch: from the file's end
                        # (verified), the same batch fetched again is skipped up to it
                        self.last_hash, self.keyed = before
                        if (problem := await asyncio.to_thread(self._open_file)) is not None:
                            self._refuse(problem, None)
                        catching_up = True
                        continue
                    self.copied += len(done)
                if problem is not None:
                    self._refuse(problem, events[len(good)])
                    continue
                self._went_on()
                if fetched:
                    await asyncio.to_thread(atomic_write, self.cursor_file, (new or "").encode())
                    cursor = new
                    continue  # there may be more
            except (StateError, OSError) as exc:
                self.metrics.inc("killgate_audit_mirror_failures_total")
                event(log, "audit_mirror_failed", logging.WARNING, path=str(self.path),
                      error=str(exc))
            await asyncio.sleep(max(self.poll, 0.25))
