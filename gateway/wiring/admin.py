"""Builds the admin side of one process: the API, its extra endpoints, its runner.

Owns which handlers the admin listener serves (the /v1 API, drills, the console's
whoami/fleet/traffic, the console files, the shadow report), the tracing middleware
around them, and the listener's limits. Every handler gets the narrow parts it uses and
the one `Callers` (who calls). Builds only; startup.py starts and listens, app.py stops.
"""

from __future__ import annotations

from gateway.admin import tracing as admin_tracing
from gateway.admin.api import AdminApi
from gateway.admin.audittrim import AuditTrimApi
from gateway.admin.console import ConsoleApi, FleetView
from gateway.admin.drills import DrillApi
from gateway.admin.front import front
from gateway.admin.listener import AdminRunner, Limits
from gateway.admin.ports import MetricsPage, Readiness
from gateway.admin.shadow import ShadowApi
from gateway.admin.status import StatusBuilder
from gateway.admin.ui import UiFiles
from gateway.admin.vouch import VouchApi
from gateway.config_types import is_loopback, parse_listen
from gateway.configfile import LoadedConfig
from gateway.control.alerts import AlertReceiver
from gateway.control.shadow import ShadowResults
from gateway.control.table import TableHolder
from gateway.control.traffic import LiveTraffic
from gateway.state.sync import Sync
from gateway.telemetry.metrics import Metrics

__all__ = ["admin_side"]


def admin_side(instance: str, holder: TableHolder, sync: Sync, metrics: Metrics,
               status: StatusBuilder, readiness: Readiness, metrics_page: MetricsPage,
               alerts: AlertReceiver, shadow: ShadowResults, traffic: LiveTraffic,
               spans: admin_tracing.AdminSpans, drill_key: tuple[bytes | None, str | None],
               ) -> tuple[AdminApi, AdminRunner]:
    """The admin API (its denied log and approvals not yet started) and the runner that
    serves it with the listener's limits (not yet set up)."""
    def loaded() -> LoadedConfig:
        return holder.loaded

    key = sync.keys.current  # (the state signing key: /readyz's proofs to a drill)
    api = AdminApi(instance=instance, current=holder, state=sync, fleet=sync, audit=sync.store,
                   idem=sync.store, status=status, readiness=readiness, counters=metrics,
                   metrics_page=metrics_page, alerts=alerts, shadow=shadow,
                   proof_key=None if key is None else (key.kid, key.secret), local=sync.local)
    cfg = loaded().config
    limits = Limits(header_timeout=cfg.server.header_timeout,
                    keepalive_timeout=cfg.server.keepalive_timeout,
                    max_connections=cfg.admin.max_connections,
                    send_timeout=cfg.server.send_timeout,
                    send_min_rate=cfg.server.body_min_rate,
                    on_refused=lambda why: metrics.inc("killgate_admin_refused_total", (why,),
                                                       label_names=("reason",)))
    # (the listener is bound to the admin.listen of this start: a reload changes it only
    # at the next restart, so the Host check keeps this one's)
    bound = is_loopback(parse_listen(cfg.admin.listen)[0])
    # the head's size, the Host check, a write's span and the error answers, in one layer
    app = api.app(front=front(limits, lambda: loaded().config.admin, metrics, bound, spans))
    authorize = api.callers.authorize
    DrillApi(api.callers, api.writer, api.shadow_checks, current=holder, state=sync,
             audit=sync.store, key=drill_key[0], key_problem=drill_key[1],
             proof_keys=sync.keys.keys(), fleet=sync).add_routes(app.router)
    AuditTrimApi(api.callers, api.writer, sync.retention).register(app.router)
    VouchApi(api.callers, api.writer, sync, instance).register(app.router)
    ConsoleApi(authorize, FleetView(instance, cfg.state.instance_lease, sync.store, sync,
                                    lambda: holder.doc.generation, lambda: loaded().digest),
               traffic).register(app.router)
    UiFiles().register(app.router)  # the operator console, GET /ui/
    ShadowApi(authorize, shadow, lambda: loaded().config).register(app.router)
    runner = AdminRunner(app, limits, access_log=None, shutdown_timeout=2.0,
                         handle_signals=False)
    return api, runner
