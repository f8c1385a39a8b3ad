"""A drill plan (`killgate drill run PLAN.yaml`, or the one-line forms): what to rehearse,
how hard to push, what counts as passing and when to stop.

Owns the plan's schema (pydantic, frozen, unknown keys refused, errors named by YAML
path) and its defaults. Pure: parsing only, no I/O beyond the text it is given.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.config import Duration
from gateway.config_problems import format_path
from gateway.config_types import check_http_url
from gateway.config_yaml import load_yaml
from gateway.errors import ConfigError, Problem

__all__ = ["MEASURE", "Abort", "Plan", "Request", "Target", "Targets", "duration", "fault_ttl",
           "parse_plan", "plan_from", "too_long"]

Kind = Literal["kill", "rollback", "failover", "store_loss"]
MEASURE = {"kill": "time_to_kill_ms", "store_loss": "time_to_kill_ms",
           "failover": "time_to_failover_ms", "rollback": "time_to_rollback_ms"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Model):
    p50: float | None = Field(default=None, ge=0)
    p99: float | None = Field(default=None, ge=0)
    max: float | None = Field(default=None, ge=0)


class Targets(_Model):
    """What passing means. Times in milliseconds; the main measure is the kind's own
    (time_to_kill_ms, time_to_failover_ms or time_to_rollback_ms)."""

    time_to_kill_ms: Target = Field(default_factory=lambda: Target(max=2000))
    time_to_failover_ms: Target = Field(default_factory=lambda: Target(max=2000))
    time_to_rollback_ms: Target = Field(default_factory=lambda: Target(max=2000))
    time_to_restore_ms: Target = Field(default_factory=lambda: Target(max=5000))
    leaks: int = Field(default=0, ge=0)
    errors: int = Field(default=0, ge=0)


class Abort(_Model):
    """Stop and restore at once when users on the watched route see errors: answers >= 500
    other than `killed` ones, from the gateways' own /metrics, the drill's own excluded."""

    error_rate: float = Field(default=0.05, gt=0, le=1)
    min_requests: int = Field(default=20, ge=1)
    route: str | None = None  # default: the production route a drill route mirrors
    interval: Duration = 0.5  # how often every instance's /metrics is read

    @field_validator("interval")
    @classmethod
    def _often(cls, v: float) -> float:
        # (0 read every instance's page in a tight loop; past the watch's 5 s window, a
        # drill shorter than it was never read twice: the condition could never fire)
        if not 0.1 <= v <= 5:
            raise ValueError("must be at least 100ms and at most 5s (the watch's window)")
        return v


class Request(_Model):
    """The synthetic request (default: GET on the route's path prefix, with its match
    headers and host; the body's `model` when the route matches on it)."""

    method: Literal["GET", "POST", "HEAD", "PUT"] = "GET"
    path: str | None = Field(default=None, pattern=r"^/[!-~]*$")
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = Field(default=None, max_length=64 * 1024)

    @field_validator("headers")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        # (else every request of the drill fails in the HTTP client, and the drill aborts
        # as if no instance answered)
        for name, value in v.items():
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}", name):
                raise ValueError(f"{name[:64]!r} is not a header field name")
            if not re.fullmatch(r"[\t\x20-\x7e\x80-\xff]{0,8192}", value):
                raise ValueError(f"the value of {name!r} holds a control character "
                                 "(CR, LF, NUL, ...) or is too long")
        return v


class Plan(_Model):
    kind: Kind
    route: str = Field(min_length=1, max_length=64)
    version: str | None = None
    scope: Literal["version", "route", "global"] | None = None  # kill, store_loss
    to: str | None = None  # rollback: default the previous known-good, else the stable
    production: bool = False
    rate: float = Field(default=50, gt=0, le=2000)  # requests per second per instance
    steady: Duration = 1.0
    hold: Duration = 5.0
    settle: Duration = 2.0
    instances: list[str] | None = None
    request: Request = Field(default_factory=Request)
    store: str | None = None  # store_loss: the redis URL the drill may pause
    targets: Targets = Field(default_factory=Targets)
    abort: Abort = Field(default_factory=Abort)
    reason: str = Field(default="recovery drill", min_length=1, max_length=512)

    @field_validator("steady", "hold", "settle")
    @classmethod
    def _window(cls, v: float) -> float:
        if not 0 < v <= 600:
            raise ValueError("must be > 0 and at most 10m")
        return v

    @field_validator("instances")
    @classmethod
    def _urls(cls, v: list[str] | None) -> list[str] | None:
        for u in v or ():
            if not u.startswith(("http://", "https://")):
                raise ValueError(f"{u!r} is not an http(s) URL")
            try:  # (refused here, before the drill opens: port 99999 opened it, then
                # every request failed and the drill aborted having touched the fleet)
                check_http_url(u)
            except ValueError as exc:
                raise ValueError(f"{u!r}: {exc}") from None
        # (as --instances takes them: the probe's path follows, and '//v2/...' matches no
        # route)
        return None if v is None else [u.rstrip("/") for u in v]

    @model_validator(mode="after")
    def _fits_kind(self) -> Plan:
        if self.kind == "failover" and self.version is None:
            raise ValueError("a failover drill names the version that fails ('version')")
        if self.kind in ("kill", "store_loss") and self.scope == "version" and not self.version:
            raise ValueError("scope 'version' needs 'version'")
        if self.rate * self.steady < 3:  # (domain/drillreport.steady_problems wants 3)
            raise ValueError(
                f"rate {self.rate:g}/s over steady {self.steady:g}s sends "
                f"{self.rate * self.steady:g} request(s) per instance in the steady window: "
                "the steady-state check needs at least 3 requests per instance: raise 'rate' "
                "or 'steady' (--rate, --steady)")
        if self.kind == "store_loss" and self.hold > 60:
            raise ValueError("a store outage lasts at most 60s ('hold')")
        return self

    @property
    def kill_scope(self) -> str:
        return self.scope or ("version" if self.version else "route")

    @property
    def measure(self) -> str:
        return MEASURE[self.kind]


def parse_plan(text: str, source: str = "<plan>") -> Plan:
    """A plan from YAML text; ConfigError naming every problem by its path."""
    # (the config's strict loader: with yaml.safe_load a key written twice took its last
    # value silently, `route: iris-drill` then `route: iris` drilled iris, and an integer
    # of 5,000 digits came out of `killgate drill run` as a ValueError traceback)
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError([Problem("", f"{source}: the plan must be a mapping")])
    return plan_from(data)


def plan_from(data: dict[str, Any]) -> Plan:
    """A plan from its fields (a YAML mapping, or the one-line forms' arguments);
    ConfigError naming every problem by its path."""
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([Problem(format_path(tuple(e["loc"])), e["msg"])
                           for e in exc.errors()]) from None


#: what a drill keeps open beyond its windows (its deadline: drills.max_duration at most),
#: and how long a failover drill's fault outlasts its hold (drills.max_fault_ttl at most)
OPEN_MARGIN = 300
FAULT_MARGIN = 60


def duration(plan: Plan) -> int:
    """The drill's duration as it asks for it when it opens (seconds)."""
    return int(plan.steady + plan.hold + plan.settle + OPEN_MARGIN)


def fault_ttl(plan: Plan) -> int:
    return int(plan.hold + FAULT_MARGIN)


def too_long(plan: Plan, limits: dict[str, Any]) -> str | None:
    """Why the fleet (its `drills:` settings, from /v1/config) would refuse this drill for
    its length, in the plan's own terms (the API names its 'duration' and 'ttl', which
    nobody running a drill set); None when it fits."""
    ttl, longest = limits.get("max_fault_ttl"), limits.get("max_duration")
    if plan.kind == "failover" and isinstance(ttl, int | float) and fault_ttl(plan) > ttl:
        return (f"--hold {plan.hold:g}s is too long for a failover drill on this fleet: its "
                f"fault lasts the hold + {FAULT_MARGIN} s, at most drills.max_fault_ttl "
                f"({ttl:g}s): hold for at most {max(0, ttl - FAULT_MARGIN):g}s")
    if isinstance(longest, int | float) and duration(plan) > longest:
        return (f"--steady, --hold and --settle ({plan.steady + plan.hold + plan.settle:g}s) "
                f"and {OPEN_MARGIN} s of margin are longer than drills.max_duration "
                f"({longest:g}s) on this fleet: shorten them")
    return None
