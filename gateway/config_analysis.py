"""The config of a route's canary analysis and progressive rollout: `routes[].analysis`.

Owns `AnalysisConfig` (window, interval, the thresholds a verdict judges by, the per-key and
per-client quotas, steps, the shadow-agreement gate) and the bounds of its fields, each with
the reason a value past it is a mistake. Imports only the config building blocks
(`gateway.config_types`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from gateway.config_types import Duration, Frozen, at_least, at_most, check_http_url

__all__ = ["MAX_MIN_REQUESTS", "STATS_KEEP_S", "AnalysisConfig"]

#: seconds of per-request statistics a canary verdict can read (the default `keep_seconds`
#: of gateway/domain/stats.py's WindowStats; a test holds them equal)
STATS_KEEP_S = 900


_WINDOW = at_most(float(STATS_KEEP_S), "the per-request statistics a verdict reads are kept "
                  "that long")
_WINDOW_FLOOR = at_least(1.0, "a shorter window holds too few answers to judge a canary; "
                         "0s judges none, and the canary is never rolled back")
_INTERVAL_FLOOR = at_least(0.1, "each round is a store round trip per route; the rollout "
                           "loop runs no faster")
#: a canary must see this many answers in a window of at most 15m to be judged (more would be
#: over 1000 answers a second to the canary: a typo that leaves it never judged)
MAX_MIN_REQUESTS = 1_000_000
_INTERVAL = at_most(3600.0, "a failing canary would wait that long for its rollback")
_SLACK = at_most(60.0, "a slack that large would pass any latency")
_STEP = at_most(24 * 3600.0, "a rollout step longer than a day is a typo more often than a "
                "plan; hold the rollout with weights instead")


class AnalysisConfig(Frozen):
    window: Annotated[Duration, _WINDOW_FLOOR, _WINDOW] = 60.0
    interval: Annotated[Duration, _INTERVAL_FLOOR, _INTERVAL] = 10.0
    min_requests: int = Field(default=50, ge=1, le=MAX_MIN_REQUESTS)
    #: on a route with `sticky`: at most this many requests of one sticky key count toward
    #: the verdict per `window` (one client must not decide it; domain/keyquota.py);
    #: null: every request counts
    max_per_key: int | None = Field(default=10, ge=1, le=MAX_MIN_REQUESTS)
    #: ... and at most this many of one client address's requests that carry a sticky key
    #: (behind admin.trusted_proxies: the address they vouch for; against one client
    #: rotating keys); null (default): no bound by address (behind a proxy not trusted,
    #: every client has its address)
    max_per_client: int | None = Field(default=None, ge=1, le=MAX_MIN_REQUESTS)
    max_error_rate_increase: float = Field(default=0.05, ge=0, le=1)
    max_p99_ratio: float = Field(default=1.5, gt=0)
    # differences smaller than this never fail a canary (1 ms vs 2 ms is noise, not a ratio)
    p99_slack: Annotated[Duration, _SLACK] = 0.025
    webhook_url: str | None = None
    steps: list[float] | None = None
    step_interval: Annotated[Duration, _STEP] = 60.0
    #: the route's shadow gets traffic (promote, weights, a progressive step) only once it
    #: agreed with the primary on at least this share of compared requests (§5.5) ...
    min_shadow_agreement: float | None = Field(default=None, ge=0, le=1)
    #: ... over at least this many comparisons (fleet-wide)
    min_shadow_compared: int = Field(default=100, ge=1)

    @field_validator("webhook_url")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        # (as events.webhooks[].url: 'ftp://...', 'http://' or a port past 65535 passed
        # check, and the auto-rollback notice to it failed at each rollback, retried)
        # (a query may carry the receiver's token)
        if v is not None:
            check_http_url(v.split("?", 1)[0])
        return v

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(not 0 <= s <= 100 for s in v) or v != sorted(v)):
            raise ValueError("must be a non-empty ascending list of percentages 0-100")
        return v
