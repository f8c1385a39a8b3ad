"""Builds the data plane of one process: the proxy with its hooks, and its listener.

Owns what the proxy is handed (the outcome fan-out to health and canary analysis, the
request recorder, the tracer, the shadow mirror, trusted proxies, the drill fault gate)
and how the listener's refusals are counted. Builds only; app.py starts and stops.
"""

from __future__ import annotations

from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.dataplane.clock import Clock
from gateway.dataplane.drillfault import FaultGate
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.proxy import Observer, Proxy
from gateway.dataplane.shadow import Mirror
from gateway.dataplane.spans import RequestTracer
from gateway.dataplane.upstream import Upstreams
from gateway.forwarded import ClientAddress, trusted_proxies
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import Recorder

__all__ = ["Outcomes", "data_plane", "trusted"]

#: listener refusals with a counter of their own; the rest are bad requests by reason
_COUNTERS = {"refused": "killgate_connections_refused_total",
             "send_timeout": "killgate_client_send_timeouts_total"}


class Outcomes:
    """Tells every interested party how each exchange went (health, canary analysis)."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        for o in self.observers:
            o.outcome(route, version, kind, latency)


def trusted(loaded: LoadedConfig) -> ClientAddress | None:
    """Who the client is behind `admin.trusted_proxies` (None: the socket peer)."""
    cidrs = loaded.config.admin.trusted_proxies
    return trusted_proxies(tuple(cidrs)) if cidrs else None


def data_plane(loaded: LoadedConfig, holder: TableHolder, upstreams: Upstreams,
               inflight: Inflight, metrics: Metrics, clock: Clock, observer: Observer,
               recorder: Recorder, tracer: RequestTracer | None, mirror: Mirror,
               drill_key: bytes | None) -> tuple[Proxy, Listener]:
    """The proxy and the listener that hands it requests (not yet listening)."""
    server = loaded.config.server
    proxy = Proxy(holder, upstreams, inflight, metrics, server.max_body_size,
                  server.model_peek_bytes, observer=observer,
                  max_inflight=server.max_inflight, recorder=recorder, tracer=tracer,
                  shadow=mirror, client_address=trusted(loaded),
                  faults=FaultGate(drill_key, on_refused=lambda: metrics.inc(
                      "killgate_drill_tokens_refused_total")))

    def count(what: str) -> None:
        name = _COUNTERS.get(what)
        if name is not None:
            metrics.inc(name)
        else:
            metrics.inc("killgate_bad_requests_total", (what,), label_names=("reason",))

    listener = Listener(proxy, Limits(
        header_timeout=server.header_timeout, keepalive_timeout=server.keepalive_timeout,
        body_timeout=server.body_timeout, send_timeout=server.send_timeout),
        server.max_connections, count, clock)
    return proxy, listener
