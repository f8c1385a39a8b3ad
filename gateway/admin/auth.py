"""Admin authentication and authorization: JWT bearer tokens and scopes.

Owns the only import of pyjwt. Keys: an HMAC secret (env var or file, >= 32 bytes), a PEM
public key, or a JWKS URL (its cache and refetch rule: admin/jwks.py). Who a token speaks
for and its scopes: admin/principal.py (re-exported here).
A key is only ever used with the algorithms of its type; `none` is never accepted.
Every failure becomes Unauthenticated with a short type and no detail; pyjwt errors do
not leave this module. A token whose `kid` names a scoped key (admin/scopedkeys.py) is
checked with that key alone, HS256 only, and bound to its scopes. The claims of a token
whose signature passed are judged in admin/principal.py (principal_of).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWKSet

from gateway import filemodes
from gateway.admin.jwks import JwksKeys, read_key_set
from gateway.admin.principal import (
    Principal,
    principal_of,
    printable_subject,
    scopes_of,
    still_in_age,
)
from gateway.admin.scopedkeys import ScopedKey, load_scoped_keys
from gateway.admin.tokens import MIN_SECRET
from gateway.config import AuthConfig
from gateway.config_admin import SCOPES
from gateway.errors import ApiError, Unauthenticated

__all__ = ["MIN_SECRET", "SCOPES", "Authenticator", "Principal", "printable_subject",
           "scopes_of"]

MAX_AUTH_HEADER = 8192
MAX_JOSE_BRACKETS = 32  # `[` and `{` in a JOSE header; real ones hold a handful
VERIFIED_CACHE = 256  # tokens whose signature we checked, kept for their lifetime
#: genuine tokens found expired, refused again unchecked: one old token (no failure to
#: admin/standing.py) must not buy signature checks past the shared budget
EXPIRED_CACHE = 1024


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


def _signing_keys(data: Any) -> dict[str, Any]:
    """A key set's signing keys by kid (as pyjwt's client picked them: `use` sig or none,
    with a kid); ValueError or pyjwt's error when it holds none."""
    keys = {k.key_id: k.key for k in PyJWKSet.from_dict(data).keys
            if k.public_key_use in ("sig", None) and k.key_id}
    if not keys:
        raise ValueError("the key set holds no signing key")
    return keys


def _text(path: Path, setting: str) -> str:
    """A key file's text (filemodes.read_key_file: a regular file of a bounded size);
    ValueError naming the setting and the file, not an OSError's repr (`[Errno 2] No such
    file or directory: '...'` said neither which setting nor what to do)."""
    try:
        return filemodes.read_key_file(path).decode()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (a PEM key or a secret is)") from None


class Authenticator:
    def __init__(self, cfg: AuthConfig, resolve: Callable[[str], Path],
                 clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.algorithms = list(cfg.algorithms)
        self.problem: str | None = None
        self._key: Any = None
        self._jwks: JwksKeys | None = None
        # token -> (the key that verified it, its claims, its scoped key, the principal
        # they make). A signature check costs ~60 µs warm and ~0.45 ms on a cold CPU, and
        # operators' scripts reuse one token for many calls; a hit still checks the times
        # and that the key is still current (the principal's other checks are the claims'
        # and this authenticator's alone: not made again)
        self._verified: dict[str, tuple[Any, dict[str, Any], ScopedKey | None,
                                        Principal]] = {}
        self._expired: dict[str, None] = {}  # (insertion order: the oldest goes first)
        #: an Authorization header whose token was verified -> that token: `_token` is a
        #: function of the header alone, and a client sends the same header on every call
        #: (its shape checks were ~4k instructions of a kill before its commit leaves)
        self._tokens: dict[str, str] = {}
        try:
            self._load(resolve)
        except (OSError, ValueError) as exc:
            self.problem = str(exc)
        #: the problem as an (unauthenticated) caller is told it: which setting, never a
        #: file's path (the log and `killgate check` on the gateway's host say that)
        self.said: str | None = self.problem
        for setting in ("public_key_file", "hs256_secret_file"):
            if self.problem is not None and getattr(cfg, setting):
                self.said = (f"the admin API's key file (admin.auth.{setting}) cannot be "
                             "used; the gateway's log (admin_auth_not_configured) and "
                             "`killgate check` on its host say why")
        main = self._key if isinstance(self._key, str) and self.problem is None else None
        self.scoped: dict[str, ScopedKey] = load_scoped_keys(cfg.scoped_keys, resolve, main)
        #: which keys this holds (a digest of them; None for a key set alone, which
        #: refreshes itself): a reload compares it, so a key rotated in its file with the
        #: config unchanged takes effect
        held = [] if self._key is None or self.problem is not None else [str(self._key)]
        held += [f"{k.name}\n{k.secret}" for k in self.scoped.values()]
        self.key_digest = (hashlib.sha256("\0".join(held).encode()).hexdigest()
                           if held else None)

    def _load(self, resolve: Callable[[str], Path]) -> None:
        cfg = self.cfg
        if cfg.jwks_url:
            url = cfg.jwks_url

            async def fetch() -> dict[str, Any]:  # (bounded: admin/jwks.py; parsed apart)
                return await asyncio.to_thread(_signing_keys, await read_key_set(url))

            self._jwks = JwksKeys(fetch, cfg.jwks_refresh_interval,
                                  cfg.jwks_min_refetch_interval)
            return
        if cfg.public_key_file:
            path = resolve(cfg.public_key_file)
            self._key = _text(path, "public_key_file")
            if (bad := filemodes.problem(path, secret=False)) is not None:
                raise ValueError(bad)
            if "PRIVATE KEY" in self._key:
                raise ValueError(f"{path} holds a private key; give the public key")
            for alg in self.algorithms:  # (else every token is refused 401, as if it was bad)
                try:
                    jwt.get_algorithm_by_name(alg).prepare_key(self._key)
                except Exception:  # noqa: BLE001 - whatever PyJWT or cryptography raise
                    raise ValueError(f"{path} holds no public key {alg} can use (a PEM "
                                     "'BEGIN PUBLIC KEY' block of that type): every token "
                                     "would be refused") from None
            return
        if cfg.hs256_secret_file:
            path = resolve(cfg.hs256_secret_file)
            secret = _text(path, "hs256_secret_file").strip()
            if (bad := filemodes.problem(path, secret=True)) is not None:
                raise ValueError(bad)
            where = f"the file {cfg.hs256_secret_file}"
        else:
            env = cfg.secret_env
            secret = filemodes.key_env(env)
            where = f"the environment variable {env}"
            if not secret:
                raise ValueError(f"no admin token secret: set {where} (>= {MIN_SECRET} bytes, "
                                 f"e.g. `export {env}=$(openssl rand -hex 32)`)")
        if len(secret.encode()) < MIN_SECRET:
            raise ValueError(f"the admin token secret in {where} is shorter than "
                             f"{MIN_SECRET} bytes")
        self._key = secret

    def _where_to_fix(self) -> str:
        """Said to the caller with the 503: the fix is the gateway's, not the caller's
        shell's (setting the variable where the CLI runs changes nothing)."""
        cfg = self.cfg
        if cfg.jwks_url or cfg.public_key_file or cfg.hs256_secret_file:
            return ("; fix it on the gateway's host and reload it (SIGHUP): key files are "
                    "read again at each reload")
        return ("; set it where `killgate serve` runs (the gateway's environment, not the "
                "caller's) and restart it: the variable is read at start; then mint tokens "
                "with the same secret (`killgate token`)")

    def _token(self, header: str | None) -> str:
        """The bearer token of an Authorization header, by its shape alone (no work)."""
        if self.problem is not None:
            raise ApiError(503, "auth_not_configured", f"{self.said}{self._where_to_fix()}")
        if not header or len(header) > MAX_AUTH_HEADER:
            raise Unauthenticated()
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or token.count(".") != 2 or not token.isascii():
            raise Unauthenticated()
        return token

    async def cached(self, header: str | None) -> Principal | None:
        """The principal of a token verified before and still valid; None when it must be
        verified (a dictionary look-up: consulted before any rate limit)."""
        token = self._tokens.get(header) if header is not None else None
        if token is None:
            token = self._token(header)
        if token in self._expired:
            raise Unauthenticated("expired")
        hit = self._verified.get(token)
        return None if hit is None else await self._cached(token, *hit)

    async def authenticate(self, header: str | None) -> Principal:
        """`cached`, else `verify`."""
        return await self.cached(header) or await self.verify(header)

    async def verify(self, header: str | None) -> Principal:
        """Check the token's signature and claims (the work a rate limit bounds)."""
        token = self._token(header)
        if _nested(token[:token.index(".")]):
            raise Unauthenticated()
        try:
            head = jwt.get_unverified_header(token)
            kid = head.get("kid")
            # a kid naming a scoped key selects it alone; any other kid is the main key's
            # (as before scoped keys: with one secret the kid is not needed to find it)
            scoped = self.scoped.get(kid) if isinstance(kid, str) else None
            algorithms = self.algorithms if scoped is None else ["HS256"]
            alg = head.get("alg")
            if not isinstance(alg, str) or alg not in algorithms:
                raise Unauthenticated()
            if "crit" in head:
                raise Unauthenticated()  # we understand no extensions (RFC 7515 §4.1.11)
            typ = head.get("typ")
            if typ is not None and (not isinstance(typ, str) or typ.lower() not in ACCESS_TYPS):
                # a token typed as another kind of JWT (a logout or security-event token)
                # must not pass as an access token (RFC 8725 §3.11); `aud` does the rest
                raise Unauthenticated()
            if scoped is not None:
                if scoped.problem is not None:
                    raise ApiError(503, "auth_not_configured", f"{scoped.said}" + (
                        "; fix it where `killgate serve` runs: a variable is read at "
                        "start (restart it), a file at each reload (SIGHUP)"))
                key = scoped.secret
            else:
                key = await self._jwks.key(kid) if self._jwks else self._key
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=self.cfg.audience,
                issuer=self.cfg.issuer, leeway=self.cfg.leeway,
                options={"require": ["exp", "iat", "sub"], "verify_aud": bool(self.cfg.audience),
                         "verify_iss": bool(self.cfg.issuer), "strict_aud": False})
        except jwt.ExpiredSignatureError:  # (checked after the signature)
            raise self._expired_token(token) from None
        except ApiError:
            raise
        except Exception:  # noqa: BLE001 - any decode failure is a 401, never a 500
            raise Unauthenticated() from None
        try:
            principal = principal_of(claims, scoped, self.cfg, self.clock())
        except Unauthenticated as exc:  # (one past max_token_age: expired)
            raise self._expired_token(token) if exc.type == "expired" else exc from None
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = (key, claims, scoped, principal)
        if header is not None:
            if len(self._tokens) >= VERIFIED_CACHE:
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[header] = token
        return principal

    def _expired_token(self, token: str) -> Unauthenticated:
        """A genuine token found expired: remembered (EXPIRED_CACHE), its 401."""
        if len(self._expired) >= EXPIRED_CACHE:
            self._expired.pop(next(iter(self._expired)))
        self._expired[token] = None
        return Unauthenticated("expired")

    async def _cached(self, token: str, key: Any, claims: dict[str, Any],
                      scoped: ScopedKey | None, principal: Principal) -> Principal | None:
        """A token verified before: still in its time window, and its key still current
        (a JWKS refresh that dropped the key ends it). None: verify it afresh."""
        if self._jwks and scoped is None:
            try:
                current = await self._jwks.key(jwt.get_unverified_header(token).get("kid"))
            except Unauthenticated:
                current = None
            # (by value: each refresh builds new key objects, and a token whose key came
            # back unchanged must stay verified, or a refresh made the operator's kill spend
            # a check from a budget a flood may have spent: 429)
            if current is None or current != key:
                self._verified.pop(token, None)
                return None
        now = self.clock()
        if claims["exp"] <= now - self.cfg.leeway:
            self._verified.pop(token, None)
            raise Unauthenticated("expired")
        if claims.get("nbf", 0) > now + self.cfg.leeway:
            raise Unauthenticated()
        still_in_age(claims, self.cfg, self.clock())
        return principal
