"""The config sections of monitoring: `telemetry`, `alerts` and `events` (CONTRACT §5.1).

Owns their frozen pydantic models, defaults and per-field checks, and `problems()`, the
checks against the rest of the file (route names). `gateway.config` embeds these models;
this one imports only pydantic and the config building blocks (`gateway.config_types`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config_types import Duration, Frozen, SecretEnv, check_http_url, positive

__all__ = [
    "ALERT_ACTIONS",
    "DURATION_BUCKETS",
    "EVENT_KINDS",
    "TTFB_BUCKETS",
    "AccessLogConfig",
    "AlertmanagerConfig",
    "AlertsConfig",
    "BucketsConfig",
    "EventsConfig",
    "TelemetryConfig",
    "WebhookConfig",
    "problems",
]

# OpenTelemetry's HTTP semantic-convention boundaries (0.005 … 10 s), extended upward for
# inference calls that take tens of seconds
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                    10.0, 30.0, 60.0)
# time to the first byte of a streamed answer (an LLM's time to first token)
TTFB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
                20.0, 30.0)
MAX_BUCKETS = 40
ALERT_ACTIONS = ("kill", "rollback")
AlertAction = Literal["kill", "rollback"]
_ALL_ACTIONS: list[AlertAction] = ["kill", "rollback"]
# what an outgoing event may be about (the audit action that caused it)
EVENT_KINDS = ("kill", "unkill", "rollback", "promote", "weights", "release", "auto_rollback",
               "progressive.promote", "alert", "audit.mirror_refused", "drill.start",
               "drill.restore", "drill.end")

def _buckets(v: Any) -> Any:
    if not isinstance(v, list | tuple):
        return v  # (pydantic says "must be a list")
    if not v:
        raise ValueError("must name at least one bucket boundary")
    if len(v) > MAX_BUCKETS:
        raise ValueError(f"at most {MAX_BUCKETS} boundaries (each one is a series per label set)")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
            raise ValueError(f"{x!r} is not a positive number of seconds")
        out.append(float(x))
    if any(b <= a for a, b in pairwise(out)):
        raise ValueError("boundaries must be strictly ascending")
    return tuple(out)


Buckets = Annotated[tuple[float, ...], BeforeValidator(_buckets)]


# ---------------------------------------------------------------- telemetry


class TracesConfig(Frozen):
    sample_ratio: float = Field(default=0.01, ge=0, le=1)


class MetricsConfig(Frozen):
    export_interval: Duration = 15.0  # OTLP metrics (Prometheus /metrics is always on)
    #: per-request series (requests_total, the duration histograms, split share); false
    #: leaves the data plane's request path without any recording
    request_series: bool = True

    @field_validator("export_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not 1 <= v <= 3600:
            raise ValueError("must be between 1s and 1h")
        return v


class BucketsConfig(Frozen):
    request_duration: Buckets = DURATION_BUCKETS
    #: default: the same boundaries as request_duration
    upstream_duration: Buckets | None = None
    time_to_first_byte: Buckets = TTFB_BUCKETS
    #: route name -> request (and upstream) duration boundaries for that route
    routes: dict[str, Buckets] = Field(default_factory=dict)

    def for_route(self, route: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(request duration, upstream duration) boundaries of one route."""
        own = self.routes.get(route)
        if own is not None:
            return own, own
        return self.request_duration, self.upstream_duration or self.request_duration


class AccessLogConfig(Frozen):
    """Tuning of the access log (`server.access_log: true` turns it on)."""

    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    #: lines waiting to be written; beyond, lines are dropped and counted
    buffer: int = Field(default=10_000, ge=1, le=1_000_000)
    #: a file to append to; default: standard output
    path: str | None = None


class TelemetryConfig(Frozen):
    otlp_endpoint: str | None = None
    service_name: str = Field(default="killgate", min_length=1, max_length=128)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    buckets: BucketsConfig = Field(default_factory=BucketsConfig)
    access_log: AccessLogConfig = Field(default_factory=AccessLogConfig)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", v):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP/protobuf)")
        return v if v is None else check_http_url(v)  # (its port and host too)


# ---------------------------------------------------------------- alerts (incoming)


class AlertmanagerConfig(Frozen):
    mode: Literal["act", "observe"] = "act"
    #: the actions alerts may take (an alert asking for another is answered and ignored)
    actions: list[AlertAction] = Field(default_factory=lambda: _ALL_ACTIONS.copy())
    #: routes alerts may act on; default: every route
    routes: list[str] | None = None
    #: how long a firing alert (fingerprint + startsAt) is remembered: repeats within it
    #: change nothing, so a person's unkill is not undone by Alertmanager's next resend
    dedupe_window: Duration = 7 * 24 * 3600.0
    #: how long the answer waits for every instance to apply the action
    wait: Annotated[Duration, positive(30.0)] = 2.0

    @field_validator("dedupe_window")
    @classmethod
    def _window(cls, v: float) -> float:
        if not 60 <= v <= 90 * 24 * 3600:
            raise ValueError("must be between 1m and 2160h (90 days)")
        return v


class AlertsConfig(Frozen):
    alertmanager: AlertmanagerConfig | None = None  # enables POST /v1/alerts/alertmanager


# ---------------------------------------------------------------- events (outgoing)


class WebhookConfig(Frozen):
    url: str
    #: the HMAC-SHA256 key (at least 32 bytes) is read from this variable, or this file
    secret_env: SecretEnv | None = None
    secret_file: str | None = None
    #: what to send; default: every kind
    events: list[Literal[EVENT_KINDS]] | None = None  # type: ignore[valid-type]

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        # (a query may carry the receiver's token, as analysis.webhook_url's may: a Google
        # Chat or Azure Functions URL, `...?key=...&token=...`, was refused as "must be an
        # http:// or https:// URL with a host", which it is; its path and query never show:
        # redact.py hides a webhook's)
        check_http_url(v.split("?", 1)[0])
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookConfig:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env, secret_file (every event is "
                             "signed)")
        return self


class EventsConfig(Frozen):
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    attempts: int = Field(default=5, ge=1, le=20)
    backoff: Annotated[Duration, positive(300.0)] = 0.5  # doubled after each failed attempt
    timeout: Annotated[Duration, positive(300.0)] = 5.0
    #: events waiting for delivery; beyond, new ones are dropped and counted
    queue: int = Field(default=1000, ge=1, le=100_000)


# ---------------------------------------------------------------- cross checks


def problems(telemetry: TelemetryConfig, alerts: AlertsConfig,
             routes: Iterable[str]) -> list[tuple[str, str]]:
    """(yaml path, message) for names these sections use that the file does not define."""
    names = set(routes)
    out = []
    for r in telemetry.buckets.routes:
        if r not in names:
            out.append((f"telemetry.buckets.routes.{r}", f"names no route ({', '.join(sorted(names))})"))
    am = alerts.alertmanager
    for i, r in enumerate(am.routes or () if am is not None else ()):
        if r not in names:
            out.append((f"alerts.alertmanager.routes[{i}]",
                        f"names no route ({', '.join(sorted(names))})"))
    return out
