"""Tracing against hostile and broken surroundings (review of 2026-12-05): a real OTLP/HTTP
collector (tests/otlp_collector.py), real gateways and backends."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientPayloadError, ClientSession

from tests.backends import RawBackend, echo_app, sse_app
from tests.conftest import free_port, running_gateway, two_versions, wait_until, write_config
from tests.otlp_collector import Collector
from tests.rawhttp import exchange
from tests.test_tracing import (  # noqa: F401 - fixtures
    CLIENT_SPAN,
    CLIENT_TRACE,
    INFER,
    _fast_export,
    telemetry,
)

__all__: list[str] = []


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = await Collector().start()
    yield c
    await c.stop()


async def _series(session: ClientSession, admin: str, prefix: str) -> float | None:
    async with session.get(admin + "/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(prefix):
                return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_collector_that_redirects_loses_spans_and_metrics_counted_not_exported(
        tmp_path: Path, backends, session: ClientSession) -> None:
    """The OTLP exporter follows no redirect and takes any status below 400 as success: a
    collector behind a load balancer answering 308 (http -> https) stored nothing, and the
    spans and metric pushes must show as lost (export_failed), never as exported."""
    redirecting = await Collector(mode="redirect").start()
    try:
        p1 = await backends(echo_app("v1"))
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0),
                           extra=telemetry(redirecting.url)
                           + "  metrics: {export_interval: 1s}\n")
        async with running_gateway(cfg) as g:
            for _ in range(3):
                async with session.get(g.url + INFER) as r:
                    assert r.status == 200
            failed = 'killgate_otel_dropped_total{reason="export_failed",signal="spans"}'

            async def lost() -> bool:
                return (await _series(session, g.admin, failed) or 0) >= 6

            await wait_until(lost, 10, 0.05, what="the redirected spans counted as lost")
            m_failed = 'killgate_otel_dropped_total{reason="export_failed",signal="metrics"}'

            async def m_lost() -> bool:
                return (await _series(session, g.admin, m_failed) or 0) >= 1

            await wait_until(m_lost, 10, 0.05, what="the redirected metrics counted as lost")
            for signal in ("spans", "metrics"):
                exported = await _series(session, g.admin,
                                         f'killgate_otel_exported_total{{signal="{signal}"}}')
                assert exported == 0, signal
    finally:
        await redirecting.stop()


async def test_an_absolute_target_with_userinfo_stays_out_of_access_log_and_span(
        tmp_path: Path, backends, collector: Collector) -> None:
    """`GET http://user:password@host/...` is refused (400), and still logged and traced:
    the access log's `path` and the span's `url.path` keep the URL without its userinfo."""
    p1 = await backends(echo_app("v1"))
    log = tmp_path / "access.jsonl"
    extra = (telemetry(collector.url) + f"  access_log: {{path: {log}}}\n"
             "server:\n  access_log: true\n")
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=extra)
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        status, _, _ = await exchange(port, (
            b"GET http://alice:S3CRET-PW@models.example/v2/models/iris/infer?x=1 HTTP/1.1\r\n"
            b"host: a\r\ntraceparent: 00-" + CLIENT_TRACE.encode() + b"-" + CLIENT_SPAN.encode()
            + b"-01\r\n\r\n"))
        assert status == 400
        await wait_until(lambda: log.exists() and log.read_text().strip(), 10,
                         what="the access log line")
        await wait_until(lambda: collector.server_spans(), 10, what="the span")
    line = json.loads(log.read_text().splitlines()[0])
    assert line["status"] == 400
    assert line["path"] == "http://***@models.example/v2/models/iris/infer"
    (span,) = collector.server_spans()
    assert span.attributes["url.path"] == "http://***@models.example/v2/models/iris/infer"
    assert "S3CRET" not in log.read_text()


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_other_libraries_log_lines_carry_no_secret(
        tmp_path: Path, backends, gateway_procs, fmt: str) -> None:
    """What other libraries log passes through redaction too: the OTLP exporter's retry
    warning names the endpoint's path and query (an `api-key` query parameter), urllib3
    logs the request line at debug, the admin listener's debug line about a refused head
    echoes the offending header line (an admin JWT), and the SDK's warning about a
    malformed OTEL_EXPORTER_OTLP_HEADERS entry (`name: value`, a common slip) quotes it."""
    p1 = await backends(echo_app("v1"))
    data, admin = free_port(), free_port()
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), listen=f"127.0.0.1:{data}",
                       admin=f"127.0.0.1:{admin}",
                       extra=f"log: {{format: {fmt}, level: debug}}\n")
    down = f"http://127.0.0.1:{free_port()}/v1/traces?api-key=OTLP-S3CRET"
    gw = gateway_procs(cfg, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": down,
                                 "OTEL_TRACES_SAMPLER": "always_on",
                                 "OTEL_EXPORTER_OTLP_HEADERS": "x-honeycomb-team: HDR-S3CRET"})
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    status, _, _ = await exchange(data, b"GET " + INFER.encode() + b" HTTP/1.1\r\nhost: a\r\n\r\n")
    assert status == 200
    status, _, _ = await exchange(admin, (
        b"POST /v1/kill HTTP/1.1\r\nhost: a\r\nauthorization: Bearer JWT-S3CRET.\x01x\r\n\r\n"))
    assert status == 400
    await wait_until(lambda: "Transient error" in gw.output()
                     and "bad admin request" in gw.output(), 15,
                     what="the exporter's retry warning and the admin debug line")
    gw.stop()
    out = gw.output()
    assert "S3CRET" not in out, [ln for ln in out.splitlines() if "S3CRET" in ln]
    assert "api-key=***" in out
    assert "x-honeycomb-team: ***" in out  # (the entry is named: the operator can fix it)


async def test_a_backend_dying_mid_stream_shows_on_its_client_span(
        tmp_path: Path, backends, session: ClientSession, collector: Collector) -> None:
    """The backend resets the connection after two SSE events: the SERVER span says the
    stream was cut (upstream_failed), and so does the CLIENT span of that exchange (it
    failed: a trace must not show the backend call as a success)."""
    p1 = await backends(sse_app("v1", events=10, interval=0.01, die_after=2))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=telemetry(collector.url))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + INFER) as r:
            assert r.status == 200
            with contextlib.suppress(ClientPayloadError):
                await r.read()
        await wait_until(lambda: len(collector.spans) >= 2, 10, what="both spans")
    (server,) = collector.server_spans()
    assert server.attributes["error.type"] == "upstream_failed" and server.status == 2
    (attempt,) = collector.children(server)
    assert attempt.kind == "CLIENT"
    assert attempt.attributes["url.full"] == f"http://127.0.0.1:{p1}{INFER}"
    assert attempt.attributes.get("error.type") == "upstream_failed"
    assert attempt.status == 2


async def test_url_full_is_the_backends_url_with_the_path_and_without_the_query(
        tmp_path: Path, backends, session: ClientSession, collector: Collector) -> None:
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0).replace(
        f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p1}/base"), extra=telemetry(collector.url))
    async with running_gateway(cfg) as g:
        async with session.get(g.url + INFER + "?api_key=Q-S3CRET") as r:
            assert r.status == 200
            assert (await r.json())["path"] == "/base" + INFER + "?api_key=Q-S3CRET"
        await wait_until(lambda: len(collector.spans) >= 2, 10, what="both spans")
    (server,) = collector.server_spans()
    (attempt,) = collector.children(server)
    assert attempt.attributes["url.full"] == f"http://127.0.0.1:{p1}/base{INFER}"
    assert server.attributes["url.path"] == INFER


async def test_a_collectors_reason_phrase_cannot_drive_the_operators_terminal(
        tmp_path: Path, backends, gateway_procs) -> None:
    """The OTLP exporter logs the collector's reason phrase; a garbage-answering collector
    (or anything on a plaintext path to it) puts ESC and CR there: the text log shows them
    escaped, never raw (they would recolour, clear or overwrite the operator's screen)."""
    garbage = RawBackend(b"HTTP/1.1 400 \x1b[2J\x1b[31mgone\rX\r\ncontent-length: 0\r\n\r\n",
                         close=False)
    port = await garbage.start()
    try:
        p1 = await backends(echo_app("v1"))
        data = free_port()
        cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), listen=f"127.0.0.1:{data}",
                           admin=f"127.0.0.1:{free_port()}", extra="log: {format: text}\n")
        gw = gateway_procs(cfg, env={
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{port}/v1/traces",
            "OTEL_TRACES_SAMPLER": "always_on", "OTEL_METRICS_EXPORTER": "none"})
        await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
        status, _, _ = await exchange(data, b"GET " + INFER.encode() + b" HTTP/1.1\r\n"
                                      b"host: a\r\n\r\n")
        assert status == 200
        await wait_until(lambda: "Failed to export" in gw.output(), 15,
                         what="the exporter's failure line")
        gw.stop()
    finally:
        await garbage.stop()
    out = gw.log.read_bytes()
    assert b"\x1b" not in out and b"\r" not in out, out[-600:]
    assert b"\\x1b[31mgone" in out


@pytest.mark.parametrize("delay", ["0", "-5", "5s"])
async def test_a_bad_span_schedule_delay_never_stops_the_gateway_from_starting(
        tmp_path: Path, backends, session: ClientSession, collector: Collector,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, delay: str) -> None:
    """OTEL_BSP_SCHEDULE_DELAY=0 (or negative) made the SDK's batch processor raise, and
    `killgate serve` died at start with a traceback; '5s' logged one. A bad value is now
    ignored with a warning naming it, like the other OTEL_* values, and spans flow."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", delay)
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=telemetry(collector.url))
    async with running_gateway(cfg) as g, session.get(g.url + INFER) as r:
        assert r.status == 200
    # (the default delay is 5 s: the shutdown's last export sends them)
    await wait_until(lambda: len(collector.spans) >= 2, 10, what="the spans")
    warned = [r for r in caplog.records if r.getMessage() == "otel_env_ignored"]
    assert [r.kg_fields["variable"] for r in warned] == ["OTEL_BSP_SCHEDULE_DELAY"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.exc_info and not r.name.startswith("aiohttp")]


@pytest.mark.parametrize("traced", [False, True])
async def test_an_otel_variable_the_sdk_refuses_never_stops_the_gateway(
        tmp_path: Path, backends, gateway_procs, collector: Collector, traced: bool) -> None:
    """The OpenTelemetry SDK reads OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT & co. when its trace
    module is imported and raises on a value it refuses: `killgate serve` died at start with
    a traceback, with tracing off too (the module was imported all the same), while
    `killgate check` passed. A stray variable in a pod's environment must not take the data
    plane down: the gateway serves (and kills), without tracing, and says why."""
    p1 = await backends(echo_app("v1"))
    data = free_port()
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), listen=f"127.0.0.1:{data}",
                       admin=f"127.0.0.1:{free_port()}",
                       extra=telemetry(collector.url) if traced else "")
    gw = gateway_procs(cfg, env={"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "abc"})
    await asyncio.get_running_loop().run_in_executor(None, gw.wait_ready)
    status, _, _ = await exchange(data, b"GET " + INFER.encode() + b" HTTP/1.1\r\nhost: a\r\n\r\n")
    assert status == 200
    assert gw.stop() == 0
    out = gw.output()
    assert "Traceback" not in out
    if traced:
        assert "tracing_off" in out and "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" in out


@pytest.mark.parametrize("host", [b"models.example:\xb2", b"models.example:8\xb9",
                                  b"models.example:" + b"9" * 5000])
async def test_a_host_port_of_latin1_digits_gets_an_answer_and_a_span(
        tmp_path: Path, backends, collector: Collector, caplog, host: bytes) -> None:
    """The SERVER span took a Host's port with str.isdigit() and then int(): a Host byte
    0xB2 ('²', a digit to isdigit, read as latin-1) made int() raise in the tracer's start,
    the first thing the data plane does with a sampled request: no answer (the connection
    dropped) and a traceback in the log, from one header any client sends; as did a port
    of 5,000 digits (over int()'s limit)."""
    p1 = await backends(echo_app("v1"))
    cfg = write_config(tmp_path, two_versions(p1, p1, 100, 0), extra=telemetry(collector.url))
    async with running_gateway(cfg) as g:
        port = int(g.url.rsplit(":", 1)[1])
        status, _, _ = await exchange(port, (
            b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: " + host + b"\r\n"
            b"content-length: 2\r\ntraceparent: 00-" + CLIENT_TRACE.encode() + b"-"
            + CLIENT_SPAN.encode() + b"-01\r\n\r\n{}"))
        assert 200 <= status < 500, status
        await wait_until(lambda: collector.server_spans(), 10, what="the span")
    (span,) = collector.server_spans()
    assert "server.port" not in span.attributes
    assert not [r for r in caplog.records if r.name.startswith("killgate")
                and r.levelno >= logging.ERROR], "the request failed in the log"
