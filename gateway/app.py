"""Composition root of one gateway process: builds every part and runs its lifecycle.

Owns startup and shutdown as named phases with bounded waits (STYLE §10):
startup: config → pools → state sync (bounded) → health round (bounded) → listeners
(the start sequence: `startup.GatewayParts`), then the config watcher;
shutdown: readiness 503 → (shutdown_delay, still serving) → stop accepting → drain
(drain_timeout) → close in reverse. Also owns reload: the checks a new file must pass
and how it is put live.
The composition root: it alone holds the parts and their lifecycles; the builders it
calls for the data plane and the admin side live in gateway/wiring/.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from functools import partial

from gateway.admin.auth import Authenticator
from gateway.configfile import LoadedConfig, state_file_problems
from gateway.control.probes import Kept
from gateway.control.reload import ConfigWatcher
from gateway.errors import ConfigError, Problem
from gateway.forwarded import ClientAddress
from gateway.log import event
from gateway.startup import GatewayParts
from gateway.state.signing import refuse_unreadable_keys
from gateway.wiring.dataplane import trusted

__all__ = ["Gateway"]

log = logging.getLogger("killgate")


def _state_files(loaded: LoadedConfig) -> tuple[object, ...]:
    """The settings `state_file_problems` reads."""
    cfg = loaded.config
    return cfg.state, cfg.server.access_log, cfg.telemetry.access_log.path


def _step_failed(loaded: LoadedConfig, step: str, exc: Exception) -> str:
    event(log, "config_apply_step_failed", logging.ERROR, step=step, config=loaded.digest,
          exc=exc, consequence="the new config is live and the reload applied; this step "
                               "did not complete: a restart runs it in full")
    return step


class Gateway(GatewayParts):
    """One serving process: its parts (`GatewayParts`), reload and shutdown."""

    async def start(self) -> None:
        """The start sequence (`GatewayParts.start`), then the config file's watcher."""
        await super().start()
        cfg = self.loaded.config
        if self.loaded.path is not None:
            self.watcher = ConfigWatcher(self.loaded.path, lambda: self.loaded,
                                         self._apply_config, self._check_reload,
                                         self.metrics, cfg.server.reload_debounce,
                                         cfg.server.watch_config, unchanged=self._same_config)
            await self.watcher.start()
            self._stack.push_async_callback(self.watcher.stop)
            self.holder.listen(self.watcher.on_table)

    # ------------------------------------------------------------------ reload checks

    def _check_reload(self, loaded: LoadedConfig) -> None:
        """What a reload must pass beyond the file's own checks: version identities, state
        keys that can be read (as `killgate check`: the group's restarted workers start on
        what a reload put live), and admin auth settings that can verify tokens (a reload
        that broke them would lock the operators out of kill and rollback while the data
        plane looked fine)."""
        if loaded.digest != self.loaded.digest:
            # (the file that runs is not refused for what it lacks against the state: that
            # changes nothing, and the route says it already: override_unservable)
            self.history.check(loaded, self.loaded)
        if loaded.config.state != self.loaded.config.state:  # (applies at a restart)
            refuse_unreadable_keys(loaded.config.state, loaded.resolve)
        # (so do the state files and the access log: `check`'s refusal of them came at the
        # next start, the reload having gone live)
        if _state_files(loaded) != _state_files(self.loaded) and (
                problems := state_file_problems(loaded)):
            raise ConfigError([Problem(p.path, f"{p.message}; the next start would refuse "
                                               "this file: the running config stays in force")
                               for p in problems])
        auth = loaded.config.admin.auth
        self._checked_auth = None
        running = self.admin_api.callers.auth if self.admin_api is not None else None
        # a key file is read again at every reload: a leaked key rotated in its file (the
        # config unchanged) must stop verifying tokens without a restart; a scoped key's
        # file too (its rotation was read only when the main key also came from a file)
        if running is not None and (auth != running.cfg or auth.hs256_secret_file
                                    or auth.public_key_file
                                    or any(k.hs256_secret_file for k in auth.scoped_keys)):
            checked = Authenticator(auth, loaded.resolve)
            # (refused only where the running settings work: when they are broken too, the
            # admin API answers 503 either way, and a refusal kept every other change of
            # the file, a weight set to 0 included, from going live)
            if checked.problem and running.problem is None:
                raise ConfigError([Problem("admin.auth", f"{checked.problem}; the running "
                                                         "admin auth settings stay in force")])
            if auth != running.cfg or checked.key_digest != running.key_digest:
                self._checked_auth = checked  # handed to the admin API when it applies

    def _same_config(self, loaded: LoadedConfig) -> None:
        """A reload found the config file unchanged: a key its admin auth settings name
        may still have been rotated in its file (the checks read it again)."""
        if self._checked_auth is not None and self.admin_api is not None:
            self.admin_api.reconfigure(self.loaded, self._checked_auth)
        self._checked_auth = None

    # ------------------------------------------------------------------ reload

    def request_reload(self) -> None:
        """SIGHUP: re-read the config file now; a bad file changes nothing."""
        if self.watcher is None:
            return
        task = asyncio.create_task(self.watcher.reload("sighup"))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _apply_config(self, loaded: LoadedConfig) -> None:
        """Swap in a validated config with the least disruption.

        New backends get one health round before the table that routes to them goes live;
        unchanged backends keep their pools and health; pools of removed backends close
        once their in-flight exchanges finish. Overrides and kills are state, not config:
        they survive (latched) until released or lifted.

        All or nothing up to the swap: what can refuse the file runs before it, and a
        failure there puts back what it touched (the health records and probers), so the
        reload is refused with the old config whole in force. After the swap the file is
        live: a step that fails then is logged (`config_apply_step_failed`, an ERROR naming
        it), the others still run, and the reload is applied, the step in its warnings.
        """
        old = self.loaded
        assert self.health is not None and self.upstreams is not None
        kept = self.health.kept()
        step = "admin.trusted_proxies"
        try:
            client_address = trusted(loaded)
            step = "the health round of its backends"
            await self.health.configure(loaded.config)
            # again, against the document as it is now: a rollback latched during the health
            # round (to a version this file drops) would otherwise be undone by the swap
            step = "the check against the recorded history"
            self.history.check(loaded, old)
            step = "building its routing table"
            self.holder.set_config(loaded)  # (no await between the check and the swap)
        except Exception as exc:  # (refused whole; or, swapped, a step after it failed)
            if self.holder.loaded is loaded:  # (swapped: what followed it in set_config)
                failed = [_step_failed(loaded, "the routing table's swap", exc)]
            else:  # (the old records back: ejections of versions it dropped, check streaks)
                await self._health_back(old, kept)
                if isinstance(exc, ConfigError):
                    raise
                event(log, "config_apply_failed", logging.ERROR, step=step,
                      config=loaded.digest, running=old.digest, exc=exc)
                raise ConfigError([Problem("", f"{step} failed ({type(exc).__name__}); the "
                                               "running config stays in force; see the log "
                                               "(config_apply_failed)")]) from exc
        else:
            failed = []
        warnings: list[str] = []

        async def audited() -> None:
            warnings.extend(await self.history.reloaded(old, loaded))

        steps: list[tuple[str, Callable[[], object]]] = [
            ("the data plane's client address rule", partial(self._client_address,
                                                             client_address)),
            ("the admin API's settings", partial(self._admin_settings, loaded)),
            # (the shadow copies' own pools too: a shadow redeployed at another URL, or a
            # primary moved, kept its idle connections and pool for good)
            ("retiring the pools of removed backends", self._retire_pools),
            # (the change's audit queued before the route history's write, which waits for
            # the store up to 6 command timeouts: a crash then lost the change unqueued)
            ("auditing the config change", audited),
            ("recording its versions in the route history", lambda: self.history.record(loaded)),
            *((f"handing it to {getattr(fn, '__module__', '')}."
               f"{getattr(fn, '__qualname__', repr(fn))}", partial(fn, loaded))
              for fn in self.config_applied)]
        for name, run in steps:
            try:
                done = run()
                if inspect.isawaitable(done):
                    await done
            except Exception as exc:  # noqa: BLE001 - the file is live: the others still run
                failed.append(_step_failed(loaded, name, exc))
        if self.watcher is not None:  # (/v1/status: config.warnings)
            self.watcher.outcome.warnings = warnings + [
                f"the config is live, but {name} failed: see the log (config_apply_step_failed)"
                for name in failed]

    async def _health_back(self, old: LoadedConfig, kept: Kept) -> None:
        """A reload refused before its swap: the health records and probers of `old` back."""
        assert self.health is not None
        try:
            await self.health.configure(old.config, kept=kept)
        except Exception as exc:  # noqa: BLE001 - the refusal is what the caller reports
            event(log, "config_restore_failed", logging.ERROR, step="health records",
                  running=old.digest, exc=exc,
                  consequence="health checks may not match the running config until the "
                              "next reload or restart")

    def _client_address(self, rule: ClientAddress | None) -> None:
        if self.proxy is not None:
            self.proxy.client_address = rule

    def _admin_settings(self, loaded: LoadedConfig) -> None:
        if self.admin_api is not None:
            self.admin_api.reconfigure(loaded, self._checked_auth)

    def _retire_pools(self) -> None:
        assert self.upstreams is not None
        origins = {t.origin for p in self.holder.table.routes for t in p.targets.values()}
        self.upstreams.retire_except(origins)
        self.mirror.upstreams.retire_except(origins)

    # ------------------------------------------------------------------ shutdown

    def hurry(self) -> None:
        """Stop at once (a second Ctrl-C): the drain stops waiting, the answers still open
        are cut, then everything closes as at any stop."""
        self._hurry.set()
        if self._listener is not None:
            self._listener.hurry()

    async def shutdown(self, closed: Callable[[], object] | None = None) -> bool:
        """Drain in-flight requests (bounded), then close everything in reverse order;
        `closed` is called then, before the `stopped` line (a group's worker tells its
        supervisor: read past that line, the worker is known to be done)."""
        self.draining = True  # (/readyz: 503 from now on)
        # (`server` applies at a restart, as /v1/status says of a reload that changed it:
        # the stop keeps the settings the process started with, as Envoy's drain flags do)
        started = self.watcher.started if self.watcher is not None else self.loaded
        delay = started.config.server.shutdown_delay
        if delay > 0 and self.started:
            event(log, "phase", phase="unready", serving_s=delay)
            if self._listener is not None:
                self._listener.wind_down()
            # (still serving: load balancers take us out first)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), delay)
        timeout = started.config.server.drain_timeout
        event(log, "phase", phase="draining", inflight=self.inflight.count, timeout_s=timeout)
        # Stop accepting; answers in progress finish (up to drain_timeout), then close.
        drained = True
        if self._listener is not None:
            drained = await self._listener.shutdown(timeout, self.inflight.end_streams)
        drained = await self.inflight.wait_idle(0.1) and drained
        await self._stack.aclose()
        if closed is not None:
            closed()
        event(log, "phase", phase="stopped", drained=drained)
        return drained

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
