"""Builds the data plane of one process: the proxy with its hooks, and its listener.

Owns what the proxy is handed (the outcome fan-out to health, canary analysis and the
console's live traffic, the request recorder, the tracer, the shadow mirror, trusted
proxies, the drill fault gate) and how the listener's refusals are counted. Builds only;
startup.py starts, app.py stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.dataplane.clock import Clock
from gateway.dataplane.drillfault import FaultGate
from gateway.dataplane.inflight import Inflight
from gateway.dataplane.listener import Limits, Listener
from gateway.dataplane.proxy import Observer, Observers, Proxy
from gateway.dataplane.shadow import Mirror
from gateway.dataplane.shadowrecord import routes_by_name
from gateway.dataplane.spans import RequestTracer
from gateway.dataplane.upstream import Upstreams
from gateway.forwarded import ClientAddress, trusted_proxies
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.record import Recorder

__all__ = ["Batched", "Outcomes", "data_plane", "trusted"]

#: listener refusals with a counter of their own; the rest are bad requests by reason
_COUNTERS = {"send_timeout": "killgate_client_send_timeouts_total",
             "reclaimed": "killgate_connections_reclaimed_total"}
#: connections closed at accept -> the `reason` of killgate_connections_refused_total
_REFUSED = {"refused": "connections", "refused_per_client": "per_client"}
#: request bodies ended by the connection's deadlines (408) -> the `reason` of
#: killgate_client_body_timeouts_total
_BODY = {"body_stalled": "stalled", "body_incomplete": "incomplete",
         "body_min_rate": "min_rate"}


Key = tuple[str, str]  # (route, version)
_HELD = 1024  # "ok" latencies held back per (route, version) before they are handed over


@runtime_checkable
class Batched(Observer, Protocol):
    """An observer that takes the "ok" outcomes of one wall-clock second a batch at a time."""

    def served(self, batch: Mapping[Key, list[float]], now: float) -> None:
        """Exchanges that went "ok", in order with every other outcome; their latencies per
        (route, version). They all came within the second of `now` (`int(now)`)."""

    def batched_by(self, flush: Callable[[], None]) -> None:
        """`flush` hands over what is held back: called before reading what they count."""


class Outcomes:
    """Tells every interested party how each exchange went (health, canary analysis, live
    traffic). Most exchanges go "ok", and telling each observer of each one cost about
    8,000 CPU instructions a request (calls within calls): the latency of an "ok" is held
    in a list per (route, version), and the `Batched` observers are handed the lists when
    the wall-clock second changes, when _HELD wait, before any other outcome (so outlier
    detection sees every "ok" before the failure that follows it, and ejects at the same
    request as when told of each), and before they read what they count. `clock` is the
    batched observers' wall clock: one batch never spans two of their 1-second (or longer)
    buckets. Observers that are not `Batched` are told of every outcome as it comes.
    Answers a client pinned (`pinned`) go to every observer but the `judges` (outlier
    detection, canary analysis: a pin is the client's choice, so pinned requests its model
    answers 500 ejected a healthy canary, and an ejected canary fails its analysis), each
    as it comes."""

    def __init__(self, *observers: Observer, clock: Callable[[], float] = time.time,
                 judges: tuple[Observer, ...] = ()) -> None:
        self.each = tuple(o for o in observers if not isinstance(o, Batched))
        self.batched = tuple(o for o in observers if isinstance(o, Batched))
        self.for_pins = tuple(o for o in observers if all(o is not j for j in judges))
        self.clock = clock
        self._held: dict[Key, list[float]] = {}
        # the list of the last (route, version) held: the next "ok" is most often for the
        # same strings (the route plan's), and `is` finds it without a tuple or a lookup
        self._route: str | None = None
        self._version: str | None = None
        self._last: list[float] = []
        # the second the held outcomes came in, [_sec, _until) (floats: an int compared
        # with a float costs a conversion), and a clock reading within it
        self._sec = 0.0
        self._until = float("-inf")  # (nothing is held until a first outcome sets these)
        self._at = 0.0
        for o in self.batched:
            o.batched_by(self.flush)

    def outcome(self, route: str, version: str, kind: str, latency: float) -> None:
        if self.each:  # (a loop over an empty tuple costs its setup)
            for o in self.each:
                o.outcome(route, version, kind, latency)
        clock = self.clock  # (`self.clock()` is a method load that never specializes: an
        # instance attribute; a local is an attribute read and a call to the builtin)
        now = clock()
        if kind == "ok" and self._sec <= now < self._until:
            if route is self._route and version is self._version:
                held = self._last  # the usual "ok": of the last (route, version) held
            else:
                held = self._hold(route, version)
            held.append(latency)
            if len(held) >= _HELD:
                self.flush()
            return
        self._other(route, version, kind, latency, now)

    def pinned(self, route: str, version: str, kind: str, latency: float) -> None:
        """The outcome of a request a client pinned: told to `for_pins` (not the judges) at
        once, after what is held (so every observer keeps the outcomes in order)."""
        self.flush()
        for o in self.for_pins:
            o.outcome(route, version, kind, latency)

    def _hold(self, route: str, version: str) -> list[float]:
        """The list (route, version)'s "ok" latencies of this second are held in."""
        held = self._held.get((route, version))
        if held is None:
            held = self._held[route, version] = []
        self._route, self._version, self._last = route, version, held
        return held

    def _other(self, route: str, version: str, kind: str, latency: float, now: float) -> None:
        """A failure, or an "ok" in another second than those held: what is held goes first."""
        self.flush()
        if not self.batched:
            return
        if kind == "ok":
            sec = float(int(now))
            self._sec, self._until, self._at = sec, sec + 1.0, now
            self._hold(route, version).append(latency)
            return
        for o in self.batched:
            o.outcome(route, version, kind, latency)

    def flush(self) -> None:
        """Hand the held "ok" outcomes to the batched observers."""
        held = self._held
        if not held:
            return
        self._held = {}
        self._route = self._version = None  # (the last list is handed over with the rest)
        for o in self.batched:
            o.served(held, self._at)


def trusted(loaded: LoadedConfig) -> ClientAddress | None:
    """Who the client is behind `admin.trusted_proxies` (None: the socket peer)."""
    cidrs = loaded.config.admin.trusted_proxies
    return trusted_proxies(tuple(cidrs)) if cidrs else None


def data_plane(loaded: LoadedConfig, holder: TableHolder, upstreams: Upstreams,
               inflight: Inflight, metrics: Metrics, clock: Clock, observer: Observers,
               recorder: Recorder, tracer: RequestTracer | None, mirror: Mirror,
               drill_key: bytes | None) -> tuple[Proxy, Listener]:
    """The proxy and the listener that hands it requests (not yet listening)."""
    server = loaded.config.server
    proxy = Proxy(holder, upstreams, inflight, metrics, server.max_body_size,
                  server.model_peek_bytes, observer=observer,
                  max_inflight=server.max_inflight, peek_memory=server.model_peek_memory,
                  recorder=recorder, tracer=tracer,
                  shadow=mirror, client_address=trusted(loaded),
                  faults=FaultGate(drill_key, on_refused=lambda: metrics.inc(
                      "killgate_drill_tokens_refused_total")))
    mirror.killed_since = proxy.killed_since
    mirror.handles = inflight.handles  # (kills cut copies in flight too)
    mirror.counts.current = mirror.route_now = routes_by_name(lambda: holder.loaded.config)

    def count(what: str) -> None:
        reason = _REFUSED.get(what)
        if reason is not None:
            metrics.inc("killgate_connections_refused_total", (reason,), label_names=("reason",))
            return
        slow = _BODY.get(what)
        if slow is not None:
            metrics.inc("killgate_client_body_timeouts_total", (slow,), label_names=("reason",))
            return
        name = _COUNTERS.get(what)
        if name is not None:
            metrics.inc(name)
        else:
            metrics.inc("killgate_bad_requests_total", (what,), label_names=("reason",))

    listener = Listener(proxy, Limits(
        header_timeout=server.header_timeout, keepalive_timeout=server.keepalive_timeout,
        body_timeout=server.body_timeout, body_min_rate=server.body_min_rate,
        send_timeout=server.send_timeout),
        server.max_connections, count, clock, server.max_connections_per_client)
    return proxy, listener
