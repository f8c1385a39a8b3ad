"""The local store's heartbeats: one file per instance in `<path>.instances/`, each replaced
and removed under that folder's `.lock` (a removal's read and unlink see the same file);
the fleet read from them, stale files cleaned up (and unreadable ones: garbled.py). A base
of `localaux.LocalRecords`; imports only files.py, garbled.py, store.py's Replicas and
buildid.py's check of a published build; blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.buildid import said_build
from gateway.errors import StoreUnavailable
from gateway.state.files import LOCK_WAIT, LockBusy, flock_within, put_in_place, written_aside
from gateway.state.garbled import Garbled, older_than
from gateway.state.store import Replicas

__all__ = ["LEAVE_LOCK_WAIT", "LocalBeats"]

#: how long a stop's `leave` waits for the instances' lock (s): see `_leave`
LEAVE_LOCK_WAIT = 0.1


class LocalBeats:
    """Heartbeats of `LocalStore` (see the module docstring)."""

    #: the store's folder of heartbeat files (LocalStore's)
    instances_dir: Path
    #: the unreadable ones seen (LocalStore's; garbled.py)
    _garbled: Garbled
    #: the heartbeat we wrote last (instance, bytes): the one `leave` may remove (set
    #: under the instances' lock once it is in place, never before)
    _own_beat: tuple[str, bytes] | None = None
    #: how many times `leave` ran: a heartbeat begun before one (its thread still writing
    #: when a stop cancelled its task) is dropped, not put back after the removal
    _leaves = 0

    def _instance_file(self, instance: str) -> Path:
        return self.instances_dir / f"{instance}.json"

    def _beats_lock(self, wait: float = LOCK_WAIT,
                    give_up: Callable[[], bool] | None = None) -> int:
        """The instances' lock (`<path>.instances/.lock`), taken (flock, waiting at most
        `wait` s; LockBusy then): every replace and removal of a heartbeat file happens
        under it, so a removal's read and unlink see the same file. Close the fd to
        release."""
        name = self.instances_dir / ".lock"
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            flock_within(fd, name, wait, give_up)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _beat(self, instance: str, data: bytes, leaves: int) -> None:
        path = self._instance_file(instance)
        # never fsynced: a heartbeat says a live process wrote it lately; a power loss
        # ends that process, so its beat surviving one promises nothing (RESULTS §61)
        tmp = written_aside(path, data, durable=False)
        try:
            # (a stop's `leave` since: not waited for, the stop joins this thread)
            fd = self._beats_lock(give_up=lambda: self._leaves != leaves)
        except BaseException as exc:  # (the lock held past its wait: one file left per beat)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, LockBusy) and self._leaves != leaves:
                return  # given up for a stop's `leave`: dropped, as below (not an error)
            raise
        try:
            if self._leaves != leaves:  # a stop's `leave` ran since: not put back
                os.unlink(tmp)
                return
            put_in_place(tmp, path, durable=False)
            self._own_beat = (instance, data)
        finally:
            os.close(fd)

    async def heartbeat(self, instance: str, applied: int, config: str = "",
                        urls: dict[str, str] | None = None) -> None:
        data = json.dumps({"generation": applied, "seen": time.time(), "pid": os.getpid(),
                           "config": config, "urls": urls or {}}).encode()
        try:
            await asyncio.to_thread(self._beat, instance, data, self._leaves)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write heartbeat: {exc.strerror or exc}") from None

    def _fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        now = time.time()
        out: dict[str, dict[str, Any]] = {}
        stale: list[tuple[Path, bytes]] = []
        for f in self.instances_dir.glob("*.json"):
            try:
                raw = f.read_bytes()
            except OSError:
                continue
            try:
                info = json.loads(raw)
                # (a file we did not write, edited, restored from elsewhere, cut by a power
                # loss: absent, never a 500 for /v1/status and every receipt)
                age = now - float(info.get("seen", 0))
                generation = int(info.get("generation", 0))
                if not math.isfinite(age):
                    raise ValueError(f"its time is {info.get('seen')!r}")
            except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
                # (never written again: its writer's name holds a pid; removed past the
                # horizon of a stale one, by its mtime)
                self._garbled.seen(f, f"{type(exc).__name__}: {exc}"[:200])
                if older_than(f, 10 * lease, now):
                    stale.append((f, raw))
                continue
            if age <= lease:
                urls = info.get("urls")
                out[f.stem] = {"generation": generation,
                               "config": str(info.get("config", "")),
                               "seen_s_ago": round(age, 3),
                               **({k: v for k, v in urls.items() if k in ("data", "admin")
                                   and isinstance(v, str)} if isinstance(urls, dict) else {})}
                if isinstance(urls, dict) and (build := said_build(urls.get("build"))):
                    out[f.stem]["build"] = build
            elif age > 10 * lease:
                stale.append((f, raw))
        if stale:  # (removed only while unchanged: a heartbeat landing now is kept)
            # a cleanup: the read stands whether it happens or not (the lock held by a
            # sibling stopped mid-write made the read wait 2 s, then raise LockBusy, no
            # StateError: /v1/status and the console answered 500); a later read does it
            try:
                fd = self._beats_lock(wait=0.0)
            except OSError:
                return out
            try:
                for f, raw in stale:
                    with contextlib.suppress(OSError):
                        if f.read_bytes() == raw:
                            f.unlink()
                            self._garbled.gone(f)
            finally:
                os.close(fd)
        return out

    async def fleet(self, lease: float) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self._fleet, lease)

    async def live_instances(self, lease: float) -> dict[str, int]:
        return {k: v["generation"] for k, v in (await self.fleet(lease)).items()}

    def _leave(self, instance: str) -> None:
        """Remove the heartbeat file only while it holds what we wrote last: a restarted
        instance of the same name may have written its own since. Under the instances'
        lock, as every heartbeat's rename: one landing between the read and the unlink was
        lost (the restarted instance out of the fleet until its next beat). The lock is
        waited for LEAVE_LOCK_WAIT at most (a rename holds it for microseconds): held longer
        (a sibling stopped or hung mid-write), the heartbeat is left to age out of the fleet
        after its lease, as a crashed instance's (LockBusy). Waited for LOCK_WAIT, a stop
        took 2 s longer: the stop's wait gave up after command_timeout, but the thread went
        on, and asyncio's executor shutdown joined it before the process could exit."""
        path = self._instance_file(instance)
        self._leaves += 1  # (first: a heartbeat of ours not in place yet is dropped anyway)
        try:
            fd = self._beats_lock(wait=LEAVE_LOCK_WAIT)
        except FileNotFoundError:  # (no folder: never opened, nothing written)
            return
        try:
            own = self._own_beat
            if own is None or own[0] != instance:
                return
            try:
                if path.read_bytes() != own[1]:
                    return
            except FileNotFoundError:
                return
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    def stopping(self) -> None:
        self._leaves += 1  # (as a leave does: a heartbeat waiting for the lock gives up)

    async def replicas(self) -> Replicas:
        """(The config refuses min_replicas on a local store: never asked.)"""
        return Replicas(None, "a local store has no replicas")

    async def leave(self, instance: str) -> None:
        try:
            await asyncio.to_thread(self._leave, instance)
        except LockBusy:
            raise StoreUnavailable(
                f"the instances' lock was held for over {LEAVE_LOCK_WAIT:g} s (a sibling "
                "stopped or hung mid-write?): the heartbeat is left to age out after its "
                "lease") from None
        except OSError as exc:  # (a folder it cannot use: the stop goes on)
            raise StoreUnavailable(f"cannot remove the heartbeat: {exc.strerror or exc}") \
                from None
