"""Config hot reload: watch the file, debounce, validate in full, swap one reference.

Owns the watcher (watchfiles/inotify on the file's folder, so atomic renames and
ConfigMap symlink swaps are seen, plus a 1 s stat poll as the fallback), the debounce (a
reload, by the watcher or SIGHUP, reads the file once it has stopped changing for
`server.reload_debounce`; the last write wins), and the outcome record shown by
/v1/status. A file still being written (configsettle.py: open for writing, or changed
during the read) is neither applied nor refused: it is read again after the next quiet
debounce, until its writer is done. A reload parses and validates the
whole file, checks version identities against the recorded history, prepares health
checks for new backends, and only then swaps the routing table; any failure leaves the
running config in place, logged once per distinct error and counted. A refused file is
read again by itself (after 5 s, then at doubling intervals up to a minute, while the
watcher runs and the refusal stands): what refused it may not be the file (a key file its
admin auth names, mounted apart and written after it, a read failing for want of file
descriptors), and nothing else would read the unchanged file again: the instance kept the
old config, its siblings the new one, until someone sent SIGHUP.
A mounted ConfigMap is followed through its `..data` link, never into the timestamped
folder behind it (the next update deletes that folder): only the atomic swap of the link
is seen as a change, so a folder the kubelet is still writing is never read.
A reload is taken back when an override latched after it went live needs a version it
dropped that the config before it has (control/reloadback.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.configfile import LoadedConfig, load_config, restart_changes
from gateway.configsettle import Ident, path_ident, read_settled
from gateway.control.reloadback import TakeBack
from gateway.control.reloadrefused import RETRY_FIRST_S, RETRY_MAX_S, Refusals, ReloadOutcome
from gateway.domain.audit import utc_now
from gateway.domain.diff import config_dict, diff_configs
from gateway.domain.statedoc import StateDoc
from gateway.errors import ConfigError, ConfigUnsettled, Problem
from gateway.log import event
from gateway.telemetry.metrics import Metrics

__all__ = ["ConfigWatcher", "ReloadOutcome"]  # (ReloadOutcome: control/reloadrefused.py)

log = logging.getLogger("killgate.reload")

Apply = Callable[[LoadedConfig], Awaitable[None]]



class ConfigWatcher(Refusals, TakeBack):
    def __init__(self, path: Path, current: Callable[[], LoadedConfig], apply: Apply,
                 check: Callable[[LoadedConfig], None], metrics: Metrics,
                 debounce: float = 0.2, watch: bool = True,
                 unchanged: Callable[[LoadedConfig], None] | None = None) -> None:
        self.watch = watch
        self.unchanged = unchanged  # called for a file that checks and equals the running one
        self.path = path
        self.current = current
        self.apply = apply
        self.check = check
        self.metrics = metrics
        self.debounce = debounce
        self.outcome = ReloadOutcome(current())
        #: the config whose restart-only settings are in force (the one the process started on)
        self.started = current()
        # (a group's worker started on a reload's bytes: waiting as its siblings' do)
        self.outcome.restart_required = list(self.started.restart_pending)
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._seen: Ident | None = None
        self._retrying: set[asyncio.Task[Any]] = set()  # reloads waiting for a writer
        self._held: set[str] = set()  # the triggers of those (one waiting reload each)
        #: per trigger, the reload that has not read the file yet: a SIGHUP storm is one
        #: read, not one each (that reload reads the newest file)
        self._queued: dict[str, asyncio.Task[Any] | None] = {}
        self.retry_first, self.retry_max = RETRY_FIRST_S, RETRY_MAX_S
        self._retry: asyncio.Task[None] | None = None  # reads a refused file again
        #: the config the last reload replaced (None after a start or a take-back), and
        #: the state document the routing table last showed
        self.previous: LoadedConfig | None = None
        self._doc: StateDoc | None = None

    async def start(self) -> None:
        if not self.watch:
            return  # SIGHUP only
        self._seen = path_ident(self.path)
        # The file may have changed between loading it and watching it: check once.
        self.poke()
        self._tasks = [asyncio.create_task(self._debouncer(), name="config-debounce"),
                       asyncio.create_task(self._poll(), name="config-poll"),
                       asyncio.create_task(self._watch(), name="config-watch")]

    async def stop(self) -> None:
        """Cancel the watcher's tasks, again until each has ended: Python 3.11's
        `asyncio.wait_for` (the config record's write, under a reload) can lose a
        cancellation landing as its call finishes; the debouncer then waited for the next
        change for good, and so did a stop that gathered it (tests/test_config_watcher.py)."""
        self._stop.set()
        self._dirty.set()  # (the debouncer wakes, sees the stop, and ends)
        pending = {t for t in (*self._tasks, *self._retrying, *filter(None, [self._retry]))
                   if t is not asyncio.current_task()}
        while pending:
            for t in pending:
                t.cancel()
            done, pending = await asyncio.wait(pending, timeout=1.0)
            for t in done:  # (retrieved: never "exception was never retrieved")
                if not t.cancelled():
                    t.exception()

    def poke(self) -> None:
        """Something may have changed (SIGHUP, a watcher event, the poll)."""
        self._dirty.set()

    def on_table(self, old: Any, new: Any) -> None:
        """The routing table changed (a `TableHolder` listener). A refused reload is tried
        again once the state it was checked against changes (a latched override, a
        recorded identity): after `release`, the file on disk governs the route, not the
        one that ran before the refusal, though the file itself did not change."""
        a, b = old.doc, new.doc
        self._doc = b
        if self._stop.is_set() or (a.overrides == b.overrides
                                   and a.identities == b.identities):
            return
        coro: Coroutine[Any, Any, object]
        if self.previous is not None and self._takes_back(self.previous):
            coro = self._take_back(self.previous)
        elif self.outcome.last_error is not None:
            coro = self.reload("state")
        else:
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._retrying.add(task)  # (cancelled by stop)
        task.add_done_callback(self._retrying.discard)

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
            now = path_ident(self.path)
            if now != self._seen:
                self._seen = now
                self.poke()

    async def _quiet(self) -> Ident | None:
        """Wait until the file's identity stays the same for one debounce; that identity
        (None: no file)."""
        last = path_ident(self.path)
        while True:
            await asyncio.sleep(self.debounce)
            now = path_ident(self.path)
            if now == last:
                return now
            last = now

    async def _debouncer(self) -> None:
        while not self._stop.is_set():
            await self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()  # (a poke from now on is one more pass after this one)
            await self.reload("file")

    async def reload(self, trigger: str) -> bool:
        """Read the file once it has been quiet for a debounce, validate and apply it;
        True when a new config went live. A file still being written is read again after
        the next quiet debounce, for as long as the watcher runs. An error no check
        foresaw is logged and counted as a refused reload: it must not end the watcher's
        task (no reload again until a restart) or escape a SIGHUP's task."""
        waiting: str | None = None
        me = asyncio.current_task()
        if trigger in self._held or trigger in self._queued:
            return False  # one such reload waits already and reads the newest file
        self._queued[trigger] = me
        try:
            while not self._stop.is_set():
                quiet = await self._quiet()
                try:
                    return await self._reload(trigger, quiet)
                except ConfigUnsettled as exc:
                    if exc.reason != waiting:  # once per reason, not every debounce
                        self.outcome.waiting = f"{exc.reason} (since {utc_now()})"
                        self.metrics.set("killgate_config_reload_waiting", 1)
                        event(log, "config_not_settled", logging.WARNING, trigger=trigger,
                              path=str(self.path), reason=exc.reason,
                              action="read again once it is quiet; write the file to a "
                                     "temporary name, then rename it over the config")
                    if waiting is None:
                        self._held.add(trigger)
                    waiting = exc.reason
                    if me is not None:
                        self._retrying.add(me)
            return False
        except Exception as exc:  # noqa: BLE001 - see above
            event(log, "config_reload_failed", logging.ERROR, trigger=trigger,
                  path=str(self.path), error=repr(exc)[:300])
            self._reject(ConfigError([Problem("", f"{self.path}: could not be read or "
                                                  f"applied ({type(exc).__name__}); see the "
                                                  "log")]), trigger)
            return False
        finally:
            if self._queued.get(trigger, me) is me:
                self._queued.pop(trigger, None)
            self._retrying.discard(me)
            if waiting is not None:
                self._held.discard(trigger)
                self.outcome.waiting = None
                self.metrics.set("killgate_config_reload_waiting", 0)

    async def _reload(self, trigger: str, quiet: Ident | None) -> bool:
        async with self._lock:
            if self._queued.get(trigger, None) is asyncio.current_task():
                del self._queued[trigger]  # a trigger from now on reads after this read
            if self._stop.is_set():
                return False
            self.outcome.last_attempt = utc_now()
            try:
                loaded = await asyncio.to_thread(self._read, quiet)
                self.check(loaded)
            except ConfigError as exc:
                if path_ident(self.path) != quiet:
                    # the file changed meanwhile (a ConfigMap swap deleting the folder we
                    # were reading, a writer mid-way): not a broken file, just not
                    # settled yet; read it again once it is
                    raise ConfigUnsettled("changed while it was read") from None
                self._reject(exc, trigger)
                return False
            if loaded.digest == self.current().digest:
                if self.unchanged is not None:
                    self.unchanged(loaded)  # (a key file the checks read again, say)
                if self.outcome.last_error is not None:
                    event(log, "config_error_cleared", trigger=trigger)
                self._cleared()
                return False
            old, was = self.current(), self.previous
            self.previous = old  # (from the swap on: a rollback may come before `apply` ends)
            try:
                await self.apply(loaded)
            except ConfigError as exc:  # (checked again at the swap: refused, nothing changed)
                self.previous = was
                self._reject(exc, trigger)
                return False
            self.outcome.loaded_digest = loaded.digest
            self.outcome.loaded_at = utc_now()
            self._cleared()
            # against what the process runs with, not the last reload: a route-only change
            # after a server change still waits for the restart
            self.outcome.restart_required = restart_changes(self.started.config, loaded.config)
            self.metrics.inc("killgate_config_reloads_total")
            event(log, "config_reloaded", trigger=trigger, old=old.digest, new=loaded.digest,
                  changes=diff_configs(config_dict(old.config), config_dict(loaded.config)),
                  restart_required=self.outcome.restart_required)
            return True

    def _read(self, quiet: Ident | None) -> LoadedConfig:
        """The file as it is, once its writer is done (in a thread: it reads and parses)."""
        return load_config(self.path, read_settled(self.path, quiet)[0])
