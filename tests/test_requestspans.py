"""Data-plane spans without the SDK's live spans (telemetry/requestspans.py): the sampling
decision, and the finished spans it hands to the queue — checked field by field, and encoded
alike by the wire encoder and the OTLP exporter's own. No sockets: a request is a plain
object with what the tracer reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanKind, StatusCode

from gateway.telemetry.otelenv import Sampling
from gateway.telemetry.otlpwire import encode_spans
from gateway.telemetry.requestspans import RequestSpans
from gateway.telemetry.spanqueue import WireExporter

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@dataclass
class Req:
    headers: CIMultiDictProxy[str]
    method: str = "POST"
    path: str = "/v1/chat/completions"
    host: str = "gw.example:8080"
    remote: str | None = "10.0.0.7"
    version: tuple[int, int] = (1, 1)

    @property
    def traceparent(self) -> str | None:
        return self.headers.get("traceparent")


def req(**headers: str) -> Req:
    return Req(CIMultiDictProxy(CIMultiDict({"user-agent": "curl/8", **headers})))


def tracer(ratio: float = 1.0, parent_based: bool = True) -> tuple[RequestSpans, list[ReadableSpan]]:
    out: list[ReadableSpan] = []
    return RequestSpans(out.append, Resource.create({"service.name": "killgate"}),
                        InstrumentationScope("killgate", "0.1"),
                        Sampling(parent_based=parent_based, ratio=ratio)), out


def test_a_failover_makes_two_client_spans_under_one_server_span_that_both_encoders_agree_on(
        ) -> None:
    t, out = tracer()
    span = t.begin(req(traceparent=f"00-{TRACE}-{PARENT}-01"))
    assert span is not None and span.trace_id == TRACE
    first = span.attempt("iris", "v1", "http://127.0.0.1:9001/v1/chat/completions", "POST")
    assert first.traceparent.startswith(f"00-{TRACE}-".encode())
    first.failed("connect")
    span.event("killgate.failover", {"killgate.failover.from": "v1",
                                     "killgate.failover.to": "v2"})
    span.model("small", "chat")
    second = span.attempt("iris", "v2", "http://[::1]:9002/v1/chat/completions", "POST")
    second.answered(200)
    span.answered(200, "iris", "v2", "failover")
    span.body(b'{"id":1,"model":"small-2024"}')
    span.finish(True)
    span.finish(True)  # twice: still one span
    assert [s.kind for s in out] == [SpanKind.CLIENT, SpanKind.CLIENT, SpanKind.SERVER]
    c1, c2, server = out
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == PARENT
    assert c1.parent == c2.parent == server.context
    assert {s.context.trace_id for s in out} == {int(TRACE, 16)}
    assert second.traceparent == f"00-{TRACE}-{c2.context.span_id:016x}-01".encode()
    assert server.name == "POST iris"
    a = server.attributes
    assert a["killgate.decision"] == "failover" and a["killgate.attempts"] == 2
    assert a["gen_ai.response.model"] == "small-2024" and a["gen_ai.request.model"] == "small"
    assert a["server.address"] == "gw.example" and a["server.port"] == 8080
    assert a["client.address"] == "10.0.0.7" and a["user_agent.original"] == "curl/8"
    assert c1.status.status_code is StatusCode.ERROR and c1.attributes["error.type"] == "connect"
    assert c2.attributes["server.address"] == "::1" and c2.attributes["server.port"] == 9002
    assert c2.attributes["http.request.resend_count"] == 1
    assert [e.name for e in server.events] == ["killgate.failover"]
    assert all(s.start_time and s.end_time and s.start_time <= s.end_time for s in out)
    ours = ExportTraceServiceRequest.FromString(encode_spans(out))
    assert ours == ExportTraceServiceRequest.FromString(sdk_encode(out).SerializeToString())


def test_an_answer_of_the_gateway_and_a_cancelled_request() -> None:
    t, out = tracer()
    span = t.begin(req())
    assert span is not None
    span.answered(503, "iris", "", "fallback")
    span.finish(True)
    span = t.begin(req())
    assert span is not None
    span.attempt("iris", "v1", "http://b:1/", "GET")
    span.finish(False)
    fallback, attempt, cancelled = out
    assert fallback.attributes["error.type"] == "503"
    assert fallback.status.status_code is StatusCode.ERROR
    assert [e.name for e in fallback.events] == ["killgate.fallback"]
    assert attempt.kind is SpanKind.CLIENT  # the open attempt ends with its request
    assert cancelled.attributes["error.type"] == "cancelled" and cancelled.parent is None


@pytest.mark.parametrize(("ratio", "parent_based", "header", "sampled"), [
    (0.0, True, None, False),  # no caller trace: the ratio decides
    (1.0, True, None, True),
    (0.0, True, f"00-{TRACE}-{PARENT}-01", True),  # parent-based: the caller's flag
    (1.0, True, f"00-{TRACE}-{PARENT}-00", False),
    (0.0, True, "00-garbage", False),  # malformed: a new trace, the ratio decides
    (1.0, True, f"00-{TRACE.upper()}-{PARENT}-01", True),
    (1.0, False, f"00-{TRACE}-{PARENT}-00", True),  # not parent-based: the ratio on its id
    (0.0, False, f"00-{TRACE}-{PARENT}-01", False),
])
def test_head_sampling(ratio: float, parent_based: bool, header: str | None,
                       sampled: bool) -> None:
    t, _ = tracer(ratio, parent_based)
    r = req(traceparent=header) if header is not None else req()
    assert (t.begin(r) is not None) is sampled


def test_the_ratio_keeps_about_its_share_of_new_traces() -> None:
    t, _ = tracer(0.25)
    r = req()
    got = sum(t.begin(r) is not None for _ in range(4000))
    assert 800 <= got <= 1200, got  # mean 1000, sd 27


class Recording(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[int] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(len(spans))
        return SpanExportResult.SUCCESS


def test_the_wire_exporter_falls_back_to_the_exporters_own_export() -> None:
    t, out = tracer()
    span = t.begin(req())
    assert span is not None
    span.answered(200, "iris", "v1", "weighted")
    span.finish(True)
    inner = Recording()  # no transport of its own to borrow: its export does the job
    w = WireExporter(inner)
    assert w.export(out) is SpanExportResult.SUCCESS and inner.batches == [1]


def test_the_pinned_otlp_exporter_still_has_the_transport_the_wire_exporter_borrows() -> None:
    """If this fails, opentelemetry-exporter-otlp-proto-http moved its transport: exports
    still work (through its own encoder, slower); update WireExporter and the pin."""
    inner = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    try:
        assert WireExporter(inner)._post is not None
    finally:
        inner.shutdown()


def test_a_stream_on_a_route_that_is_not_openai_style_gets_no_genai_attribute() -> None:
    """gen_ai.* attributes say "this was a GenAI call" (dashboards count them): a streamed
    answer of any other route (SSE from a classic model server, a chunked download) keeps
    its `killgate.first_chunk` event, without gen_ai.response.time_to_first_chunk."""
    t, out = tracer()
    span = t.begin(req())
    assert span is not None
    span.attempt("iris", "v1", "http://10.0.0.1:9101", "POST").answered(200)
    span.first_chunk(b'data: {"model": "m"}\n\n')
    span.answered(200, "iris", "v1", "weighted")
    span.finish(True)
    server = next(s for s in out if s.kind is SpanKind.SERVER)
    assert not [k for k in server.attributes or {} if k.startswith("gen_ai.")]
    assert [e.name for e in server.events] == ["killgate.first_chunk"]
    # an OpenAI-style route's stream keeps it
    span = t.begin(req())
    assert span is not None
    span.model("gpt-small", "chat")
    span.first_chunk(b'data: {"model": "gpt-small-2"}\n\n')
    span.answered(200, "chat", "v1", "weighted")
    span.finish(True)
    server = [s for s in out if s.kind is SpanKind.SERVER][-1]
    assert "gen_ai.response.time_to_first_chunk" in (server.attributes or {})
    assert (server.attributes or {})["gen_ai.response.model"] == "gpt-small-2"
