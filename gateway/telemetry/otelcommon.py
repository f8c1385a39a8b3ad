"""What the OpenTelemetry exporters of this process share: the resource that names it, the
daemon threads their blocking exports run on, and their export counts on /metrics.

An exporter blocks (HTTP with retries, up to its timeout) and a stalled collector can hold it
that long: exports never run on the event loop, and the ones still running when the process
leaves are daemon threads (a ThreadPoolExecutor's workers would hold the exit up).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry.sdk.resources import Resource

from gateway.telemetry.metrics import Metrics
from gateway.telemetry.otelenv import OtelSettings

__all__ = ["export_counts", "in_daemon_thread", "resource"]

T = TypeVar("T")


def resource(settings: OtelSettings, instance: str, version: str) -> Resource:
    """service.name from the config file (else OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES,
    read by the SDK), service.instance.id = this instance, service.version = killgate's."""
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
