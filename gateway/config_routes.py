"""The config of `routes[]`: matching, versions, health checks, outlier ejection, fallback,
timeouts, retries and canary analysis (CONTRACT §2), and the route that holds them.

Owns their frozen pydantic models, defaults and per-field checks; the checks across the
file (names that must exist) live in `gateway.configfile`. Imports only the config
building blocks (`gateway.config_types`) and the sections it embeds (`config_match`,
`config_analysis`, `config_shadow`).
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from gateway.config_analysis import AnalysisConfig
from gateway.config_match import MatchConfig, StickyConfig, case_fold
from gateway.config_shadow import ShadowConfig
from gateway.config_types import (
    HEADER_NAME,
    Deadline,
    Duration,
    Frozen,
    Timeouts,
    at_most,
    check_http_url,
    finite,
    weight_problem,
)

__all__ = [
    "AnalysisConfig",
    "FallbackConfig",
    "HealthConfig",
    "MatchConfig",
    "OutlierConfig",
    "RetryConfig",
    "RouteConfig",
    "StickyConfig",
    "TimeoutsConfig",
    "VersionConfig",
    "case_fold",
]


_FIELD_VALUE = re.compile(r"(?:[!-~\xa0-\xff](?:[ \t!-~\xa0-\xff]*[!-~\xa0-\xff])?)?")
_OWN_FIELDS = frozenset({
    "content-length", "transfer-encoding", "content-type", "connection", "keep-alive",
    "upgrade", "te", "trailer", "proxy-connection", "date"})


def not_a_dot_segment(name: str) -> str:
    """A route's name, which the admin API's paths hold (/v1/routes/{route}/...):
    '.' and '..' are dot segments every URL library resolves away, so the CLI could not
    roll back, promote or weight such a route."""
    if name in (".", ".."):
        raise ValueError(f"{name!r} cannot be named in a URL path; choose another name")
    return name


class VersionConfig(Frozen):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    url: str
    artifact: str | None = None
    weight: float = Field(default=0, ge=0)
    model: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        check_http_url(v)
        if "@" in v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("must not hold user:password@: the gateway never sends URL "
                             "credentials to a backend, and they would show in status and logs")
        return v.rstrip("/")

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        problem = weight_problem(finite(v))
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z0-9]+:[A-Za-z0-9._\-]+", v):
            raise ValueError("must look like 'sha256:<hex>' (algorithm:digest)")
        return v


class HealthConfig(Frozen):
    path: str = "/v2/health/ready"
    interval: Deadline = 2.0
    timeout: Deadline = 1.0
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)
    healthy_threshold: int = Field(default=2, ge=1, le=100)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        # appended to each version's url: without its '/' the port swallows it
        # (http://h:9101health), every probe fails and the route loses every version
        if not v.startswith("/") or any(not " " < c < "\x7f" or c == "#" for c in v):
            raise ValueError("must start with '/' and hold only printable ASCII, no blank or '#' "
                             "(it is appended to each version's url), e.g. /v2/health/ready")
        return v


_EJECTION = at_most(3600.0, "a healthy version would stay out of traffic that long")


class OutlierConfig(Frozen):
    """Passive outlier detection from real traffic (Envoy's model)."""

    enabled: bool = True
    consecutive_5xx: int = Field(default=5, ge=1, le=10_000)
    consecutive_gateway_failures: int = Field(default=5, ge=1, le=10_000)
    # (Envoy's defaults are 30s and 300s; an hour out of traffic is past any blip)
    base_ejection: Annotated[Duration, _EJECTION] = 30.0
    max_ejection: Annotated[Duration, _EJECTION] = 300.0


def _not_json(v: Any, where: str = "") -> str | None:
    """Why `v` (a YAML value) is not plain JSON data (None when it is), naming its place."""
    at = where or "the value"
    if v is None or isinstance(v, str | bool | int):
        return None
    if isinstance(v, float):
        return None if math.isfinite(v) else f"{at} is {v!r}, which JSON cannot carry"
    if isinstance(v, list):
        parts = ((x, f"{where}[{i}]") for i, x in enumerate(v))
    elif isinstance(v, dict):
        parts = ((x, f"{where}.{k}" if where else str(k)) for k, x in v.items())
    else:
        kind = ("a date" if isinstance(v, datetime.date) else "bytes (!!binary)"
                if isinstance(v, bytes) else "a set (!!set)" if isinstance(v, set)
                else type(v).__name__)
        return (f"{at} is read by YAML as {kind}, which JSON cannot carry: put it in quotes "
                "(the answer's body is plain JSON)")
    return next((p for x, w in parts if (p := _not_json(x, w)) is not None), None)


class FallbackConfig(Frozen):
    status: int = Field(default=503, ge=200, le=599)
    json_: Any = Field(default=None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        # written into the answer's head as they are: a line break would add fields (a
        # Set-Cookie) or end the head, a framing field would desynchronise the client
        for name, value in v.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            low = name.lower()
            if low in _OWN_FIELDS or low.startswith("x-killgate-"):
                raise ValueError(f"{name!r} is set by the gateway (framing, connection, the "
                                 "JSON body's content-type, its x-killgate-* labels)")
            if not _FIELD_VALUE.fullmatch(value):
                raise ValueError(f"the value of {name!r} must be printable Latin-1 text "
                                 "without line breaks or leading or trailing blanks")
        return v

    @field_validator("json_")
    @classmethod
    def _plain_json(cls, v: Any) -> Any:
        # (served as json.dumps(json) built into the routing table: a YAML date, !!binary
        # or !!set passed `check`, then `serve` died at its start with a TypeError
        # traceback, and a reload was refused saying only "TypeError"; .nan went out as NaN)
        problem = _not_json(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _bodyless(self) -> FallbackConfig:
        if self.json_ is not None and self.status in (204, 205, 304):
            raise ValueError(f"a {self.status} answer has no body; drop `json` or use "
                             "another status")
        return self


class TimeoutsConfig(Timeouts):
    """routes[].timeouts."""


class RetryConfig(Frozen):
    # (a status is read as written, `503` or `"503"`: the schema says both, or an editor
    # marked the README's own `retry_on: [reset, 503]` as wrong)
    retry_on: list[Annotated[Literal["reset", "502", "503", "504", "5xx"], WithJsonSchema(
        {"enum": ["reset", "502", "503", "504", "5xx", 502, 503, 504]})]] = Field(
        default_factory=list)
    attempts: int = Field(default=2, ge=1, le=5)
    budget: float = Field(default=0.2, ge=0, le=1)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _strs(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v


class RouteConfig(Frozen):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    match: MatchConfig
    stable: str
    versions: list[VersionConfig] = Field(min_length=1)
    sticky: StickyConfig | None = None
    allow_pin: bool = False
    health: HealthConfig | None = None
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)
    fallback: FallbackConfig | None = None
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    retry: RetryConfig | None = None
    analysis: AnalysisConfig | None = None
    #: how the backend says "model not loaded / not ready" (CONTRACT §5.6): with v2 or openai
    #: such an answer moves the request to another version, as if never delivered
    protocol: Literal["http", "v2", "openai"] = "http"
    #: a drill route: the same versions as the named route, behind a prefix only drills use
    drill_for: str | None = None
    #: a weight-0 version that gets a sampled copy of requests, compared (CONTRACT §5.5)
    shadow: ShadowConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return not_a_dot_segment(v)

    def version(self, name: str) -> VersionConfig | None:
        for v in self.versions:
            if v.name == name:
                return v
        return None

