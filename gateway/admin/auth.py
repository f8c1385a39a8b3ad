"""Admin authentication and authorization: JWT bearer tokens and scopes.

Owns the only import of pyjwt. Keys: an HMAC secret (env var or file, >= 32 bytes), a PEM
public key, or a JWKS URL (keys cached, unknown `kid` refetched at most once per
`jwks_min_refetch_interval`, the last good key set kept when the endpoint is down).
A key is only ever used with the algorithms of its type; `none` is never accepted.
Every failure becomes Unauthenticated with a short type and no detail; pyjwt errors do
not leave this module.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWKClient

from gateway.config import AuthConfig
from gateway.errors import ApiError, Forbidden, Unauthenticated

__all__ = ["SCOPES", "Authenticator", "FailureLimiter", "Principal", "mint"]

SCOPES = ("killgate:read", "killgate:kill", "killgate:rollout", "killgate:alert",
          "killgate:admin")
MAX_AUTH_HEADER = 8192
MAX_JOSE_BRACKETS = 32  # `[` and `{` in a JOSE header; real ones hold a handful
MIN_SECRET = 32
VERIFIED_CACHE = 256  # tokens whose signature we checked, kept for their lifetime


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "killgate:admin" not in self.scopes:
            raise Forbidden(scope)


def mint(secret: str, subject: str, scope: str, ttl: float, issuer: str | None,
         audience: str | None) -> str:
    """An HS256 admin token (for development, tests and `killgate token`)."""
    if len(secret.encode()) < MIN_SECRET:
        raise ValueError(f"the HMAC secret must be at least {MIN_SECRET} bytes")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "scope": scope, "iat": now, "exp": now + int(ttl),
                              "jti": uuid.uuid4().hex}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def _nested(segment: str) -> bool:
    """Whether a token's first segment is not a plausible JOSE header but a nesting attack
    on the JSON decoder: 2,900 nested arrays fit under the 8 KiB cap and cost ~6x a valid
    check's CPU before the decoder gives up (benchmarks/auth_cost.py). Real headers hold a
    handful of brackets (an `x5c` list, an embedded `jwk`), whatever their length."""
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except ValueError:  # (binascii.Error is one)
        return True
    return raw.count(b"[") + raw.count(b"{") > MAX_JOSE_BRACKETS


# RFC 7515 §4.1.9: "JWT" and "application/jwt" are the same type; RFC 9068 access tokens
ACCESS_TYPS = frozenset({"jwt", "application/jwt", "at+jwt", "application/at+jwt"})


class FailureLimiter:
    """Repeated auth failures from one address (`limit` within `window` seconds) limit it:
    its bad tokens get 429, and at most one token a `retry` seconds is checked at all (a
    token check costs CPU in the process that also serves traffic). A valid token from a
    limited address is still accepted when it is checked: an operator behind the same NAT
    as a broken script can still kill, retrying after `Retry-After`."""

    def __init__(self, limit: int = 20, window: float = 60.0, retry: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.retry = retry
        self.clock = clock
        self._fails: dict[str, list[float]] = {}
        self._tried: dict[str, float] = {}  # limited address -> when a token was last checked

    def limited(self, addr: str) -> bool:
        now = self.clock()
        recent = [t for t in self._fails.get(addr, []) if now - t < self.window]
        if recent:
            self._fails[addr] = recent
        else:
            self._fails.pop(addr, None)
            self._tried.pop(addr, None)
        return len(recent) >= self.limit

    def may_check(self, addr: str) -> bool:
        """For a limited address: whether one more token may be checked now."""
        now = self.clock()
        if now - self._tried.get(addr, -self.retry) < self.retry:
            return False
        self._tried[addr] = now
        if len(self._tried) > 10_000:  # bound memory under a spray of addresses
            self._tried.pop(next(iter(self._tried)))
        return True

    def refusal(self) -> ApiError:
        return ApiError(429, "too_many_failures", "too many failed authentication attempts "
                        f"from this address; a valid token is accepted again after "
                        f"{self.retry:g}s")

    def failed(self, addr: str) -> None:
        fails = self._fails.setdefault(addr, [])
        fails.append(self.clock())
        if len(fails) > self.limit:  # only the newest `limit` matter to check()
            del fails[0]
        if len(self._fails) > 10_000:  # bound memory under a spray of addresses
            self._fails.pop(next(iter(self._fails)))


class Authenticator:
    def __init__(self, cfg: AuthConfig, resolve: Callable[[str], Path],
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.algorithms = list(cfg.algorithms)
        self.problem: str | None = None
        self._key: Any = None
        self._jwks: PyJWKClient | None = None
        self._jwks_last_fetch = 0.0
        self._jwks_keys: dict[str, Any] = {}
        # token -> (the key that verified it, its claims). A signature check costs ~60 µs
        # warm and ~0.45 ms on a cold CPU, and operators' scripts reuse one token for
        # many calls; a hit still checks the times and that the key is still current.
        self._verified: dict[str, tuple[Any, dict[str, Any]]] = {}
        try:
            self._load(resolve)
        except (OSError, ValueError) as exc:
            self.problem = str(exc)

    def _load(self, resolve: Callable[[str], Path]) -> None:
        cfg = self.cfg
        if cfg.jwks_url:
            self._jwks = PyJWKClient(cfg.jwks_url, cache_keys=False, cache_jwk_set=False,
                                     timeout=5)
            return
        if cfg.public_key_file:
            path = resolve(cfg.public_key_file)
            self._key = path.read_text()
            if "PRIVATE KEY" in self._key:
                raise ValueError(f"{path} holds a private key; give the public key")
            return
        if cfg.hs256_secret_file:
            secret = resolve(cfg.hs256_secret_file).read_text().strip()
            where = f"the file {cfg.hs256_secret_file}"
        else:
            env = cfg.secret_env
            secret = os.environ.get(env, "")
            where = f"the environment variable {env}"
            if not secret:
                raise ValueError(f"no admin token secret: set {where} (>= {MIN_SECRET} bytes)")
        if len(secret.encode()) < MIN_SECRET:
            raise ValueError(f"the admin token secret in {where} is shorter than "
                             f"{MIN_SECRET} bytes")
        self._key = secret

    async def _jwks_key(self, kid: str | None) -> Any:
        """The key for `kid`. The set is refetched when it is older than the refresh
        interval (a key removed at the IdP stops verifying then) or, at most once per
        `jwks_min_refetch_interval`, for an unknown kid; when the endpoint is down the last
        good set stays in use."""
        if kid is None:
            raise Unauthenticated()
        now = time.monotonic()
        since = now - self._jwks_last_fetch
        stale = since > self.cfg.jwks_refresh_interval
        if stale or (kid not in self._jwks_keys and
                     (since >= self.cfg.jwks_min_refetch_interval or not self._jwks_keys)):
            await self._refresh_jwks(now)
        key = self._jwks_keys.get(kid)
        if key is None:
            raise Unauthenticated()  # unknown kid: no refetch storm
        return key

    async def _refresh_jwks(self, now: float) -> None:
        assert self._jwks is not None
        self._jwks_last_fetch = now
        try:
            keys = await asyncio.to_thread(self._jwks.get_signing_keys, True)
        except Exception:  # noqa: BLE001 - endpoint down: keep the last good set
            return
        self._jwks_keys = {k.key_id: k.key for k in keys if k.key_id}

    async def authenticate(self, header: str | None) -> Principal:
        if self.problem is not None:
            raise ApiError(503, "auth_not_configured", self.problem)
        if not header or len(header) > MAX_AUTH_HEADER:
            raise Unauthenticated()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token.count(".") != 2:
            raise Unauthenticated()
        hit = self._verified.get(token)
        if hit is not None:
            principal = await self._cached(token, *hit)
            if principal is not None:
                return principal
        if _nested(token[:token.index(".")]):
            raise Unauthenticated()
        try:
            head = jwt.get_unverified_header(token)
            alg = head.get("alg")
            if not isinstance(alg, str) or alg not in self.algorithms:
                raise Unauthenticated()
            if "crit" in head:
                raise Unauthenticated()  # we understand no extensions (RFC 7515 §4.1.11)
            typ = head.get("typ")
            if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TYPS):
                # a token typed as another kind of JWT (a logout or security-event token)
                # must not pass as an access token (RFC 8725 §3.11); `aud` does the rest
                raise Unauthenticated()
            key = await self._jwks_key(head.get("kid")) if self._jwks else self._key
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, audience=self.cfg.audience,
                issuer=self.cfg.issuer, leeway=self.cfg.leeway,
                options={"require": ["exp", "iat", "sub"], "verify_aud": bool(self.cfg.audience),
                         "verify_iss": bool(self.cfg.issuer), "strict_aud": False})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("expired") from None
        except ApiError:
            raise
        except Exception:  # noqa: BLE001 - any decode failure is a 401, never a 500
            raise Unauthenticated() from None
        principal = self._principal(claims)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (key, claims)
        return principal

    async def _cached(self, token: str, key: Any, claims: dict[str, Any]) -> Principal | None:
        """A token verified before: still in its time window, and its key still current
        (a JWKS refresh that dropped the key ends it). None: verify it afresh."""
        if self._jwks:
            try:
                current = await self._jwks_key(jwt.get_unverified_header(token).get("kid"))
            except Unauthenticated:
                current = None
            if current is not key:
                self._verified.pop(token, None)
                return None
        now = self.clock()
        if claims["exp"] <= now - self.cfg.leeway:
            self._verified.pop(token, None)
            raise Unauthenticated("expired")
        if claims.get("nbf", 0) > now + self.cfg.leeway:
            raise Unauthenticated()
        return self._principal(claims)

    def _principal(self, claims: dict[str, Any]) -> Principal:
        now = self.clock()
        for name in ("exp", "iat", "nbf"):
            v = claims.get(name)
            if name in claims and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise Unauthenticated()  # pyjwt accepts numeric strings; we do not
        if claims["iat"] > now + self.cfg.leeway:
            raise Unauthenticated()
        if self.cfg.max_token_age is not None and now - claims["iat"] > self.cfg.max_token_age:
            raise Unauthenticated("expired")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise Unauthenticated()
        raw_scope = claims.get("scope")
        scopes: set[str] = set()
        if isinstance(raw_scope, str):
            scopes.update(raw_scope.split())
        scp = claims.get("scp")
        if isinstance(scp, list):
            scopes.update(s for s in scp if isinstance(s, str))
        return Principal(sub, frozenset(scopes))

