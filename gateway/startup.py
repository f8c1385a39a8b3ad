"""The parts of one gateway process, built and started in order (the start sequence).

Owns the startup phases with bounded waits (STYLE §10): config → telemetry and pools →
state sync (bounded) → control parts (health round, bounded) → data plane and admin side
→ listeners; each part is pushed on one exit stack that closes them in reverse; what the
parts report (readiness, gauges, /metrics) is partsreport.py's, its base. The
composition root (`app.Gateway`) adds reload, the config watcher and shutdown on top.
Below `app`, above `wiring`: never imports `app` or `server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.admin.api import AdminApi
from gateway.admin.auth import Authenticator
from gateway.admin.drillsupport import export_metrics, load_drill_key
from gateway.admin.status import StatusBuilder
from gateway.buildid import build_id
from gateway.configfile import LoadedConfig
from gateway.control.alerts import AlertReceiver
from gateway.control.confighistory import ConfigHistory
from gateway.control.drillwatch import OverdueDrills
from gateway.control.events import EventSink
from gateway.control.probes import HealthMonitor
from gateway.control.reload import ConfigWatcher
from gateway.control.rollout import RolloutDriver
from gateway.control.shadow import ShadowResults
from gateway.control.table import TableHolder
from gateway.control.traffic import LiveTraffic
from gateway.dataplane.clock import Clock
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.listener import Listener
from gateway.dataplane.proxy import Proxy
from gateway.dataplane.shadow import Mirror
from gateway.dataplane.upstream import Upstreams
from gateway.errors import ConfigError, StateError
from gateway.log import event
from gateway.partsreport import PartsReport
from gateway.sockets import bind_socket, format_addr, listen_url
from gateway.state import make_sync
from gateway.state.sync import Sync
from gateway.tasks import Part, cancel
from gateway.telemetry.accesslog import AccessLog
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otelenv import resolve as otel_settings
from gateway.telemetry.otlpmetrics import OtlpMetrics
from gateway.telemetry.record import combine
from gateway.telemetry.requests import RequestStats
from gateway.telemetry.shadowmetrics import ShadowSeries
from gateway.telemetry.tracing import Tracing
from gateway.wiring.admin import admin_side
from gateway.wiring.dataplane import Outcomes, data_plane

__all__ = ["GatewayParts"]

log = logging.getLogger("killgate")


DATA_BACKLOG = 4096
APPROVAL_SWEEP = 0.5  # seconds between looks for expired approval requests (local, cheap)
ADMIN_BACKLOG = 1024  # (aiohttp: 128) a burst of held connections must not queue operators


class GatewayParts(PartsReport):
    """One serving process's parts: data plane + admin listener + background tasks."""

    def __init__(self, loaded: LoadedConfig, instance: str, reuse_port: bool = False,
                 ports: tuple[int | None, int | None] = (None, None)) -> None:
        self.instance = instance
        self.reuse_port = reuse_port
        self.ports = ports
        self.metrics = Metrics()
        # which killgate each instance runs (an upgrade's progress, fleet-wide)
        # (the release, and the build: every commit so far said 0.1.0, old and new alike)
        self.metrics.set("killgate_build_info", 1.0, (__version__, build_id()),
                         ("killgate_version", "build"))
        self.tracing = Tracing(None)
        # closed (503 state_unknown) until the state sync has loaded the kill state once
        self.holder = TableHolder(loaded, state_unknown=True)
        self.requests = RequestStats(loaded.config.telemetry.buckets, self._intended_split)
        self.metrics.source(self.requests)
        self.inflight = Inflight()
        # read whenever the series are (a scrape, a worker's snapshot, an OTLP export)
        self.metrics.collector(self._read_gauges)
        self.clock = Clock()  # the data plane's shared clock reading (dataplane/clock.py)
        self.draining = False
        self.started = False
        self._hurry = asyncio.Event()  # a second Ctrl-C: stop waiting for the drain (app.py)
        self.watcher: ConfigWatcher | None = None
        #: called with each config a reload put live (a worker shares its bytes)
        self.config_applied: list[Callable[[LoadedConfig], None]] = []
        #: a worker of a group: the config file itself, to start on when the state refuses
        #: the group's copy (serving.py; None: the refusal ends the start)
        self.start_fallback: Callable[[LoadedConfig, ConfigError], LoadedConfig | None] \
            | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self._stack = AsyncExitStack()
        self.upstreams: Upstreams | None = None
        self.sync: Sync | None = None
        self.health: HealthMonitor | None = None
        self.rollout: RolloutDriver | None = None
        self.admin_api: AdminApi | None = None
        self._checked_auth: Authenticator | None = None  # by the last reload's checks
        self.data_addr: tuple[str, int] | None = None
        self.admin_addr: tuple[str, int] | None = None
        self._listener: Listener | None = None
        self._admin_runner: web.AppRunner | None = None
        self.proxy: Proxy | None = None

    # ------------------------------------------------------------------ startup

    async def _started(self, part: Part) -> None:
        """Start a part; it stops with the gateway (in the reverse order of starting). A
        start cut short (a SIGTERM before start-up finished) stops what it opened."""
        try:
            await part.start()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await part.stop()
            raise
        self._stack.push_async_callback(part.stop)

    async def start(self) -> None:
        cfg = self.loaded.config
        event(log, "phase", phase="config", digest=self.loaded.digest,
              routes=len(cfg.routes), instance=self.instance)
        # first in, last out: spans of the final requests and admin calls still export
        self.tracing = await self._stack.enter_async_context(Tracing(
            otel_settings(cfg.telemetry, os.environ), self.instance, __version__))
        self.tracing.register(self.metrics)
        otlp = await self._stack.enter_async_context(OtlpMetrics(
            self.tracing.settings, self.metrics.registry.collect, self.instance, __version__))
        otlp.register(self.metrics)
        self.upstreams = Upstreams(cfg.server.max_connections_per_backend,
                                   cfg.server.max_pending_per_backend, self.clock,
                                   cfg.server.backend_idle_timeout)
        self._stack.push_async_callback(self.upstreams.close)
        # shadow copies: their own pools, closed after the data plane
        self.mirror = Mirror(idle_timeout=cfg.server.backend_idle_timeout)
        self._stack.push_async_callback(self.mirror.close)
        self.metrics.source(ShadowSeries(self.mirror.counts.live,
                                         lambda: self.mirror.inflight))
        self.holder.listen(self.inflight.on_table)  # a new kill cuts what it covers

        self.sync = make_sync(self.loaded, self.holder, self.metrics, self.instance,
                              alarm=self._mirror_alarm)
        self.events = EventSink(self.metrics, lambda: self.loaded.config, self.loaded.resolve,
                                self.instance)
        self.sync.committed.append(self.events.committed)  # every audited change, posted
        self.config_applied.append(self.events.check_secrets)  # (a reload's webhooks too)
        await self._started(self.events)
        await self._started(self.sync)
        event(log, "phase", phase="state", backend=cfg.state.backend, ready=self.sync.ready,
              generation=self.holder.doc.generation)
        self.history = ConfigHistory(self.sync, lambda: self.holder.doc, self.instance)
        # (before the store closes: a reload's audit still running is given that long)
        self._stack.push_async_callback(self.history.stop, cfg.state.command_timeout * 6)
        self._check_at_start()
        await self.history.begin(self.loaded)
        await self.history.record(self.loaded)
        self.history.warn_unrouted(None, self.loaded)
        self.holder.listen(self.history.kills_changed)  # (and those the state brings later)
        self.alert_receiver = AlertReceiver(self.sync, self.sync.store, lambda: self.loaded.config,
                                            lambda: self.holder.doc, self.metrics)
        self.alert_receiver.local = self.sync.local  # (an alert's kill in a store outage)

        self.health = HealthMonitor(self.holder, self.metrics)
        await self._started(self.health)
        self.shadow = ShadowResults(self.mirror, self.sync.store, self.instance,
                                    lambda: self.loaded.config)
        await self._started(self.shadow)
        self.rollout = RolloutDriver(self.holder, self.sync, self.instance,
                                     self.health.ejections, shadow_gate=self.shadow.gate)
        await self._started(self.rollout)
        self.traffic = LiveTraffic(self.sync.store, self.instance)  # the console's charts
        await self._started(self.traffic)
        self.drill_watch = OverdueDrills(self.sync, lambda: self.holder.doc,
                                         lambda: self.loaded.config, self.metrics)
        await self._started(self.drill_watch)

        self.access_log: AccessLog | None = None
        if cfg.server.access_log:
            self.access_log = AccessLog(cfg.telemetry.access_log, self.metrics,
                                        self.loaded.resolve)
            self.access_log.start()
            self._stack.push_async_callback(self.access_log.aclose)  # after the data plane
        drill_key = load_drill_key(self.loaded)
        self.proxy, self._listener = data_plane(
            self.loaded, self.holder, self.upstreams, self.inflight, self.metrics, self.clock,
            Outcomes(self.health, self.rollout, self.traffic,
                     judges=(self.health, self.rollout)),
            combine(self.requests if cfg.telemetry.metrics.request_series else None,
                    self.access_log),
            self.tracing.requests, self.mirror, drill_key[0])

        sync = self.sync
        self.status_builder = StatusBuilder(
            self.instance, self.holder, health=self.health.status,
            analysis=self.rollout.status, store=sync.status,
            reload=lambda: self.watcher.outcome if self.watcher is not None else None,
            audits=self.history.pending, dropped=self.history.dropped)
        self.admin_api, self._admin_runner = admin_side(
            self.instance, self.holder, sync, self.metrics, self.status_builder, self,
            self._metrics_page, self.alert_receiver, self.shadow, self.traffic,
            self.tracing.admin, drill_key)
        self.metrics.collector(lambda m: export_metrics(m, self.holder.doc))
        # stopped after the admin listener (pushed before it), before the store: the last
        # denied calls are written on the way out
        self.admin_api.denied.start()
        self._stack.push_async_callback(self.admin_api.denied.stop)
        self.admin_api.approval_expiry.start(APPROVAL_SWEEP)
        self._stack.push_async_callback(self.admin_api.approval_expiry.stop)
        self._stack.push_async_callback(self.admin_api.writer.stop)  # (its late records)
        self._stack.push_async_callback(self.admin_api.unanswered.stop)  # (break-glass)
        # (break-glass uses a process that died before counting them left: admin/glassjournal.py)
        glass = asyncio.get_running_loop().create_task(self.admin_api.reconcile_glass(),
                                                       name="break-glass-reconcile")
        self._stack.push_async_callback(cancel, glass)
        await self._admin_runner.setup()
        self._stack.push_async_callback(self._admin_runner.cleanup)

        dsock = bind_socket(cfg.listen, self.reuse_port, self.ports[0], "listen")
        asock = bind_socket(cfg.admin.listen, self.reuse_port, self.ports[1], "admin.listen")
        self.data_addr = dsock.getsockname()[:2]
        self.admin_addr = asock.getsockname()[:2]
        # a deep accept queue (aiohttp's default is 128): a burst of new clients waits in
        # the kernel for its turn instead of being dropped (the kernel caps it at somaxconn)
        await self._listener.start(dsock, DATA_BACKLOG)
        await web.SockSite(self._admin_runner, asock, backlog=ADMIN_BACKLOG).start()
        host = os.environ.get("KILLGATE_ADVERTISE_HOST") or cfg.drills.advertise_host
        # (with the build this process runs, read once at its start: which instance of a
        # fleet mid-upgrade runs which, in /v1/fleet and `killgate status`)
        self.sync.peers.urls = {"data": listen_url(self.data_addr, host),
                                "admin": listen_url(self.admin_addr, host), "build": build_id()}
        await self._publish_urls(sync, cfg.state.command_timeout * 2)
        self.started = True
        event(log, "phase", phase="listening", data=format_addr(self.data_addr),
              admin=format_addr(self.admin_addr), pid=os.getpid())

    async def _publish_urls(self, sync: Sync, wait: float) -> None:
        """A heartbeat now, carrying the addresses just bound: the one before the listeners
        bound had none, and a drill or `killgate status` found no admin URL for this
        instance until the next interval's (up to `state.heartbeat_interval`). Bounded by
        `wait`: a store that does not answer leaves it to the next interval's, as before."""
        try:
            await asyncio.wait_for(sync.peers.beat(), wait)
        except (StateError, TimeoutError) as exc:
            event(log, "urls_not_published", logging.WARNING, error=str(exc) or "timeout",
                  action="the next heartbeat publishes this instance's addresses")

    def _mirror_alarm(self, alarm: dict[str, Any]) -> None:
        """The audit mirror refused to continue: tell the webhooks."""
        events = getattr(self, "events", None)  # (none yet while the sync starts)
        if events is not None:
            events.mirror_refused(alarm, self.holder.doc)

    def _check_at_start(self) -> None:
        """The config passes the state's checks (a latched override's versions in it), or
        the start ends; a group's worker refused on the group's copy tries the file itself
        (serving.py), and starts on it if the state accepts that."""
        try:
            self.history.check(self.loaded)
        except ConfigError as refused:
            other = self.start_fallback(self.loaded, refused) if self.start_fallback else None
            if other is None:
                raise
            try:
                self.history.check(other)
            except ConfigError:
                raise refused from None  # (the file is no better: the copy's problems)
            self.holder.set_config(other)
