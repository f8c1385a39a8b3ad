"""An instance's signed word, on `/readyz`, of the generation it runs: for a drill asking
it after its restore (control/drillbehind.py).

Pure (hmac, hashlib). The drill asks at the admin address each instance published in its
heartbeat. Whoever writes to the store without the signing key can put back an old signed
heartbeat whose address their own process listens on: without a proof, that process
answered "I am that instance, at an older generation" and failed every drill. So a drill
sends its id and a fresh nonce (`/readyz?drill=ID&nonce=N`: no token), and the instance
adds `proof`: {kid, mac}, the MAC over (instance, generation, nonce) with a key of that
drill's own, derived one-way from a state signing key. The drill got those keys with the
answer that opened it (`readyz_keys`: key id → key, never stored: each answer, a replayed
one too, derives them again), so it can check the proof, and nobody without the state key
can make one. A leaked drill key proves nothing for any other drill.

A worker of a `serve --workers N` group answers for its siblings too (`group`: each one's
instance, generation and proof, made alike for the same nonce): `vouched` takes from it
the entries that prove themselves, for the instances the drill still waits to hear of, at
most MAX_VOUCHED checked an answer (whoever answers at a listed address cannot make the
drill check more than that: the drill's asks in all bound the rest).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Container, Mapping
from typing import Any

__all__ = ["DRILL", "MAX_VOUCHED", "NONCE", "drill_key", "drill_keys", "proof", "proofs",
           "question", "verified", "vouched"]

#: the query's grammar (a drill id as admin/drills.py makes them; a nonce a drill draws)
DRILL = re.compile(r"[A-Za-z0-9-]{1,64}")
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
#: the most entries of one answer's `group` a drill checks
MAX_VOUCHED = 256


def drill_key(secret: bytes, drill: str) -> bytes:
    """The key of `drill`'s proofs (one-way: it tells nothing of the secret, nor of
    another drill's key)."""
    return hmac.new(secret, b"killgate readyz proof v1\x00" + drill.encode("ascii"),
                    hashlib.sha256).digest()


def drill_keys(secrets: Mapping[str, bytes], drill: str) -> dict[str, str]:
    """Key id → `drill`'s key (hex), for every state signing key (the current one and the
    previous, during a rotation: an instance signs with its current key)."""
    return {kid: drill_key(secret, drill).hex() for kid, secret in secrets.items()}


def _mac(key: bytes, instance: str, generation: int, nonce: str) -> str:
    msg = "\x00".join(("killgate readyz v1", instance, str(generation), nonce))
    return hmac.new(key, msg.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def proof(kid: str, secret: bytes, drill: str, instance: str, generation: int,
          nonce: str) -> dict[str, str]:
    """What an instance adds to its /readyz answer for `drill`'s `nonce`."""
    return {"kid": kid, "mac": _mac(drill_key(secret, drill), instance, generation, nonce)}


def proofs(kid: str, secret: bytes, drill: str, members: list[tuple[str, int]],
           nonce: str) -> list[dict[str, Any]]:
    """A group worker's word for its siblings (instance, generation) for `drill`'s `nonce`:
    an entry each, proved as the worker's own answer is."""
    key = drill_key(secret, drill)
    return [{"instance": name, "generation": gen,
             "proof": {"kid": kid, "mac": _mac(key, name, gen, nonce)}}
            for name, gen in members]


def vouched(keys: Mapping[str, str], doc: Any, nonce: str,
            wanted: Container[str]) -> list[dict[str, Any]]:
    """The entries of `doc`'s `group` (a /readyz answer) naming an instance of `wanted`,
    each once, that prove themselves with one of `keys` for this `nonce`; at most
    MAX_VOUCHED checked."""
    group = doc.get("group") if isinstance(doc, dict) else None
    if not isinstance(group, list):
        return []
    out, seen, checked = [], set[str](), 0
    for entry in group:
        name = entry.get("instance") if isinstance(entry, dict) else None
        if not isinstance(name, str) or name in seen or name not in wanted:
            continue
        if checked >= MAX_VOUCHED:
            break
        checked += 1
        if verified(keys, entry, nonce):
            seen.add(name)
            out.append(entry)
    return out


def verified(keys: Mapping[str, str], doc: Any, nonce: str) -> bool:
    """Whether `doc` (a /readyz answer) proves its `instance` and `generation` for this
    `nonce` with one of `keys` (key id → the drill's key, hex, as the drill got them)."""
    if not isinstance(doc, dict):
        return False
    instance, generation, signed = doc.get("instance"), doc.get("generation"), doc.get("proof")
    if not isinstance(instance, str) or not isinstance(generation, int) \
            or isinstance(generation, bool) or not isinstance(signed, dict):
        return False
    kid, mac = signed.get("kid"), signed.get("mac")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or not isinstance(mac, str) or not mac.isascii():
        return False
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        return False
    return hmac.compare_digest(_mac(raw, instance, generation, nonce).encode(), mac.encode())


def question(drill: str | None, nonce: str | None) -> tuple[str, str] | None:
    """A /readyz query's `drill` and `nonce` (None: neither asked); ValueError saying what
    is wrong with them."""
    if drill is None and nonce is None:
        return None
    if drill is None or nonce is None:
        raise ValueError("'drill' and 'nonce' come together (a drill's question)")
    if not DRILL.fullmatch(drill):
        raise ValueError("'drill' must be a drill id (1-64 letters, digits and '-')")
    if not NONCE.fullmatch(nonce):
        raise ValueError("'nonce' must be 16-64 letters, digits, '-' or '_'")
    return drill, nonce
