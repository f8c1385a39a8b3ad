"""A shadow copy carried the client's own `traceparent`: the shadow's server span named the
client's span as its parent, as the primary's request did before tracing was on, so a
trace showed two children of one parent for one call (read as a retry), and with tracing
on the copy was outside the gateway's span altogether (found by review of the shadow
copy's fields). A copy carries a traceparent of its own: the same trace id, a new span id,
the sampled flag kept; with the request traced, that span is a CLIENT span of the
gateway's SERVER span, exported like the attempts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from tests.backends import Recorder, echo_app
from tests.conftest import running_gateway, wait_until, write_config
from tests.otlp_collector import Collector
from tests.test_shadow import route
from tests.test_tracing import (
    CLIENT_SPAN,
    CLIENT_TRACE,
    _fast_export,  # noqa: F401 - the same clean OTEL_* env
    sent_traceparent,
    telemetry,
    traceparent,
)

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = await Collector().start()
    yield c
    await c.stop()


def _parts(tp: str | None) -> tuple[str, str, str]:
    assert tp is not None
    version, trace, span, flags = tp.split("-")
    assert version == "00" and len(trace) == 32 and len(span) == 16
    return trace, span, flags


async def test_a_traced_copy_is_a_child_span_of_the_gateways_request(
        tmp_path: Path, backends, session: ClientSession, collector: Collector) -> None:
    primary, shadow = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", primary)), await backends(echo_app("v2", shadow))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "http", "/api"),
                       extra=telemetry(collector.url))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/api/x", headers={"traceparent": traceparent()}) as r:
            assert r.status == 200
            await r.read()
        await wait_until(lambda: shadow.requests, 10, what="the copy")
        trace, span, flags = _parts(sent_traceparent(shadow))
        await wait_until(lambda: any(s.span_id == span for s in collector.spans), 10,
                         what="the copy's span exported")
    assert trace == CLIENT_TRACE and flags == "01"
    _, primary_span, _ = _parts(sent_traceparent(primary))
    assert span not in (CLIENT_SPAN, primary_span)  # never a parent id reused
    server = collector.server_spans()[0]
    copy = next(s for s in collector.spans if s.span_id == span)
    assert copy.kind == "CLIENT" and copy.trace_id == CLIENT_TRACE
    assert copy.parent_span_id == server.span_id  # a child of the gateway's request
    assert copy.attributes["killgate.version"] == "v2"
    assert copy.attributes["killgate.shadow"] is True
    assert copy.attributes["http.response.status_code"] == 200


@pytest.mark.parametrize("sampled", [True, False])
async def test_an_untraced_copy_gets_a_span_id_of_its_own_and_the_clients_flag(
        tmp_path: Path, backends, session: ClientSession, sampled: bool) -> None:
    primary, shadow = Recorder(), Recorder()
    p1, p2 = await backends(echo_app("v1", primary)), await backends(echo_app("v2", shadow))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "http", "/api"))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/api/x",
                               headers={"traceparent": traceparent(sampled)}) as r:
            assert r.status == 200
            await r.read()
        await wait_until(lambda: shadow.requests, 10, what="the copy")
    assert sent_traceparent(primary) == traceparent(sampled)  # (tracing off: passed on)
    trace, span, flags = _parts(sent_traceparent(shadow))
    assert trace == CLIENT_TRACE and span != CLIENT_SPAN
    assert flags == ("01" if sampled else "00")
    names = [k for k, _ in shadow.requests[-1]["headers"]]
    assert names.count("traceparent") == 1


async def test_a_copy_of_a_request_without_traceparent_carries_none(
        tmp_path: Path, backends, session: ClientSession) -> None:
    shadow = Recorder()
    p1, p2 = await backends(echo_app("v1")), await backends(echo_app("v2", shadow))
    cfg = write_config(tmp_path, route(p1, p2, "{version: v2, sample: 1.0}", "http", "/api"))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + "/api/x") as r:
            assert r.status == 200
            await r.read()
        await wait_until(lambda: shadow.requests, 10, what="the copy")
    assert sent_traceparent(shadow) is None
