"""What OpenTelemetry export does in this process: the `telemetry:` section plus `OTEL_*`.

Owns the precedence rule — a value written in the config file wins, then the standard
environment variable, then our default — and the parsing of the OTEL_* variables we honour
(OTEL_SDK_DISABLED, OTEL_{TRACES,METRICS}_EXPORTER, OTEL_EXPORTER_OTLP[_TRACES|_METRICS]
_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER[_ARG], OTEL_METRIC_EXPORT_INTERVAL,
OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_SCHEDULE_DELAY, OTEL_BSP_EXPORT_TIMEOUT; the exporter reads its own
OTEL_EXPORTER_OTLP_{HEADERS,TIMEOUT,…}).
Pure: no OpenTelemetry import.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config_telemetry import TelemetryConfig
from gateway.log import event

__all__ = ["OtelSettings", "Sampling", "resolve"]

log = logging.getLogger("killgate.telemetry")
_HTTP_URL = re.compile(r"https?://[^/\s?#@]*@?[^/\s?#@]+(?:[/?][^\s]*)?$", re.I)


@dataclass(frozen=True, slots=True)
class Sampling:
    """Head sampling: `parent_based` follows an incoming traceparent's sampled flag; new
    traces are kept at `ratio`, decided on the trace id as OpenTelemetry's TraceIdRatioBased
    sampler does; when not parent-based, a caller's trace is kept at `ratio` by a random
    draw (its trace id is the caller's choice)."""

    parent_based: bool = True
    ratio: float = 0.01


@dataclass(frozen=True, slots=True)
class OtelSettings:
    traces_endpoint: str | None  # full URL (…/v1/traces); None: no tracing
    metrics_endpoint: str | None  # full URL (…/v1/metrics); None: no OTLP metrics
    service_name: str | None  # None: let OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES say
    sampling: Sampling
    export_interval: float  # seconds between OTLP metric exports
    max_queue: int  # finished spans waiting for export; more are dropped and counted
    max_batch: int = 512
    schedule_delay_ms: float = 5000.0  # between two span exports (the SDK's default)
    export_timeout_ms: float = 30000.0  # OTEL_BSP_EXPORT_TIMEOUT (the SDK's default)

    @property
    def tracing(self) -> bool:
        return self.traces_endpoint is not None


_SAMPLERS = {
    "always_on": (False, 1.0), "always_off": (False, 0.0), "traceidratio": (False, None),
    "parentbased_always_on": (True, 1.0), "parentbased_always_off": (True, 0.0),
    "parentbased_traceidratio": (True, None),
}


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        v = float(raw)
    except ValueError:
        v = float("nan")
    if not lo <= v <= hi:
        event(log, "otel_env_ignored", logging.WARNING, variable=name, value=raw[:64],
              reason=f"not a number between {lo:g} and {hi:g}")
        return default
    return v


def _sampling(cfg: TelemetryConfig, env: Mapping[str, str]) -> Sampling:
    if "sample_ratio" in cfg.traces.model_fields_set or "OTEL_TRACES_SAMPLER" not in env:
        return Sampling(True, cfg.traces.sample_ratio)
    name = env["OTEL_TRACES_SAMPLER"].strip().lower()
    known = _SAMPLERS.get(name)
    if known is None:
        event(log, "otel_env_ignored", logging.WARNING, variable="OTEL_TRACES_SAMPLER",
              value=name[:64], reason=f"unknown sampler; one of {', '.join(_SAMPLERS)}")
        return Sampling(True, cfg.traces.sample_ratio)
    parent_based, ratio = known
    if ratio is None:  # the ratio samplers default to 1.0 (the OpenTelemetry spec)
        ratio = _float(env, "OTEL_TRACES_SAMPLER_ARG", 1.0, 0.0, 1.0)
    return Sampling(parent_based, ratio)


def _endpoint(cfg: TelemetryConfig, env: Mapping[str, str], signal: str) -> str | None:
    """The file's base URL, else the signal's own URL variable (used as is), else the
    general base URL variable; the signal path `v1/<signal>` is appended to a base URL."""
    base = cfg.otlp_endpoint
    if base is None:
        name = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        own = env.get(name, "").strip()
        if own:
            return own if _http_url(name, own, signal) else None
        name = "OTEL_EXPORTER_OTLP_ENDPOINT"
        base = env.get(name, "").strip() or None
        if base is not None and not _http_url(name, base, signal):
            return None
    if base is None:
        return None
    return base.rstrip("/") + f"/v1/{signal}"


def _http_url(variable: str, value: str, signal: str) -> bool:
    """Whether an endpoint variable holds an http(s) URL; if not, said once per signal (the
    value is not shown: without a scheme, a `user:password@` in it cannot be told apart)."""
    if _HTTP_URL.match(value):
        return True
    event(log, "otel_env_ignored", logging.WARNING, variable=variable,
          reason=f"not an http:// or https:// URL (OTLP over HTTP/protobuf, e.g. "
                 f"http://collector:4318): {signal} are not exported")
    return False


def resolve(cfg: TelemetryConfig, env: Mapping[str, str]) -> OtelSettings:
    disabled = env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    traces = metrics = None
    if not disabled:
        if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() != "none":
            traces = _endpoint(cfg, env, "traces")
        if env.get("OTEL_METRICS_EXPORTER", "").strip().lower() != "none":
            metrics = _endpoint(cfg, env, "metrics")
    named = "service_name" in cfg.model_fields_set or not (
        env.get("OTEL_SERVICE_NAME", "").strip()
        or "service.name=" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    interval = cfg.metrics.export_interval
    if "export_interval" not in cfg.metrics.model_fields_set:
        interval = _float(env, "OTEL_METRIC_EXPORT_INTERVAL", interval * 1000, 1000,
                          3_600_000) / 1000
    queue = int(_float(env, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1_000_000))
    # (read here, not by the SDK's batch processor: it refuses 0 or less by raising, which
    # ended the start, and logs a traceback for one that is not an integer)
    delay = _float(env, "OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 3_600_000)
    # (the same: the processor logs a traceback for one that is not an integer)
    export_timeout = _float(env, "OTEL_BSP_EXPORT_TIMEOUT", 30000, 1, 3_600_000)
    return OtelSettings(traces, metrics, cfg.service_name if named else None,
                        _sampling(cfg, env), interval, queue,
                        max_batch=min(512, queue), schedule_delay_ms=delay,
                        export_timeout_ms=export_timeout)
