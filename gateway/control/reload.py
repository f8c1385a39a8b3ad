"""Config hot reload: watch the file, debounce, validate in full, swap one reference.

Owns the watcher (watchfiles/inotify on the file's folder, so atomic renames and
ConfigMap symlink swaps are seen, plus a 1 s stat poll as the fallback), the debounce (a
reload happens once the file has stopped changing for `server.reload_debounce`; the last
write wins), and the outcome record shown by /v1/status. A reload parses and validates the
whole file, checks version identities against the recorded history, prepares health
checks for new backends, and only then swaps the routing table; any failure leaves the
running config in place, logged once per distinct error and counted.
A mounted ConfigMap is followed through its `..data` link, never into the timestamped
folder behind it (the next update deletes that folder): only the atomic swap of the link
is seen as a change, so a folder the kubelet is still writing is never read.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.configfile import LoadedConfig, load_config
from gateway.domain.audit import utc_now
from gateway.domain.diff import config_dict, diff_configs
from gateway.errors import ConfigError, Problem
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["ConfigWatcher", "ReloadOutcome", "summarize_changes"]

log = logging.getLogger("killgate.reload")

Apply = Callable[[LoadedConfig], Awaitable[None]]


class ReloadOutcome:
    """What /v1/status shows under `config`."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.loaded_digest = loaded.digest
        self.loaded_at = utc_now()
        self.last_error: str | None = None
        self.last_problems: list[str] = []
        self.last_attempt: str | None = None
        self.restart_required: list[str] = []


def _ident(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class ConfigWatcher:
    def __init__(self, path: Path, current: Callable[[], LoadedConfig], apply: Apply,
                 check: Callable[[LoadedConfig], None], metrics: Metrics,
                 debounce: float = 0.2, watch: bool = True) -> None:
        self.watch = watch
        self.path = path
        self.current = current
        self.apply = apply
        self.check = check
        self.metrics = metrics
        self.debounce = debounce
        self.outcome = ReloadOutcome(current())
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._seen: tuple[int, int, int] | None = None

    async def start(self) -> None:
        if not self.watch:
            return  # SIGHUP only
        self._seen = _ident(self.path)
        # The file may have changed between loading it and watching it: check once.
        self.poke()
        self._tasks = [asyncio.create_task(self._debouncer(), name="config-debounce"),
                       asyncio.create_task(self._poll(), name="config-poll"),
                       asyncio.create_task(self._watch(), name="config-watch")]

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def poke(self) -> None:
        """Something may have changed (SIGHUP, a watcher event, the poll)."""
        self._dirty.set()

    async def _watch(self) -> None:
        try:
            from watchfiles import awatch
        except ImportError:  # pragma: no cover - watchfiles is a dependency
            return
        name = self.path.name
        try:
            async for changes in awatch(self.path.parent, stop_event=self._stop, debounce=50,
                                        recursive=False, watch_filter=None,
                                        ignore_permission_denied=True):
                if any(Path(p).name == name or Path(p).name.startswith("..") for _, p in changes):
                    self.poke()
        except (OSError, RuntimeError) as exc:
            event(log, "config_watch_unavailable", logging.WARNING, error=str(exc),
                  fallback="1s stat poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = _ident(self.path)
            if now != self._seen:
                self._seen = now
                self.poke()

    async def _debouncer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            # wait until the file stops changing: a writer mid-way is not a config
            last = _ident(self.path)
            while True:
                await asyncio.sleep(self.debounce)
                now = _ident(self.path)
                if now == last and not self._dirty.is_set():
                    break
                last = now
                self._dirty.clear()
            await self.reload("file")

    async def reload(self, trigger: str) -> bool:
        """Load, validate and apply the file; True when a new config went live. An error
        no check foresaw is logged and counted as a refused reload: it must not end the
        watcher's task (no reload again until a restart) or escape a SIGHUP's task."""
        try:
            return await self._reload(trigger)
        except Exception as exc:  # noqa: BLE001 - see above
            event(log, "config_reload_failed", logging.ERROR, trigger=trigger,
                  path=str(self.path), error=repr(exc)[:300])
            self._reject(ConfigError([Problem("", f"{self.path}: could not be read or "
                                                  f"applied ({type(exc).__name__}); see the "
                                                  "log")]), trigger)
            return False

    async def _reload(self, trigger: str) -> bool:
        async with self._lock:
            self.outcome.last_attempt = utc_now()
            before = _ident(self.path)
            try:
                loaded = await asyncio.to_thread(load_config, self.path)
                self.check(loaded)
            except ConfigError as exc:
                if before is not None and _ident(self.path) != before:
                    # the file changed while we read it (a ConfigMap swap deleting the
                    # folder we were reading, a writer mid-way): not a broken file, just
                    # not settled yet; read it again once it is
                    self.poke()
                    return False
                self._reject(exc, trigger)
                return False
            if loaded.digest == self.current().digest:
                if self.outcome.last_error is not None:
                    event(log, "config_error_cleared", trigger=trigger)
                self.outcome.last_error = None
                self.outcome.last_problems = []
                return False
            old = self.current()
            await self.apply(loaded)
            self.outcome.loaded_digest = loaded.digest
            self.outcome.loaded_at = utc_now()
            self.outcome.last_error = None
            self.outcome.last_problems = []
            self.outcome.restart_required = _needs_restart(old, loaded)
            self.metrics.inc("killgate_config_reloads_total")
            event(log, "config_reloaded", trigger=trigger, old=old.digest, new=loaded.digest,
                  changes=summarize_changes(old, loaded),
                  restart_required=self.outcome.restart_required)
            return True

    def _reject(self, exc: ConfigError, trigger: str) -> None:
        problems = [str(p) for p in exc.problems]
        self.metrics.inc("killgate_config_reload_rejected_total")
        if problems != self.outcome.last_problems:  # log each distinct error once
            event(log, "config_rejected", logging.ERROR, trigger=trigger, path=str(self.path),
                  problems=problems, running=self.current().digest)
        self.outcome.last_problems = problems
        self.outcome.last_error = "; ".join(problems)


def _needs_restart(old: LoadedConfig, new: LoadedConfig) -> list[str]:
    """Settings a reload cannot change in a running process (they apply at restart)."""
    a, b = old.config, new.config
    out = []
    for name in ("listen", "state", "server", "log", "telemetry"):
        if getattr(a, name) != getattr(b, name):
            out.append(name)
    if a.admin.listen != b.admin.listen:
        out.append("admin.listen")
    return out


def summarize_changes(old: LoadedConfig, new: LoadedConfig) -> dict[str, Any]:
    """Per route: added/removed routes and versions, weight and setting changes."""
    return diff_configs(config_dict(old.config), config_dict(new.config))
