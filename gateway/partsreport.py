"""What one gateway process's parts report: readiness, gauges, the /metrics page.

Owns `PartsReport`, the base of startup.GatewayParts (which builds and starts the parts):
why /readyz answers 503 (`ready_reason`: starting, draining, state_unknown,
state_unverifiable), the gauges read whenever the series are (a scrape, a worker's
snapshot, an OTLP export), each route's intended split for killgate_split_*, and the
/metrics page. Reads the parts; starts, stops and writes nothing. Below `startup`, above
`wiring`: never imports `app`, `server` or `startup`.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.configfile import LoadedConfig
from gateway.control.table import TableHolder
from gateway.dataplane.inflight import Inflight
from gateway.domain.kills import unrouted
from gateway.state.sync import Sync
from gateway.telemetry.metrics import Metrics

__all__ = ["PartsReport"]


class PartsReport:
    holder: TableHolder
    metrics: Metrics
    inflight: Inflight
    sync: Sync | None
    started: bool
    draining: bool

    @property
    def loaded(self) -> LoadedConfig:
        """The config in force (the routing snapshot's own)."""
        return self.holder.loaded

    @property
    def ready(self) -> bool:
        return self.ready_reason is None

    @property
    def ready_reason(self) -> str | None:
        """Why /readyz answers 503 (None: ready): `starting`, `draining`, `state_unknown`
        (no kill state loaded yet), or `state_unverifiable`: the store holds a document this
        instance cannot verify and will not write over (a key that is not the fleet's,
        most often: state/refuseddoc.py's `_blind`). A load balancer then stops sending it
        traffic, while the kills it holds stay enforced for whatever still reaches it."""
        if not self.started:
            return "starting"
        if self.draining:
            return "draining"
        if self.sync is not None and self.sync.unverifiable is not None:
            return "state_unverifiable"
        if self.sync is None or not self.sync.ready:
            return "state_unknown"
        return None

    # ------------------------------------------------------------------ status

    def _intended_split(self) -> dict[str, dict[str, float]]:
        """Each route's effective weights now (percent), for killgate_split_*."""
        return {p.name: p.effective_weights() for p in self.holder.table.routes}

    def _read_gauges(self, metrics: Metrics) -> None:
        metrics.set("killgate_inflight_requests", self.inflight.count)
        metrics.set("killgate_state_generation", self.holder.doc.generation)
        metrics.set("killgate_kills_unrouted",
                    len(unrouted(self.holder.doc, self.loaded.config.routes)))
        metrics.set("killgate_overrides_unservable",
                    sum(1 for p in self.holder.table.routes if p.override_unservable))

    def _metrics_page(self, accept: str | None) -> tuple[Iterator[bytes], str]:
        """GET /metrics: the exposition, its values taken now (gauges read at scrape time:
        `_read_gauges`), its bytes a part at a time."""
        return self.metrics.page(accept)
