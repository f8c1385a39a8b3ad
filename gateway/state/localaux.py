"""The local store's records beside its document: idempotency records
(`<path>.idempotency.json`, changed under the commit lock, `<path>.lock`, which this
module opens for the document and the audit file too: `_locked`) and analysis counts
(`<path>.stats/<route>/<instance>.json`; one a power loss garbled: garbled.py).
Heartbeats: localbeats.py, its base. A base of `local.LocalStore`, which owns the paths
these use; blocking file work runs in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any, BinaryIO

from gateway.errors import StoreUnavailable
from gateway.state.files import atomic_write
from gateway.state.garbled import Garbled
from gateway.state.localbeats import LocalBeats

__all__ = ["LocalRecords"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}")
#: an unreadable counts file older than this (s, by its mtime) is removed by a read: the
#: console's view removes a readable one its instance left after three 5-minute windows
#: (control/traffic.py GONE_AFTER); a live writer rewrites its own every few seconds
GARBLED_STATS_AFTER = 900.0


class LocalRecords(LocalBeats):
    """The commit lock, idempotency records and analysis counts of `LocalStore` (see the
    module docstring)."""

    #: (unsigned heartbeats: none is ever refused for another key)
    other_key_at: float | None = None
    flooded = 0  # (a file nobody else writes: never flooded)
    stats_flooded: dict[str, int] | None = None
    # the store's paths (LocalStore's)
    path: Path
    lock_path: Path
    _garbled: Garbled

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
            except (FileNotFoundError, ValueError, RecursionError):
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
            # volatile (never fsynced): a live process's counts, published again every
            # few seconds; as the Redis store's, no promise past a power loss (RESULTS §61)
            await asyncio.to_thread(atomic_write, self._stats_dir(route) / f"{instance}.json",
                                    json.dumps(blob).encode(), None, False)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write counts: {exc.strerror}") from None

    def _read_stats(self, route: str) -> list[dict[str, Any]]:
        out = []
        for f in self._stats_dir(route).glob("*.json"):
            try:
                st = os.stat(f)
                blob = json.loads(f.read_bytes())
                if not isinstance(blob, dict):
                    raise ValueError(f"a JSON {type(blob).__name__}, not an object")
            except OSError:
                continue
            except (ValueError, RecursionError) as exc:  # (a power loss's leftover: garbled.py)
                self._garbled.seen(f, f"{type(exc).__name__}: {exc}"[:200])
                if time.time() - st.st_mtime > GARBLED_STATS_AFTER:
                    with contextlib.suppress(OSError):
                        if os.stat(f).st_ino == st.st_ino:  # (not replaced since)
                            f.unlink()
                            self._garbled.gone(f)
                continue
            out.append(blob)
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
