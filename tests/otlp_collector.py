"""A real OTLP/HTTP collector for the tests: an aiohttp server on loopback that decodes the
protobuf export requests with `opentelemetry-proto` and keeps what it got.

Modes: `ok` (answers 200), `fail` (answers 500), `stall` (takes the request and never
answers, like a wedged collector), `redirect` (answers 308 to https, like a load balancer
in front of a collector that moved: nothing is stored).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.backends import serve_app
from tests.conftest import free_port

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


@dataclass
class SpanRecord:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any]
    start_ns: int
    end_ns: int

    def event_names(self) -> list[str]:
        return [n for n, _ in self.events]


@dataclass
class Collector:
    mode: str = "ok"
    spans: list[SpanRecord] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one per data point
    empty: list[str] = field(default_factory=list)  # metrics sent without data (refused)
    posts: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _stalled: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _traces(self, req: web.Request) -> web.StreamResponse:
        self.posts += 1
        body = await req.read()
        if self.mode == "stall":
            fut = asyncio.get_running_loop().create_future()
            self._stalled.append(fut)
            await fut
        if self.mode == "fail":
            return web.Response(status=500, text="collector broken")
        if self.mode == "redirect":
            return web.Response(status=308, headers={
                "Location": f"https://collector.example:4318{req.path_qs}"})
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        for rs in msg.resource_spans:
            res = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(SpanRecord(
                        s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name,
                        KINDS.get(s.kind, str(s.kind)), _attrs(s.attributes),
                        [(e.name, _attrs(e.attributes)) for e in s.events],
                        s.status.code, res, s.start_time_unix_nano, s.end_time_unix_nano))
        return web.Response(body=ExportTraceServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def _metrics(self, req: web.Request) -> web.StreamResponse:
        self.posts += 1
        body = await req.read()
        if self.mode == "stall":
            fut = asyncio.get_running_loop().create_future()
            self._stalled.append(fut)
            await fut
        if self.mode == "redirect":
            return web.Response(status=308, headers={
                "Location": f"https://collector.example:4318{req.path_qs}"})
        if self.mode != "ok":
            return web.Response(status=500, text="collector broken")
        msg = ExportMetricsServiceRequest()
        msg.ParseFromString(body)
        for rm in msg.resource_metrics:
            res = _attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind is None:  # (a metric must be a gauge, sum, histogram...)
                        self.empty.append(m.name)
                        return web.Response(status=400, text=f"metric {m.name} has no data")
                    data = getattr(m, kind)
                    for dp in data.data_points:
                        point: dict[str, Any] = {"name": m.name, "kind": kind, "unit": m.unit,
                                                 "attributes": _attrs(dp.attributes),
                                                 "resource": res}
                        if kind == "histogram":
                            point.update(count=dp.count, sum=dp.sum,
                                         bounds=list(dp.explicit_bounds),
                                         buckets=list(dp.bucket_counts))
                        else:
                            point["value"] = dp.as_double if dp.HasField("as_double") \
                                else dp.as_int
                        if kind == "sum":
                            point["monotonic"] = data.is_monotonic
                        self.metrics.append(point)
        return web.Response(body=ExportMetricsServiceResponse().SerializeToString(),
                            content_type="application/x-protobuf")

    async def start(self) -> Collector:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner, self.port = await serve_app(app)
        return self

    async def stop(self) -> None:
        for fut in self._stalled:
            if not fut.done():
                fut.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    def server_spans(self) -> list[SpanRecord]:
        return [s for s in self.spans if s.kind == "SERVER"]

    def children(self, parent: SpanRecord) -> list[SpanRecord]:
        return sorted((s for s in self.spans if s.parent_span_id == parent.span_id),
                      key=lambda s: s.start_ns)


@contextlib.asynccontextmanager
async def broken_collector(mode: str) -> AsyncIterator[str]:
    """The endpoint of a collector that fails the way `mode` says (RELIABILITY row 59):
    `down` (nothing listens), `stall` (takes a request, never answers) or `fail` (500)."""
    if mode == "down":
        yield f"http://127.0.0.1:{free_port()}"
        return
    broken = await Collector(mode=mode).start()
    try:
        yield broken.url
    finally:
        await broken.stop()
