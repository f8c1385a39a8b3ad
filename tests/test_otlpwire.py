"""The hand-written OTLP span encoder (telemetry/otlpwire.py) writes exactly the message the
OTLP exporter's own encoder builds: both are decoded with opentelemetry-proto and compared,
for spans made by the real SDK with every kind of value we can meet."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from gateway.telemetry.otlpwire import Unsupported, encode_spans


class Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _provider(resource: dict[str, object] | None = None) -> tuple[TracerProvider, Keep]:
    keep = Keep()
    p = TracerProvider(resource=Resource.create(resource or {"service.name": "killgate",
                                                             "service.instance.id": "i-1"}),
                       shutdown_on_exit=False)
    p.add_span_processor(SimpleSpanProcessor(keep))
    return p, keep


def _same(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))
    theirs = ExportTraceServiceRequest.FromString(sdk_encode(spans).SerializeToString())
    assert ours == theirs
    return ours


def test_every_value_type_status_event_and_parent_encodes_as_the_sdk_does() -> None:
    p, keep = _provider()
    tracer = p.get_tracer("killgate", "1.2.3")
    remote = trace.set_span_in_context(NonRecordingSpan(SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
        trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "x1"), ("b", "2")]))))
    server = tracer.start_span("POST iris", context=remote, kind=SpanKind.SERVER, attributes={
        "http.request.method": "POST", "url.path": "/v2/models/iris/infer?x=é€😀",
        "server.port": 8080, "big": 2**63 - 1, "negative": -5, "min": -(2**63),
        "ratio": 0.25, "nan-ish": 1e300, "yes": True, "no": False, "empty": "",
        "bytes": b"\x00\xff", "strings": ("a", "b"), "ints": [1, -2, 300],
        "long": "x" * 70_000})
    server.add_event("killgate.failover", {"killgate.failover.from": "v1", "n": 2})
    server.add_event("bare")
    child = tracer.start_span("POST iris/v2", context=trace.set_span_in_context(server),
                              kind=SpanKind.CLIENT, attributes={"killgate.attempt": 1})
    child.set_status(Status(StatusCode.ERROR, "connect"))
    child.end()
    server.set_status(Status(StatusCode.OK))
    server.end()
    root = tracer.start_span("internal")  # no parent, no attributes, status unset
    root.end()
    msg = _same(keep.spans)
    spans = msg.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["POST iris/v2", "POST iris", "internal"]
    assert msg.resource_spans[0].scope_spans[0].scope.version == "1.2.3"


def test_spans_of_two_resources_and_scopes_are_grouped_like_the_sdk() -> None:
    p1, keep1 = _provider({"service.name": "a"})
    p2, keep2 = _provider({"service.name": "b"})
    for tracer in (p1.get_tracer("one"), p2.get_tracer("two"), p1.get_tracer("three"),
                   p1.get_tracer("one")):
        tracer.start_span("s").end()
    msg = _same(keep1.spans[:1] + keep2.spans + keep1.spans[1:])
    assert len(msg.resource_spans) == 2
    assert len(msg.resource_spans[0].scope_spans) == 2


def test_equal_arrays_of_other_element_types_keep_their_types() -> None:
    """(1,) == (1.0,) == (True,) in Python: the encoded-attribute cache, keyed by the value,
    wrote the first one's int array for the double and bool arrays that followed."""
    p, keep = _provider()
    tracer = p.get_tracer("t")
    for v in ((1,), (1.0,), (True,), (1,)):
        tracer.start_span("s", attributes={"a": v}).end()
    msg = _same(keep.spans)
    values = [s.attributes[0].value.array_value.values[0]
              for s in msg.resource_spans[0].scope_spans[0].spans]
    assert [v.WhichOneof("value") for v in values] == [
        "int_value", "double_value", "bool_value", "int_value"]


def test_a_lone_surrogate_becomes_a_question_mark_instead_of_failing_the_batch() -> None:
    p, keep = _provider()
    p.get_tracer("t").start_span("s", attributes={"url.path": "/a\udcffb"}).end()
    msg = ExportTraceServiceRequest.FromString(encode_spans(keep.spans))
    kv = msg.resource_spans[0].scope_spans[0].spans[0].attributes[0]
    assert kv.value.string_value == "/a?b"


@pytest.mark.parametrize("what", ["link", "mapping", "huge int"])
def test_what_it_does_not_write_is_refused_so_the_sdk_encoder_takes_over(what: str) -> None:
    p, keep = _provider()
    tracer = p.get_tracer("t")
    spans: list[ReadableSpan] = keep.spans
    if what == "link":
        tracer.start_span("s", links=[Link(SpanContext(1, 2, is_remote=False))]).end()
    elif what == "mapping":
        tracer.start_span("s", attributes={"v": {"a": 1}}).end()
    else:  # (the SDK's own spans never carry one: a span built by hand could)
        spans = [ReadableSpan("s", SpanContext(1, 2, False, TraceFlags(1)),
                              resource=Resource.create({}), attributes={"v": 2**64})]
    with pytest.raises(Unsupported):
        encode_spans(spans)


def test_no_spans_is_an_empty_request() -> None:
    assert encode_spans([]) == b""
    assert ExportTraceServiceRequest.FromString(b"") == sdk_encode([])


def test_long_client_values_are_not_kept_in_the_encoding_cache() -> None:
    """Attribute values repeat (a route's path, a status) and their encoding is cached; a
    client chooses its path (8 KiB request targets, each request sampled on its own
    traceparent): those must not fill the cache with megabytes of one-off values."""
    from gateway.telemetry import otlpwire

    provider, keep = _provider()
    tracer = provider.get_tracer("t")
    otlpwire._KV.clear()
    for i in range(otlpwire._KV_MAX // 2):
        with tracer.start_as_current_span("s", attributes={"url.path": f"/{i:06d}" + "a" * 8000}):
            pass
        encode_spans(keep.spans)
        keep.spans.clear()
    held = sum(len(k[1]) + len(v) for k, v in otlpwire._KV.items())
    assert held < 1 << 20, held
