"""The config of the admin side: `admin` (listener, limits, trusted proxies), `admin.auth`
(JWT algorithms, keys, token ages) and `approvals` (the two-person rule, CONTRACT §5.2).

Owns their frozen pydantic models, defaults and per-field checks. Imports only the config
building blocks (`gateway.config_types`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from gateway.config_types import (
    Duration,
    Frozen,
    Listen,
    SecretEnv,
    at_least,
    at_most,
    check_http_url,
    is_loopback,
)

__all__ = ["DEFAULT_SECRET_ENV", "SCOPES", "AdminConfig", "ApprovalsConfig", "AuthConfig",
           "ScopedKeyConfig"]

DEFAULT_SECRET_ENV = "KILLGATE_JWT_SECRET"
#: every scope the admin API knows (admin/auth.py checks tokens against them)
SCOPES = ("killgate:read", "killgate:kill", "killgate:rollout", "killgate:alert",
          "killgate:drill", "killgate:admin", "killgate:breakglass")


#: scopes a scoped key may not grant: whoever holds its secret (a CronJob's Secret) could
#: do anything, or skip the two-person rule
_MAIN_KEY_ONLY = {"killgate:admin": "implies every scope",
                  "killgate:breakglass": "skips two-person approval"}


class ScopedKeyConfig(Frozen):
    """A second HS256 secret whose tokens may carry only `max_scopes` (a drill CronJob's:
    whoever reads its Secret cannot mint an admin token). Its tokens name it in their
    `kid` header; the gateway verifies a token with that key alone."""

    name: str
    hs256_secret_env: SecretEnv | None = None
    hs256_secret_file: str | None = None
    max_scopes: list[str] = Field(min_length=1, max_length=len(SCOPES))

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", v):
            raise ValueError(f"{v!r} is not a key name such as 'drills' (lower-case letters, "
                             "digits, '.', '_', '-'; at most 63): tokens carry it as `kid`")
        return v

    @field_validator("max_scopes")
    @classmethod
    def _scopes(cls, v: list[str]) -> list[str]:
        for i, scope in enumerate(v):
            if scope in _MAIN_KEY_ONLY:
                raise ValueError(f"[{i}] {scope} cannot be given to a scoped key (it "
                                 f"{_MAIN_KEY_ONLY[scope]}: use the main key for it)")
            if scope not in SCOPES:
                raise ValueError(f"[{i}] unknown scope {scope!r}; known: "
                                 f"{', '.join(s for s in SCOPES if s not in _MAIN_KEY_ONLY)}")
        return v

    @model_validator(mode="after")
    def _one_secret(self) -> ScopedKeyConfig:
        if (self.hs256_secret_env is None) == (self.hs256_secret_file is None):
            raise ValueError("give exactly one of hs256_secret_env and hs256_secret_file")
        return self


_REFETCH_FLOOR = at_least(1.0, "tokens with ever new kids, which need no valid signature, "
                          "would each start a fetch of the key set")
_REFRESH_FLOOR = at_least(1.0, "every admin call, kills included, would wait for a fetch "
                          "of the key set, as slow as the identity provider")
_REFETCH = at_most(3600.0, "a key the identity provider just rotated in would be refused "
                   "that long")
_REFRESH = at_most(24 * 3600.0, "a key the identity provider revoked would stay trusted "
                   "that long")


class AuthConfig(Frozen):
    algorithms: list[str] = Field(default_factory=lambda: ["HS256"], min_length=1)
    hs256_secret_env: SecretEnv | None = DEFAULT_SECRET_ENV
    hs256_secret_file: str | None = None
    public_key_file: str | None = None
    jwks_url: str | None = None
    issuer: str | None = "killgate"
    audience: str | None = "killgate-admin"
    leeway: Duration = 30.0
    #: the oldest a token may be (now - iat), and the longest it may live (exp - iat)
    max_token_age: Duration = 24 * 3600.0
    max_token_lifetime: Duration = 24 * 3600.0
    #: for an unknown kid, at most this often
    jwks_min_refetch_interval: Annotated[Duration, _REFETCH_FLOOR, _REFETCH] = 30.0
    #: the key set is refetched when older than this
    jwks_refresh_interval: Annotated[Duration, _REFRESH_FLOOR, _REFRESH] = 300.0
    #: further HS256 secrets, each limited to some scopes (tokens name one by `kid`)
    scoped_keys: list[ScopedKeyConfig] = Field(default_factory=list, max_length=64)

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
        check_http_url(v.split("?", 1)[0])  # (its port and host: one a connection can use)
        host = m.group(2).rsplit(":", 1)[0] if not m.group(2).endswith("]") else m.group(2)
        if m.group(1) == "http" and not is_loopback(host.strip("[]")):
            raise ValueError("must be https:// (plain http:// only to a loopback address, "
                             "where no network sits between the gateway and the key set)")
        return v

    @field_validator("scoped_keys")
    @classmethod
    def _unique(cls, v: list[ScopedKeyConfig]) -> list[ScopedKeyConfig]:
        seen: set[str] = set()
        for i, key in enumerate(v):
            if key.name in seen:
                raise ValueError(f"[{i}].name: {key.name!r} is used by another key: a token's "
                                 "`kid` must select one key")
            seen.add(key.name)
        return v

    @model_validator(mode="after")
    def _idp_bound(self) -> AuthConfig:
        if self.jwks_url and (not self.issuer or not self.audience):
            missing = " and ".join(n for n in ("issuer", "audience") if not getattr(self, n))
            raise ValueError(
                f"with jwks_url, give {missing} (the identity provider's `iss`, and the "
                "`aud` it puts in tokens meant for killgate): it signs the tokens of every "
                "application (and, at a multi-tenant one, every tenant) with the same keys, "
                "so without them a token it issued for another application would be an "
                "admin token here")
        return self

    @property
    def secret_env(self) -> str:
        """The variable an HS256 secret is read from (when not from a file)."""
        return self.hs256_secret_env or DEFAULT_SECRET_ENV


class AdminConfig(Frozen):
    listen: Listen = "127.0.0.1:8081"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    max_body_size: int = Field(default=64 * 1024, gt=0, le=16 * 1024 * 1024)
    #: X-Forwarded-For is believed only from these peers (both planes); CIDR or address
    trusted_proxies: list[str] = Field(default_factory=list, max_length=256)
    #: open admin connections; beyond, the longest-open idle one is closed to make room
    #: (a new one is refused only when every one has a request in progress)
    max_connections: int = Field(default=1024, ge=1, le=100_000)
    #: token checks (signature verifications) per second from one client address, and
    #: the burst allowed above that rate; a token verified before is never counted
    auth_check_rate: float = Field(default=100.0, gt=0, le=1_000_000)
    auth_check_burst: int = Field(default=200, ge=1, le=1_000_000)
    #: Host names the admin listener answers to besides localhost and IP addresses ("*":
    #: any); unset: any name on a non-loopback listener, none on a loopback one (admin/hosts.py)
    allowed_hosts: list[str] | None = Field(default=None, max_length=256)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = []
        for i, h in enumerate(v):
            name = h.strip().lower().rstrip(".")
            if name != "*" and not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]{0,252}[a-z0-9_])?", name):
                raise ValueError(f"[{i}] {h!r} is not a host name such as "
                                 "'killgate-admin.example.com' (no port, no scheme), or '*'")
            out.append(name)
        return out

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



class ApprovalsConfig(Frozen):
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

