"""The config schema: `Config`, the frozen, validated pydantic model of a whole file
(CONTRACT §2 and its extensions), with the sections no other module owns: `state`,
`server`, `drills` and `log`.

The other sections live beside it (`config_admin`, `config_routes`, `config_telemetry`,
`config_shadow`, built on `config_types`) and are re-exported here, so `gateway.config` is
the one import path of the schema. Reading a file and the cross-field checks live in
`gateway.configfile`. Imports only those `gateway.config_*` modules (foundations).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from gateway.config_admin import DEFAULT_SECRET_ENV, AdminConfig, ApprovalsConfig, AuthConfig
from gateway.config_redisurl import redis_url_problem
from gateway.config_routes import (
    AnalysisConfig,
    FallbackConfig,
    HealthConfig,
    MatchConfig,
    OutlierConfig,
    RetryConfig,
    RouteConfig,
    StickyConfig,
    TimeoutsConfig,
    VersionConfig,
)
from gateway.config_telemetry import AlertsConfig, EventsConfig, TelemetryConfig
from gateway.config_types import (
    Deadline,
    Duration,
    EnvName,
    Frozen,
    Listen,
    SecretEnv,
    at_most,
    parse_duration,
    parse_listen,
    positive,
)

__all__ = [
    "DEFAULT_SECRET_ENV",
    "AdminConfig",
    "AnalysisConfig",
    "ApprovalsConfig",
    "AuditRetentionConfig",
    "AuthConfig",
    "Config",
    "DrillsConfig",
    "Duration",
    "FallbackConfig",
    "HealthConfig",
    "LogConfig",
    "MatchConfig",
    "OutlierConfig",
    "RetryConfig",
    "RouteConfig",
    "ServerConfig",
    "StateConfig",
    "StickyConfig",
    "TimeoutsConfig",
    "VersionConfig",
    "parse_duration",
    "parse_listen",
]


# ---------------------------------------------------------------- state


def _retention_age(v: float) -> float:
    if not 3600.0 <= v <= 87600 * 3600.0:
        raise ValueError("must be at least 1h (a shorter one would trim the events of an "
                         "incident still being worked) and at most 87600h (10 years); "
                         "is the unit right (m is minutes, h hours)?")
    return v


class AuditRetentionConfig(Frozen):
    """`state.audit_retention`: trim the oldest audit events (gateway/state/retention.py).
    A trim always keeps the newest 100 events (domain/retention.py's MIN_KEEP)."""

    max_events: int | None = None
    max_age: Annotated[Duration, AfterValidator(_retention_age)] | None = None
    #: how often each instance looks (one trims: the others' attempts change nothing)
    interval: Annotated[Duration, positive(86400.0)] = 600.0

    @field_validator("max_events")
    @classmethod
    def _max_events(cls, v: int | None) -> int | None:
        if v is not None and not 100 <= v <= 100_000_000:
            raise ValueError("must be at least 100 (a trim always keeps the newest 100 events) "
                             "and at most 100000000")
        return v

    @model_validator(mode="after")
    def _some_bound(self) -> AuditRetentionConfig:
        if self.max_events is None and self.max_age is None:
            raise ValueError("needs max_events, max_age or both (or leave audit_retention out: "
                             "the trail is then never trimmed)")
        return self


class StateConfig(Frozen):
    backend: Literal["local", "redis"] = "local"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = Field(default="killgate", min_length=1, pattern=r"^[A-Za-z0-9_.:\-]+$")
    path: str = "var/killgate-store.json"
    snapshot_path: str = "var/killgate-state.json"
    audit_mirror: str | None = None  # optional JSONL copy of the whole audit trail
    audit_retention: AuditRetentionConfig | None = None  # (None: never trimmed)
    on_unavailable: Literal["last_known", "fail_closed"] = "last_known"
    max_staleness: Deadline = 5.0
    poll_interval: Annotated[Duration, positive(60.0)] = 0.25
    heartbeat_interval: Annotated[Duration, positive(60.0)] = 1.0
    instance_lease: Deadline = 5.0
    command_timeout: Annotated[Duration, positive(60.0)] = 0.5
    #: how long start-up tries (attempt after attempt) to sync with the store before the
    #: listeners open without it; at least 4 x command_timeout (state/sync.py)
    start_timeout: Annotated[Duration, positive(60.0)] = 2.0
    ready_without_state: bool = False
    #: a write is confirmed only once this many redis replicas have it (WAIT); 0 = the primary
    min_replicas: int = Field(default=0, ge=0, le=32)
    replica_timeout: Annotated[Duration, positive(60.0)] = 0.5
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
        problem = redis_url_problem(v)
        if problem is not None:
            raise ValueError(f"cannot be used: {problem}")
        return v

    @model_validator(mode="after")
    def _replicas_need_redis(self) -> StateConfig:
        if self.min_replicas and self.backend != "redis":
            raise ValueError("min_replicas needs backend: redis (a local store has no replicas)")
        return self



# ---------------------------------------------------------------- server-wide


_DRAIN = at_most(3600.0, "no process manager waits that long for a stop")
# (nginx's default is 75s; idle connections past an hour only hold descriptors)
_KEEPALIVE = at_most(3600.0, "an idle connection held longer only holds a descriptor")
_DEBOUNCE = at_most(60.0, "a saved file would go unread for that long")
_MAX_MIN_RATE = 16 << 20  # server.body_min_rate, bytes/s


class ServerConfig(Frozen):
    max_body_size: int = Field(default=10 * 1024 * 1024, gt=0, le=1 << 34)
    model_peek_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    #: bytes of request bodies held at once (per process) while their `model` is read,
    #: each counting what it holds (up to model_peek_bytes) until its request ends; beyond,
    #: a fast 503 `overloaded` (without it: max_inflight x model_peek_bytes, 10 GiB)
    model_peek_memory: int = Field(default=512 << 20, ge=1 << 20, le=1 << 40)
    drain_timeout: Annotated[Duration, _DRAIN] = 30.0
    #: at SIGTERM, /readyz answers 503 at once and the listeners keep accepting and
    #: serving for this long; then the drain begins. For load balancers that take an
    #: instance out by its health check (in Kubernetes, preStop's sleep does it: keep 0)
    shutdown_delay: Duration = 0.0
    #: `serve --workers N`: a worker whose event loop has not run for this long is ended
    #: (SIGUSR1: its stacks to stderr, then SIGKILL) and restarted; 0 = never
    worker_timeout: Duration = 30.0
    reload_debounce: Annotated[Duration, _DEBOUNCE] = 0.2
    watch_config: bool = True  # reload when the file changes (SIGHUP always reloads)
    keepalive_timeout: Annotated[Duration, _KEEPALIVE] = 60.0
    header_timeout: Deadline = 10.0  # a new connection must send a request head by then
    #: the longest pause while reading a request body; a body of up to 64 KiB (read whole
    #: before its request goes on) must be whole within it of its head
    body_timeout: Deadline = 30.0
    #: bytes/s a request body read as it streams (chunked, over 64 KiB, or 100-continue)
    #: must average once body_timeout has passed (Apache's mod_reqtimeout MinRate): by t
    #: seconds of reading, (t - body_timeout) x this many bytes, else 408 and the close;
    #: the clock stops while the gateway is not reading (a backend slow to take the body).
    #: 0 = off (a byte every body_timeout then holds the request to the route's total).
    #: The same rate bounds a client holding up an answer (send_timeout)
    body_min_rate: int = 1024
    #: the longest a client holding up an answer (its socket full) may take nothing of it
    #: before it is dropped (any progress resets it); it must also average body_min_rate
    #: over the wait once send_timeout has passed
    send_timeout: Deadline = 60.0
    max_connections_per_backend: int = Field(default=256, ge=1, le=100_000)
    #: a pooled backend connection idle longer than this is closed, not reused: keep it
    #: below the backends' own keep-alive timeout (uvicorn's and Node's: 5 s)
    backend_idle_timeout: Deadline = 4.0
    #: requests that may wait for a busy backend's connection; beyond, a fast 503
    max_pending_per_backend: int = Field(default=1024, ge=0, le=1_000_000)
    #: requests in flight in one process (streams included); beyond, a fast 503
    max_inflight: int = Field(default=10_000, ge=1, le=1_000_000)
    #: open client connections per process; beyond, new ones are closed at once
    max_connections: int = Field(default=20_000, ge=1, le=1_000_000)
    #: open client connections per peer address; beyond, a new one from that address is
    #: closed at once. 0 = off (the default: behind a load balancer or NAT every client is
    #: one address); at most max_connections (config_checks)
    max_connections_per_client: int = Field(default=0, ge=0, le=1_000_000)
    access_log: bool = False

    @field_validator("worker_timeout")
    @classmethod
    def _watchdog(cls, v: float) -> float:
        if v and not 2.0 <= v <= 3600.0:
            raise ValueError("must be 0 (off) or from 2s to 3600s (a serving worker "
                             "writes to its supervisor every 0.5s)")
        return v

    @field_validator("body_min_rate")
    @classmethod
    def _min_rate(cls, v: int) -> int:
        if not 0 <= v <= _MAX_MIN_RATE:
            raise ValueError(f"must be 0 (off) or a rate in bytes/s up to {_MAX_MIN_RATE} "
                             "(16 MiB/s: a minimum above that would cut ordinary clients)")
        return v

    @field_validator("shutdown_delay")
    @classmethod
    def _delay(cls, v: float) -> float:
        if v > 600.0:
            raise ValueError("must be at most 600s")
        return v


class DrillsConfig(Frozen):
    """Recovery drills (CONTRACT §5.4): the key of drill fault tokens, limits, events."""

    #: HMAC key of drill fault tokens (>= 32 bytes), the same on every instance; when the
    #: variable is unset (and no file), it is derived from the admin HS256 secret
    key_env: SecretEnv | None = "KILLGATE_DRILL_KEY"
    key_file: str | None = None
    #: a drill fault ends by itself after this at the latest
    max_fault_ttl: Annotated[Duration, positive(24 * 3600.0)] = 300.0
    #: a drill still open after this is overdue (metric)
    max_duration: Annotated[Duration, positive(24 * 3600.0)] = 1800.0
    #: a drill still open this long after its deadline is restored and ended (aborted) by
    #: the fleet (control/drillwatch.py); null: never
    auto_restore_after: Duration | None = 60.0
    #: the host instances publish with their heartbeat (default: the listener's address;
    #: a wildcard listener publishes the host name)
    advertise_host: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.\-:\[\]]+$")

    @field_validator("auto_restore_after")
    @classmethod
    def _auto(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v <= 24 * 3600.0:
            raise ValueError("must be between 0s and 24h (null: never)")
        return v


class LogConfig(Frozen):
    format: Literal["json", "text"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"



class Config(Frozen):
    listen: Listen = "0.0.0.0:8080"
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
