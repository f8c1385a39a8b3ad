"""The config schema: frozen, validated pydantic models of CONTRACT §2 and its extensions.

Owns the field types (durations are seconds once parsed, listen addresses are checked),
defaults and per-field checks; unknown keys are refused everywhere. Reading a file and the
cross-field checks live in `gateway.configfile`. Imports only foundations.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from gateway.config_shadow import ShadowConfig
from gateway.config_telemetry import AlertsConfig, EventsConfig, TelemetryConfig

__all__ = [
    "AdminConfig",
    "AnalysisConfig",
    "ApprovalsConfig",
    "AuthConfig",
    "Config",
    "DrillsConfig",
    "RouteConfig",
    "StateConfig",
    "VersionConfig",
    "parse_duration",
    "parse_listen",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """'250ms' / '2s' / '1.5m' / '1h' → seconds. Bare numbers are refused (ambiguous units)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("must be a duration string such as '250ms', '2s' or '1m'")
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration; use a number and ms, s, m or h ('2s')")
    return float(m.group(1)) * _UNIT[m.group(2)]


Duration = Annotated[float, BeforeValidator(parse_duration)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


def _positive(limit: float) -> Any:
    def check(v: float) -> float:
        if not 0 < v <= limit:
            raise ValueError(f"must be > 0 and at most {limit:g}s")
        return v

    return check


def parse_listen(value: str) -> tuple[str, int]:
    """'0.0.0.0:8080' / '[::1]:8080' / 'localhost:0' → (host, port)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", value.strip())
    if not m:
        raise ValueError(f"{value!r} is not host:port (IPv6 as [::1]:8080)")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    if m.group(1):
        ipaddress.IPv6Address(host)
    elif not re.fullmatch(r"[A-Za-z0-9.\-]+", host):
        raise ValueError(f"{host!r} is not a valid host name or address")
    return host, port


def _check_listen(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError("must be a 'host:port' string such as '127.0.0.1:8080'")
    parse_listen(v)
    return v


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# ---------------------------------------------------------------- admin


DEFAULT_SECRET_ENV = "KILLGATE_JWT_SECRET"


class AuthConfig(_Model):
    algorithms: list[str] = Field(default_factory=lambda: ["HS256"], min_length=1)
    hs256_secret_env: str | None = DEFAULT_SECRET_ENV
    hs256_secret_file: str | None = None
    public_key_file: str | None = None
    jwks_url: str | None = None
    issuer: str | None = "killgate"
    audience: str | None = "killgate-admin"
    leeway: Duration = 30.0
    #: the oldest a token may be (now - iat), and the longest it may live (exp - iat)
    max_token_age: Duration = 24 * 3600.0
    max_token_lifetime: Duration = 24 * 3600.0
    jwks_min_refetch_interval: Duration = 30.0  # for an unknown kid, at most this often
    jwks_refresh_interval: Duration = 300.0  # the key set is refetched when older than this

    @field_validator("algorithms")
    @classmethod
    def _allowlist(cls, v: list[str]) -> list[str]:
        allowed = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256",
                   "ES384", "EdDSA"}
        for alg in v:
            if alg.lower() == "none":
                raise ValueError("'none' can never be allowed")
            if alg not in allowed:
                raise ValueError(f"unknown algorithm {alg!r}; allowed: {', '.join(sorted(allowed))}")
        return v

    @field_validator("leeway")
    @classmethod
    def _leeway(cls, v: float) -> float:
        if not 0 <= v <= 60:
            raise ValueError("must be between 0s and 60s")
        return v

    @field_validator("max_token_age", "max_token_lifetime")
    @classmethod
    def _max_age(cls, v: float) -> float:
        if not 60 <= v <= 31 * 24 * 3600:
            raise ValueError("must be between 1m and 744h (31 days)")
        return v

    @field_validator("jwks_url")
    @classmethod
    def _jwks(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"(https?)://([^/?#\s]+)([/?][^\s#]*)?", v)
        if not m:
            raise ValueError("must be an https:// URL")
        if "@" in m.group(2):
            raise ValueError("must not hold user:password@ (the key set is public)")
        host = m.group(2).rsplit(":", 1)[0] if not m.group(2).endswith("]") else m.group(2)
        if m.group(1) == "http" and not _loopback(host.strip("[]")):
            raise ValueError("must be https:// (plain http:// only to a loopback address, "
                             "where no network sits between the gateway and the key set)")
        return v

    @property
    def secret_env(self) -> str:
        """The variable an HS256 secret is read from (when not from a file)."""
        return self.hs256_secret_env or DEFAULT_SECRET_ENV


class AdminConfig(_Model):
    listen: Annotated[str, BeforeValidator(_check_listen)] = "127.0.0.1:8081"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    max_body_size: int = Field(default=64 * 1024, gt=0, le=16 * 1024 * 1024)
    #: X-Forwarded-For is believed only from these peers (both planes); CIDR or address
    trusted_proxies: list[str] = Field(default_factory=list, max_length=256)
    #: open admin connections; beyond, new ones are closed at once
    max_connections: int = Field(default=1024, ge=1, le=100_000)
    #: token checks (signature verifications) per second from one client address, and
    #: the burst allowed above that rate; a token verified before is never counted
    auth_check_rate: float = Field(default=100.0, gt=0, le=1_000_000)
    auth_check_burst: int = Field(default=200, ge=1, le=1_000_000)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for i, c in enumerate(v):
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"[{i}] {c!r} is not an address or CIDR such as "
                                 "10.0.0.0/8") from None
        return v


# ---------------------------------------------------------------- state


class StateConfig(_Model):
    backend: Literal["local", "redis"] = "local"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field(default="killgate", min_length=1, pattern=r"^[A-Za-z0-9_.:\-]+$")
    path: str = "var/killgate-store.json"
    snapshot_path: str = "var/killgate-state.json"
    audit_mirror: str | None = None  # optional JSONL copy of the whole audit trail
    on_unavailable: Literal["last_known", "fail_closed"] = "last_known"
    max_staleness: Duration = 5.0
    poll_interval: Duration = 0.25
    heartbeat_interval: Duration = 1.0
    instance_lease: Duration = 5.0
    command_timeout: Duration = 0.5
    ready_without_state: bool = False
    #: a write is confirmed only once this many redis replicas have it (WAIT); 0 = the primary
    min_replicas: int = Field(default=0, ge=0, le=32)
    replica_timeout: Duration = 0.5
    #: the key that signs every state document, push and ack (never stored in the store):
    #: an environment variable or a file; required with backend redis (gateway/state/signing.py)
    signing_key_env: EnvName | None = None
    signing_key_file: str | None = None
    #: accepted for verification (never used to sign) while set: a rotation's overlap
    previous_signing_key_env: EnvName | None = None
    previous_signing_key_file: str | None = None
    #: the key of the audit events' `mac` (default: the signing keys)
    audit_key_env: EnvName | None = None
    audit_key_file: str | None = None
    previous_audit_key_env: EnvName | None = None
    previous_audit_key_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^(redis|rediss|redis\+sentinel|unix)://", v):
            raise ValueError(
                "must start with redis://, rediss://, redis+sentinel:// or unix://"
            )
        return v

    @field_validator("poll_interval", "heartbeat_interval", "command_timeout", "replica_timeout")
    @classmethod
    def _short(cls, v: float) -> float:
        return _positive(60.0)(v)

    @field_validator("max_staleness", "instance_lease")
    @classmethod
    def _long(cls, v: float) -> float:
        return _positive(3600.0)(v)

    @model_validator(mode="after")
    def _replicas_need_redis(self) -> StateConfig:
        if self.min_replicas and self.backend != "redis":
            raise ValueError("min_replicas needs backend: redis (a local store has no replicas)")
        return self


# ---------------------------------------------------------------- routes


class MatchConfig(_Model):
    path_prefix: str | None = None
    host: str | None = None
    header: dict[str, str] | None = None
    model: str | None = None
    #: false: the route's backend treats paths case-insensitively, so the prefix matches
    #: in any case (a killed route is not reachable as /V2/Models/IRIS through another)
    case_sensitive: bool = True

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return v.lower() if v is not None else v

    @field_validator("header")
    @classmethod
    def _header(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one header")
        for name in v:
            if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                raise ValueError(f"{name!r} is not a valid header name")
        return {k.lower(): val for k, val in v.items()}

    @model_validator(mode="after")
    def _case_needs_prefix(self) -> MatchConfig:
        if not self.case_sensitive and self.path_prefix is None:
            raise ValueError("case_sensitive: false needs a path_prefix")
        return self

    def keys(self) -> int:
        return sum(x is not None for x in (self.path_prefix, self.host, self.header, self.model))


class VersionConfig(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    url: str
    artifact: str | None = None
    weight: float = Field(default=0, ge=0)
    model: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", v):
            raise ValueError("must be an http:// or https:// URL with a host, optionally a path")
        if "@" in v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("must not hold user:password@: the gateway never sends URL "
                             "credentials to a backend, and they would show in status and logs")
        return v.rstrip("/")

    @field_validator("weight")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[a-z0-9]+:[A-Za-z0-9._\-]+", v):
            raise ValueError("must look like 'sha256:<hex>' (algorithm:digest)")
        return v


class StickyConfig(_Model):
    header: str = Field(min_length=1)

    @field_validator("header")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()


class HealthConfig(_Model):
    path: str = "/v2/health/ready"
    interval: Duration = 2.0
    timeout: Duration = 1.0
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)
    healthy_threshold: int = Field(default=2, ge=1, le=100)

    @field_validator("interval", "timeout")
    @classmethod
    def _bounded(cls, v: float) -> float:
        return _positive(3600.0)(v)


class OutlierConfig(_Model):
    """Passive outlier detection from real traffic (Envoy's model)."""

    enabled: bool = True
    consecutive_5xx: int = Field(default=5, ge=1, le=10_000)
    consecutive_gateway_failures: int = Field(default=5, ge=1, le=10_000)
    base_ejection: Duration = 30.0
    max_ejection: Duration = 300.0


class FallbackConfig(_Model):
    status: int = Field(default=503, ge=200, le=599)
    json_: Any = Field(default=None, alias="json")
    headers: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TimeoutsConfig(_Model):
    connect: Duration = 1.0
    total: Duration = 60.0
    idle: Duration = 30.0

    @field_validator("connect", "total", "idle")
    @classmethod
    def _bounded(cls, v: float) -> float:
        return _positive(3600.0)(v)


class RetryConfig(_Model):
    retry_on: list[Literal["reset", "502", "503", "504", "5xx"]] = Field(default_factory=list)
    attempts: int = Field(default=2, ge=1, le=5)
    budget: float = Field(default=0.2, ge=0, le=1)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _strs(cls, v: Any) -> Any:
        return [str(x) for x in v] if isinstance(v, list) else v


class AnalysisConfig(_Model):
    window: Duration = 60.0
    interval: Duration = 10.0
    min_requests: int = Field(default=50, ge=1)
    max_error_rate_increase: float = Field(default=0.05, ge=0, le=1)
    max_p99_ratio: float = Field(default=1.5, gt=0)
    # differences smaller than this never fail a canary (1 ms vs 2 ms is noise, not a ratio)
    p99_slack: Duration = 0.025
    webhook_url: str | None = None
    steps: list[float] | None = None
    step_interval: Duration = 60.0
    #: the route's shadow gets traffic (promote, weights, a progressive step) only once it
    #: agreed with the primary on at least this share of compared requests (§5.5) ...
    min_shadow_agreement: float | None = Field(default=None, ge=0, le=1)
    #: ... over at least this many comparisons (fleet-wide)
    min_shadow_compared: int = Field(default=100, ge=1)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not 0 <= s <= 100 for s in v) or v != sorted(v)):
            raise ValueError("must be a non-empty ascending list of percentages 0-100")
        return v


class RouteConfig(_Model):
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

    def version(self, name: str) -> VersionConfig | None:
        for v in self.versions:
            if v.name == name:
                return v
        return None


# ---------------------------------------------------------------- server-wide


class ServerConfig(_Model):
    max_body_size: int = Field(default=10 * 1024 * 1024, gt=0, le=1 << 34)
    model_peek_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    drain_timeout: Duration = 30.0
    reload_debounce: Duration = 0.2
    watch_config: bool = True  # reload when the file changes (SIGHUP always reloads)
    keepalive_timeout: Duration = 60.0
    header_timeout: Duration = 10.0  # a new connection must send a request head by then
    body_timeout: Duration = 30.0  # the longest pause while reading a request body
    #: the longest a client may leave its socket full (reading nothing) before it is dropped
    send_timeout: Duration = 60.0
    max_connections_per_backend: int = Field(default=256, ge=1, le=100_000)
    #: requests that may wait for a busy backend's connection; beyond, a fast 503
    max_pending_per_backend: int = Field(default=1024, ge=0, le=1_000_000)
    #: requests in flight in one process (streams included); beyond, a fast 503
    max_inflight: int = Field(default=10_000, ge=1, le=1_000_000)
    #: open client connections per process; beyond, new ones are closed at once
    max_connections: int = Field(default=20_000, ge=1, le=1_000_000)
    access_log: bool = False

    @field_validator("header_timeout", "body_timeout", "send_timeout")
    @classmethod
    def _deadlines(cls, v: float) -> float:
        return _positive(3600.0)(v)


class DrillsConfig(_Model):
    """Recovery drills (CONTRACT §5.4): the key of drill fault tokens, limits, events."""

    #: HMAC key of drill fault tokens (>= 32 bytes), the same on every instance; when the
    #: variable is unset (and no file), it is derived from the admin HS256 secret
    key_env: str | None = "KILLGATE_DRILL_KEY"
    key_file: str | None = None
    max_fault_ttl: Duration = 300.0  # a drill fault ends by itself after this at the latest
    max_duration: Duration = 1800.0  # a drill still open after this is overdue (metric)
    #: the host instances publish with their heartbeat (default: the listener's address;
    #: a wildcard listener publishes the host name)
    advertise_host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")

    @field_validator("max_fault_ttl", "max_duration")
    @classmethod
    def _limits(cls, v: float) -> float:
        return _positive(24 * 3600.0)(v)


class LogConfig(_Model):
    format: Literal["json", "text"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ApprovalsConfig(_Model):
    """Two-person rule (CONTRACT §5.2): how many principals each write needs, the
    requester counting as one (1 = no approval). A kill is never gated."""

    unkill_global: int = Field(default=1, ge=1, le=5)
    unkill_route: int = Field(default=1, ge=1, le=5)
    unkill_version: int = Field(default=1, ge=1, le=5)
    rollback: int = Field(default=1, ge=1, le=5)
    promote: int = Field(default=1, ge=1, le=5)
    weights: int = Field(default=1, ge=1, le=5)
    release: int = Field(default=1, ge=1, le=5)
    ttl: Duration = 900.0  # an open request expires after this long

    @model_validator(mode="before")
    @classmethod
    def _no_kill(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kill" in data:
            raise ValueError("a kill is never gated by approvals (stopping traffic must not "
                             "wait for a second person); remove 'kill'")
        return data

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, v: float) -> float:
        if not 1 <= v <= 24 * 3600:
            raise ValueError("must be between 1s and 24h")
        return v

    def needs(self, gate: str) -> int:
        return int(getattr(self, gate, 1))


class Config(_Model):
    listen: Annotated[str, BeforeValidator(_check_listen)] = "0.0.0.0:8080"
    admin: AdminConfig = Field(default_factory=AdminConfig)
    approvals: ApprovalsConfig = Field(default_factory=ApprovalsConfig)  # CONTRACT §5.2
    state: StateConfig = Field(default_factory=StateConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)  # CONTRACT §5.1
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    events: EventsConfig = Field(default_factory=EventsConfig)
    drills: DrillsConfig = Field(default_factory=DrillsConfig)
    routes: list[RouteConfig] = Field(min_length=1)

    def route(self, name: str) -> RouteConfig | None:
        for r in self.routes:
            if r.name == name:
                return r
        return None
