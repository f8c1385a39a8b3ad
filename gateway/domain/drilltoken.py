"""Drill fault tokens: the signed ticket that lets one request meet a drill's fault.

Pure (hmac, hashlib, base64, json; time passed in). A token is
`kgd1.<payload>.<mac>`: base64url JSON {d: drill id, r: route, v: version, n: nonce,
e: expiry (unix s)} and HMAC-SHA256 over `kgd1.<payload>` with the drill key, which only
gateways hold. It is honoured only while the state holds an open drill with that id and
nonce (random, drawn when the drill opened) whose active fault names the same route and
version, before both expiries: a forged or altered token fails the MAC; a token replayed
after its drill ended, or from another drill, or on another route or version, matches no
fault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from gateway.domain.statedoc import StateDoc

__all__ = ["HEADER", "Claims", "derive_key", "fault_version", "mint", "verify"]

HEADER = "x-killgate-drill"
_PREFIX = "kgd1."
MAX_TOKEN = 512


@dataclass(frozen=True, slots=True)
class Claims:
    drill: str
    route: str
    version: str
    nonce: str
    expires: float


def derive_key(secret: bytes) -> bytes:
    """A key of its own for drill tokens, from a longer-lived secret (one-way: a drill
    token says nothing about the secret it came from)."""
    return hmac.new(secret, b"killgate drill tokens v1", hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _mac(key: bytes, signed: str) -> str:
    return _b64(hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest())


def mint(key: bytes, claims: Claims) -> str:
    payload = _b64(json.dumps({"d": claims.drill, "r": claims.route, "v": claims.version,
                               "n": claims.nonce, "e": int(claims.expires)},
                              separators=(",", ":")).encode())
    signed = _PREFIX + payload
    return f"{signed}.{_mac(key, signed)}"


def verify(key: bytes, token: str, now: float) -> Claims | None:
    """The claims of a well-formed, correctly signed, unexpired token; else None."""
    if len(token) > MAX_TOKEN or not token.startswith(_PREFIX) or not token.isascii():
        return None
    signed, _, mac = token.rpartition(".")
    if not hmac.compare_digest(_mac(key, signed), mac):
        return None
    try:
        raw: Any = json.loads(_unb64(signed[len(_PREFIX):]))
        claims = Claims(raw["d"], raw["r"], raw["v"], raw["n"], float(raw["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if not all(isinstance(x, str) for x in (claims.drill, claims.route, claims.version,
                                            claims.nonce)):
        return None
    return claims if now < claims.expires else None


def fault_version(claims: Claims, doc: StateDoc, route: str, now: float) -> str | None:
    """The version a request on `route` carrying `claims` must see fail, if any."""
    if now >= claims.expires:
        return None
    rec = doc.drills.get(claims.drill)
    if rec is None or rec.restored or rec.fault is None or rec.route != route:
        return None
    fault = rec.fault
    if (claims.route != route or fault.get("version") != claims.version or not rec.nonce
            or not hmac.compare_digest(rec.nonce, claims.nonce)):
        return None
    expires = fault.get("expires")
    if not isinstance(expires, int | float) or now >= expires:
        return None
    return claims.version
