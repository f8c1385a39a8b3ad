"""The `telemetry:` config section (CONTRACT §5.1): OTLP export of traces and metrics.

Owns its frozen pydantic models, defaults and per-field checks. `gateway.config` embeds
them (that module is full). Imports only pydantic, and `gateway.config`'s duration parser
at call time (gateway.config imports this module).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

__all__ = ["MetricsConfig", "TelemetryConfig", "TracesConfig"]


def _duration(value: Any) -> float:
    from gateway.config import parse_duration

    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class TracesConfig(_Model):
    #: share of new traces recorded (head sampling; a sampled incoming traceparent is
    #: always followed)
    sample_ratio: float = Field(default=0.01, ge=0, le=1)


class MetricsConfig(_Model):
    export_interval: Duration = 15.0  # OTLP metrics (Prometheus /metrics is always on)

    @field_validator("export_interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not 1 <= v <= 3600:
            raise ValueError("must be between 1s and 1h")
        return v


class TelemetryConfig(_Model):
    #: OTLP over HTTP/protobuf base URL (`/v1/traces`, `/v1/metrics` are appended);
    #: absent = no export (unless OTEL_EXPORTER_OTLP_ENDPOINT is set)
    otlp_endpoint: str | None = None
    service_name: str = Field(default="killgate", min_length=1, max_length=128)
    traces: TracesConfig = Field(default_factory=TracesConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", v):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP/protobuf)")
        return v
