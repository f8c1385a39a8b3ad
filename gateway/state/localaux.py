"""The local store's side stores: heartbeats (one file per instance in `<path>.instances/`),
idempotency records (`<path>.idempotency.json`, changed under the store's `flock`) and
analysis counts (`<path>.stats/<route>/<instance>.json`). A base of `local.LocalStore`,
which owns the paths these use; blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from gateway.errors import StoreUnavailable
from gateway.state.files import (
    LOCK_WAIT,
    LockBusy,
    atomic_write,
    flock_within,
    put_in_place,
    written_aside,
)

__all__ = ["LocalRecords"]

#: how long a stop's `leave` waits for the instances' lock (s): see `_leave`
LEAVE_LOCK_WAIT = 0.1

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}")


class LocalRecords:
    """Heartbeats, idempotency records and analysis counts of `LocalStore` (see the module
    docstring)."""

    #: (unsigned heartbeats: none is ever refused for another key)
    other_key_at: float | None = None
    # the store's paths (LocalStore's)
    path: Path
    lock_path: Path
    instances_dir: Path
    #: the heartbeat we wrote last (instance, bytes): the one `leave` may remove (set
    #: under the instances' lock once it is in place, never before)
    _own_beat: tuple[str, bytes] | None = None
    #: how many times `leave` ran: a heartbeat begun before one (its thread still writing
    #: when a stop cancelled its task) is dropped, not put back after the removal
    _leaves = 0

    # ------------------------------------------------------------------ instances

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
        tmp = written_aside(path, data)  # (the fsync outside the lock)
        try:
            # (a stop's `leave` since: not waited for, the stop joins this thread)
            fd = self._beats_lock(give_up=lambda: self._leaves != leaves)
        except BaseException:  # (the lock held past its wait: one file left per beat)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            if self._leaves != leaves:  # a stop's `leave` ran since: not put back
                os.unlink(tmp)
                return
            put_in_place(tmp, path)
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
                info = json.loads(raw := f.read_bytes())
                # (a file we did not write, edited, restored from elsewhere: skipped, never
                # a 500 for /v1/status and every receipt)
                age = now - float(info.get("seen", 0))
                generation = int(info.get("generation", 0))
            except (OSError, ValueError, TypeError, AttributeError, OverflowError):
                continue
            if not math.isfinite(age):
                continue
            if age <= lease:
                urls = info.get("urls")
                out[f.stem] = {"generation": generation,
                               "config": str(info.get("config", "")),
                               "seen_s_ago": round(age, 3),
                               **({k: v for k, v in urls.items() if k in ("data", "admin")
                                   and isinstance(v, str)} if isinstance(urls, dict) else {})}
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

    def _locked(self, how: int) -> BinaryIO:
        """The commit lock file, open and locked (`how`: fcntl.LOCK_EX or LOCK_SH); a
        folder this process cannot write is StoreUnavailable, saying so (not a traceback
        that ended the process)."""
        try:
            lock = open(self.lock_path, "a+b")  # noqa: SIM115 - the caller's `with`
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {self.lock_path}: {exc.strerror}") from None
        try:
            fcntl.flock(lock, how)
        except OSError as exc:  # (ENOLCK: a network file system without locks)
            lock.close()
            raise StoreUnavailable(f"cannot lock {self.lock_path}: {exc.strerror}") from None
        return lock

    # ------------------------------------------------------------------ idempotency

    def _idem(self, key: str, record: dict[str, Any] | None, ttl: float,
              mode: str, mine: dict[str, Any] | None = None) -> dict[str, Any] | None:
        path = self.path.with_name(self.path.name + ".idempotency.json")
        try:
            return self._idem_locked(path, key, record, ttl, mode, mine)
        except OSError as exc:  # (a full disk, a folder made read-only since the start)
            raise StoreUnavailable(f"cannot use {path}: {exc.strerror}") from None

    def _idem_locked(self, path: Path, key: str, record: dict[str, Any] | None, ttl: float,
                     mode: str, mine: dict[str, Any] | None) -> dict[str, Any] | None:
        with self._locked(fcntl.LOCK_EX):
            try:
                table = json.loads(path.read_bytes())
            except (FileNotFoundError, ValueError):
                table = {}
            now = time.time()
            # (records that are not ours, or a table that is not, are dropped: a 500 for
            # every write with an Idempotency-Key, killgate kill's, was the alternative)
            table = {k: v for k, v in (table.items() if isinstance(table, dict) else ())
                     if isinstance(v, dict) and isinstance(v.get("expires"), (int, float))
                     and v["expires"] > now and isinstance(v.get("record"), dict)}
            existing = table.get(key)
            if mode == "claim" and existing is not None:
                return dict(existing["record"])
            if mode in ("renew", "release_mine") and (existing is None
                                                       or existing["record"] != record):
                return {}  # (another's record now, or none: left alone)
            if mode == "take" and (existing is None or existing["record"] != mine):
                return {}  # (another's now: left alone)
            if mode == "settle" and (existing is None or record is None or
                                     existing["record"].get("holder") != record.get("holder")):
                return {}  # (a retry's claim or answer now: kept)
            if mode in ("release", "release_mine"):
                table.pop(key, None)
            else:
                table[key] = {"record": record, "expires": now + ttl}
            atomic_write(path, json.dumps(table).encode())
            return None

    async def idem_claim(self, key: str, record: dict[str, Any], ttl: float) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._idem, key, record, ttl, "claim")

    async def idem_set(self, key: str, record: dict[str, Any], ttl: float) -> None:
        await asyncio.to_thread(self._idem, key, record, ttl, "set")

    async def idem_take(self, key: str, mine: dict[str, Any], record: dict[str, Any],
                        ttl: float) -> bool:
        return await asyncio.to_thread(self._idem, key, record, ttl, "take", mine) is None

    async def idem_renew(self, key: str, record: dict[str, Any], ttl: float) -> bool:
        return await asyncio.to_thread(self._idem, key, record, ttl, "renew") is None

    async def idem_settle(self, key: str, record: dict[str, Any], ttl: float) -> bool:
        return await asyncio.to_thread(self._idem, key, record, ttl, "settle") is None

    async def idem_release(self, key: str, mine: dict[str, Any] | None = None) -> None:
        await asyncio.to_thread(self._idem, key, mine, 0,
                                "release" if mine is None else "release_mine")

    # ------------------------------------------------------------------ analysis counts

    def _stats_dir(self, route: str) -> Path:
        return self.path.with_name(self.path.name + ".stats") / route

    async def put_stats(self, route: str, instance: str, blob: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(atomic_write, self._stats_dir(route) / f"{instance}.json",
                                    json.dumps(blob).encode())
        except OSError as exc:
            raise StoreUnavailable(f"cannot write counts: {exc.strerror}") from None

    def _read_stats(self, route: str) -> list[dict[str, Any]]:
        out = []
        for f in self._stats_dir(route).glob("*.json"):
            try:
                out.append(json.loads(f.read_bytes()))
            except (OSError, ValueError):
                continue
        return out

    async def get_stats(self, route: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._read_stats, route)

    def _drop_stats(self, route: str, instances: list[str]) -> None:
        for name in instances:
            if _SAFE_NAME.fullmatch(name):  # a file name of ours, never a path
                (self._stats_dir(route) / f"{name}.json").unlink(missing_ok=True)

    async def drop_stats(self, route: str, instances: list[str]) -> None:
        try:
            await asyncio.to_thread(self._drop_stats, route, instances)
        except OSError as exc:
            raise StoreUnavailable(f"cannot remove counts: {exc.strerror}") from None
