"""What the OpenTelemetry exporters of this process share: the resource that names it, the
daemon threads their blocking exports run on, their export counts on /metrics, and what
counts as an export the collector accepted (a 2xx answer: see `accepted_only_2xx`).

An exporter blocks (HTTP with retries, up to its timeout) and a stalled collector can hold it
that long: exports never run on the event loop, and the ones still running when the process
leaves are daemon threads (a ThreadPoolExecutor's workers would hold the exit up).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.log import event
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otelenv import OtelSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

__all__ = ["METHODS", "ExportCounts", "accepted_only_2xx", "export_counts", "in_daemon_thread",
           "method_name", "resource"]

T = TypeVar("T")
log = logging.getLogger("killgate.telemetry")
REDIRECT_LOG_EVERY = 60.0  # seconds between two "the collector redirects" lines
# (this module imports no part of the SDK when imported: tracing.py and otlpmetrics.py import
# it with no exporter configured, and the SDK is imported only when one starts)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE",
                     "PATCH"})


def method_name(m: str) -> str:
    """A request method as the HTTP semantic conventions name it (`_OTHER` if unknown)."""
    return m if m in METHODS else "_OTHER"


class ExportCounts:
    """Spans exported and dropped (by reason), since start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending = 0  # handed to the batch processor, not yet taken by the exporter
        self.exported = 0
        self.dropped: dict[str, int] = {"queue_full": 0, "export_failed": 0}

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self.lock:
            return self.exported, dict(self.dropped)




def resource(settings: OtelSettings, instance: str, version: str) -> Resource:
    """service.name from the config file (else OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES,
    read by the SDK), service.instance.id = this instance, service.version = killgate's."""
    from opentelemetry.sdk.resources import Resource

    attrs: dict[str, Any] = {"service.instance.id": instance}
    if version:
        attrs["service.version"] = version
    if settings.service_name is not None:
        attrs["service.name"] = settings.service_name
    return Resource.create(attrs)


async def in_daemon_thread(fn: Callable[[], T], name: str) -> T:
    """Run `fn` on a new daemon thread; await its result (cancelling the wait leaves the
    thread to finish on its own)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        ok: bool = True
        value: Any = None
        try:
            value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
            ok, value = False, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await fut


def export_counts(metrics: Metrics, signal: str,
                  counts: Callable[[], tuple[int, Mapping[str, int]]]) -> None:
    """Show an exporter's counts on /metrics, read at each scrape: what the collector
    accepted and what was lost by reason (the collector's trouble made visible)."""

    def collect(m: Metrics) -> None:
        exported, dropped = counts()
        m.set("killgate_otel_exported_total", exported, (signal,), label_names=("signal",))
        for reason, n in dropped.items():
            m.set("killgate_otel_dropped_total", n, (signal, reason),
                  label_names=("signal", "reason"))

    metrics.collector(collect)


def accepted_only_2xx(exporter: Any, signal: str) -> None:
    """Make an OTLP/HTTP exporter count only a 2xx answer as accepted.

    The exporter's HTTP client follows no redirect yet takes every status below 400 as
    success: a collector behind a load balancer that answers 301/308 (http -> https, a
    moved endpoint) stores nothing while every batch would count as exported. Its `export`
    (the client is the exporter's `_client`, a private attribute of
    opentelemetry-exporter-otlp-proto-http 1.45, hence the upper bound in pyproject.toml)
    is wrapped so that such an answer is a failed export, said in the log at most once a
    minute with what to change. Without that attribute, the exporter is left as it is."""
    client: Any = getattr(exporter, "_client", None)
    post = getattr(client, "export", None)
    if client is None or not callable(post):
        return
    last = [-REDIRECT_LOG_EVERY]

    def export(data: bytes) -> Any:
        result = post(data)
        code = getattr(result, "status_code", None)
        if not (getattr(result, "success", False) is True and isinstance(code, int)
                and not 200 <= code < 300):
            return result
        now = time.monotonic()
        if now - last[0] >= REDIRECT_LOG_EVERY:
            last[0] = now
            event(log, "otlp_export_not_accepted", logging.ERROR, signal=signal, status=code,
                  endpoint=str(getattr(client, "_endpoint", "")),
                  consequence="nothing was stored; counted as export_failed",
                  hint="the collector answered with a redirect, which the OTLP exporter "
                       "does not follow: name the URL it redirects to as the endpoint")
        try:
            return dataclasses.replace(result, success=False)
        except TypeError:  # (not a dataclass: a later exporter's result type)
            return _Refused(code)

    client.export = export


@dataclasses.dataclass(frozen=True)
class _Refused:
    status_code: int
    success: bool = False
    reason: str | None = None
    error: Exception | None = None
